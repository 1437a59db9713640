"""Suite-wide test settings.

Tests run two at a time (``pytest -n 2``) on 2 cores: one torch thread per test process avoids
oversubscription, which otherwise slows tiny models by orders of magnitude.
"""

import pytest
import torch

torch.set_num_threads(1)


class _CodeRunningPayload:
    """Unpickling this creates a file: the kind of code a checkpoint must never run."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture
def code_running_payload():
    """``code_running_payload(target)``: an object that, pickled into a file, creates the file
    ``target`` when that file is unpickled (the pickle names only ``builtins.open``)."""
    return lambda target: _CodeRunningPayload(str(target))
