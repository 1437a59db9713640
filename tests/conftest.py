"""Suite-wide test settings.

Tests run two at a time (``pytest -n 2``) on 2 cores: one torch thread per test process avoids
oversubscription, which otherwise slows tiny models by orders of magnitude.
"""

import torch

torch.set_num_threads(1)
