"""The MoE-POT network: sparse == grouped == dense end to end, model-level MoE controls, grids."""

from __future__ import annotations

import pytest
import torch

from moepot import build_model

from .conftest import rel_err

TINY = dict(img_size=16, patch_size=4, in_channels=2, out_channels=2, in_timesteps=3, embed_dim=16,
            depth=2, n_blocks=2, modes=3, out_layer_dim=8, n_cls=3)  # fmt: skip


def varied_inputs(b: int, grid=(16, 16)) -> torch.Tensor:
    g = torch.Generator().manual_seed(b)
    scale = torch.logspace(-1, 1.5, b).reshape(b, 1, 1, 1, 1)
    return torch.randn(b, *grid, 3, 2, generator=g) * scale + torch.linspace(-2, 2, b).reshape(b, 1, 1, 1, 1)


@pytest.mark.parametrize("dispatch", ["sparse", "grouped"])
def test_sparse_and_dense_models_agree_in_outputs_and_gradients(dispatch):
    torch.manual_seed(0)
    sparse = build_model("moepot", **TINY, expert_dispatch=dispatch)
    dense = build_model("moepot", **TINY, expert_dispatch="dense")
    dense.load_state_dict(sparse.state_dict())
    x = varied_inputs(6)
    outs = []
    for model in (sparse, dense):
        model.train()
        out = model(x)
        (out.pred.square().mean() + out.cls_logits.sum() + out.aux_loss).backward()
        outs.append((out, {n: p.grad for n, p in model.named_parameters()}))
    (o_s, g_s), (o_d, g_d) = outs
    assert rel_err(o_s.pred, o_d.pred) < 1e-5
    assert rel_err(o_s.aux_loss, o_d.aux_loss) < 1e-5
    scale = max(float(g.abs().max()) for g in g_d.values())
    for name, grad in g_d.items():
        if grad.abs().max() > 0:  # atol: rounding-noise gradients (bias before a BatchNorm)
            assert torch.allclose(g_s[name], grad, rtol=1e-4, atol=1e-6 * scale), name
        else:
            assert g_s[name].abs().max() == 0, name
    routes = [tuple(layer.last_topk_indices[:, 0].tolist()) for layer in sparse.moe_layers()]
    assert any(len(set(r)) > 1 for r in routes), "the varied batch should use several routes"


def test_aux_loss_sums_layers_in_training_and_is_zero_in_eval():
    torch.manual_seed(0)
    model = build_model("moepot", **TINY)
    x = varied_inputs(4)
    model.train()
    out = model(x)
    assert out.aux_loss > 0
    model.eval()
    assert float(model(x).aux_loss) == 0.0


def test_model_level_finetune_and_step_temperature():
    model = build_model("moepot", **TINY, temperature_decay="step")
    model.train()
    model(varied_inputs(3))
    assert all(float(layer.temperature) == 2.0 for layer in model.moe_layers())
    model.step_temperature()
    assert all(abs(float(layer.temperature) - 1.98) < 1e-6 for layer in model.moe_layers())
    model.set_finetune(True)
    model.train()
    out = model(varied_inputs(1))  # a batch of one, in training mode
    assert float(out.aux_loss) == 0.0
    for layer in model.moe_layers():
        assert float(layer.temperature) == 0.5
        assert not layer.gating.training
        assert not any(p.requires_grad for p in layer.gating.parameters())
    dpot = build_model("dpot", **TINY)
    assert dpot.moe_layers() == []
    dpot.set_finetune(True)
    dpot.step_temperature()  # no-ops


def test_rectangular_grid():
    model = build_model("moepot", **{**TINY, "img_size": (24, 16)}, out_timesteps=2)
    out = model(varied_inputs(2, grid=(24, 16)))
    assert out.pred.shape == (2, 24, 16, 2, 2)
    assert model.pos_embed.shape == (1, 16, 6, 4)


def test_inference_temperature_is_the_floor_inside_and_restored_after():
    """Every layer at 0.5 inside the block (routing as a model whose temperatures are 0.5); each
    layer's own temperature back afterwards, also when the block raises."""
    torch.manual_seed(0)
    model = build_model("moepot", **TINY).eval()
    reference = build_model("moepot", **TINY).eval()
    reference.load_state_dict(model.state_dict())
    for layer in reference.moe_layers():
        layer.temperature.fill_(0.5)
    own = [1.25, 0.75]
    for layer, temperature in zip(model.moe_layers(), own):
        layer.temperature.fill_(temperature)
    x = varied_inputs(3)
    with torch.no_grad(), model.inference_temperature():
        assert [float(layer.temperature) for layer in model.moe_layers()] == [0.5, 0.5]
        assert torch.equal(model(x).pred, reference(x).pred)
    assert [float(layer.temperature) for layer in model.moe_layers()] == own
    with pytest.raises(RuntimeError, match="inside"), model.inference_temperature():
        raise RuntimeError("inside")
    assert [float(layer.temperature) for layer in model.moe_layers()] == own


def test_step_temperature_does_not_decay_when_the_forward_does():
    """temperature_decay="forward" (the original): x0.99 per training forward only, so the
    model-level step_temperature() of the training loop changes nothing."""
    model = build_model("moepot", **TINY).train()
    model(varied_inputs(2))
    model.step_temperature()
    assert all(float(layer.temperature) == pytest.approx(1.98) for layer in model.moe_layers())
