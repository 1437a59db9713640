from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # tiny_data helpers, shared with tests/eval
sys.path.insert(0, str(Path(__file__).parent))  # ddp_worker, imported by spawned processes

