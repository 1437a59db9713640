"""The benchmarks' second implementation (the original's formulation) against our models.

``benchmarks/models_speed.py`` times our forward against this one; these tests make sure the
two compute the same function (values, routing, balance loss, temperature and gradients), so
the timing compares equal work done two ways.
"""

from __future__ import annotations

import pytest
import torch
from benchmarks.original_formulation import original_forward

from moepot import build_model

from ..models.conftest import rel_err

TINY = dict(img_size=16, patch_size=4, in_channels=3, out_channels=3, in_timesteps=4, embed_dim=32,
            depth=2, n_blocks=4, modes=3, out_layer_dim=8, n_cls=3)  # fmt: skip


def make_pair(name: str, **overrides) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ours = build_model(name, **TINY, **overrides)
    with torch.no_grad():  # every parameter and router statistic away from its initial value
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for module in ours.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    reference = build_model(name, **TINY, **overrides)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def varied_batch(b: int = 4) -> torch.Tensor:
    """Samples of very different scales, so they route to different experts."""
    scales = torch.logspace(-1, 1, b).reshape(b, 1, 1, 1, 1)
    return torch.randn(b, 16, 16, 4, 3, generator=torch.Generator().manual_seed(1)) * scales


@pytest.mark.parametrize("name", ["moepot", "dpot"])
@pytest.mark.parametrize("options", [{}, {"normalize": True, "time_agg": "mlp"}])
def test_eval_forward_matches(name, options):
    ours, reference = make_pair(name, **options)
    x = varied_batch()
    with torch.no_grad():
        a, b = ours.eval()(x), original_forward(reference.eval(), x)
    assert rel_err(a.pred, b.pred) < 1e-5
    assert rel_err(a.cls_logits, b.cls_logits) < 1e-5
    if name == "moepot":
        assert float(a.aux_loss) == float(b.aux_loss) == 0.0


@pytest.mark.parametrize("name", ["moepot", "dpot"])
def test_training_forward_and_gradients_match(name):
    """Training mode: the router's BatchNorm on batch statistics, the balance loss, the
    temperature decay, and the gradient of every parameter."""
    ours, reference = make_pair(name, normalize=True)
    x = varied_batch()
    y = torch.randn(4, 16, 16, 1, 3, generator=torch.Generator().manual_seed(2))
    outputs = []
    for model, forward in ((ours, ours.forward), (reference, lambda x: original_forward(reference, x))):
        model.train()
        out = forward(x)
        ((out.pred - y).square().mean() + 0.1 * out.aux_loss + out.cls_logits.square().mean()).backward()
        outputs.append(out)
    a, b = outputs
    assert rel_err(a.pred, b.pred) < 1e-5
    if name == "moepot":
        assert a.aux_loss.item() > 0
        assert rel_err(a.aux_loss, b.aux_loss) < 1e-5
        for la, lb in zip(ours.moe_layers(), reference.moe_layers()):
            assert float(la.temperature) == pytest.approx(2.0 * 0.99)
            assert float(la.temperature) == float(lb.temperature)
    grads_b = dict(reference.named_parameters())
    for key, p in ours.named_parameters():
        q = grads_b[key]
        assert (p.grad is None) == (q.grad is None), key
        if p.grad is not None:
            # the router's biases right before a BatchNorm have a zero gradient (the norm takes
            # the batch mean out): both sides hold rounding noise there, hence the absolute floor
            assert (p.grad - q.grad).norm() <= 1e-4 * q.grad.norm() + 1e-7, key
