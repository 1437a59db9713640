from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import moepot

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # tiny_data helpers, shared with tests/eval
sys.path.insert(0, str(Path(__file__).parent))  # ddp_worker, imported by spawned processes

from tiny_data import write_decay_mixture  # noqa: E402  (found through the path above)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root holding the two-set decay mixture of ``tiny_data.write_decay_mixture``
    (one per test module; a module that needs other data defines its own ``data_root``)."""
    root = tmp_path_factory.mktemp("data")
    write_decay_mixture(root)
    return root



@pytest.fixture
def poison_forwards(monkeypatch):
    """``poison_forwards(calls, how)``: models built by ``moepot.build_model`` from then on make
    their training forwards numbered in ``calls`` (1-based) non-finite.

    ``how="input"`` feeds NaN into the network (its BatchNorm statistics see it);
    ``how="prediction"`` returns a NaN prediction (so a NaN loss); ``how="gradient"`` keeps the
    forward and the loss finite but makes the gradient flowing back from the prediction NaN.
    """
    build = moepot.build_model

    def poison(calls: set[int], how: str) -> None:
        count = {"n": 0}

        def poisoned_build(*args, **kwargs):
            model = build(*args, **kwargs)
            forward = model.forward

            def maybe_poisoned(x):
                if not model.training:
                    return forward(x)
                count["n"] += 1
                if count["n"] not in calls:
                    return forward(x)
                if how == "input":
                    return forward(x * float("nan"))
                out = forward(x)
                if how == "prediction":
                    return out._replace(pred=out.pred * float("nan"))
                pred = out.pred.clone()
                pred.register_hook(lambda grad: torch.full_like(grad, float("nan")))
                return out._replace(pred=pred)

            model.forward = maybe_poisoned
            return model

        monkeypatch.setattr(moepot, "build_model", poisoned_build)

    return poison
