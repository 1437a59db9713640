"""``python -m moepot`` (and ``torchrun -m moepot``) runs the command line."""

import sys

from moepot.cli import main

sys.exit(main())
