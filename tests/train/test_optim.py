"""Optimizers: the original's choices, trainable parameters only, Lamb's layer-wise trust ratio."""

from __future__ import annotations

import pytest
import torch

from moepot.errors import ConfigError
from moepot.train.optim import build_optimizer


def test_frozen_parameters_are_not_optimized():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    optimizer = build_optimizer(model.parameters(), name="adam", lr=1e-3)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model[1].parameters()}
    assert optimizer.param_groups[0]["weight_decay"] == 1e-6  # the original's Adam decay


def test_adam_steps_follow_the_textbook_update_with_l2_decay():
    """Three steps of our (fused, on CPU) Adam against the update written out by hand:
    g <- g + wd w; m, v moving averages; w <- w - lr m_hat / (sqrt(v_hat) + eps)."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(5, 3))
    optimizer = build_optimizer([param], name="adam", lr=0.01, betas=(0.9, 0.8), weight_decay=0.1)
    assert optimizer.defaults["fused"]
    w = param.detach().clone().double()
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for step in range(1, 4):
        grad = torch.randn(5, 3)
        param.grad = grad.clone()
        optimizer.step()
        g = grad.double() + 0.1 * w
        m = 0.9 * m + 0.1 * g
        v = 0.8 * v + 0.2 * g * g
        w = w - 0.01 * (m / (1 - 0.9**step)) / ((v / (1 - 0.8**step)).sqrt() + 1e-8)
        torch.testing.assert_close(param.detach().double(), w, rtol=1e-5, atol=1e-6)


def test_adamw_decay_is_decoupled():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer([param], name="adamw", lr=0.1, weight_decay=0.5)
    param.grad = torch.zeros(3)
    optimizer.step()  # zero gradient: only the decoupled decay moves the weights
    torch.testing.assert_close(param.detach(), torch.full((3,), 1 - 0.1 * 0.5))


def test_lamb_update_scales_with_the_layer_norm():
    """LAMB's trust ratio ||w|| / ||update||: a layer 4x larger takes a 4x larger step (below the
    weight-norm clamp of 10)."""
    steps = []
    for scale in (0.5, 2.0):
        param = torch.nn.Parameter(torch.full((4,), scale))
        optimizer = build_optimizer([param], name="lamb", lr=0.01, weight_decay=0.0)
        param.grad = torch.tensor([1.0, -2.0, 0.5, 3.0])
        before = param.detach().clone()
        optimizer.step()
        steps.append((param.detach() - before).norm().item())
    assert steps[1] == pytest.approx(4 * steps[0], rel=1e-4)


def test_errors():
    with pytest.raises(ConfigError, match="unknown optimizer"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], name="sgd", lr=1)
    frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    with pytest.raises(ConfigError, match="no trainable parameter"):
        build_optimizer([frozen], name="adam", lr=1)


@pytest.mark.parametrize(("name", "decay"), [("adam", 1e-6), ("adamw", 1e-6), ("lamb", 1e-4)])
def test_default_weight_decay_is_the_originals(name, decay):
    """DPOT's scripts: Adam 1e-6 (pre-training), AdamW 1e-6 (fine-tuning), Lamb 1e-4."""
    if name == "lamb":
        pytest.importorskip("pytorch_optimizer")
    from moepot.train.config import TrainConfig

    config = TrainConfig.from_dict({"opt": name})
    assert config.effective_weight_decay == decay
    optimizer = build_optimizer([torch.nn.Parameter(torch.ones(2))], name=name, lr=1e-3)
    assert optimizer.param_groups[0]["weight_decay"] == decay
