"""The MoE layer: sparse and grouped dispatch against the dense reference, routing controls,
balance loss."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from moepot.models.moe import MoELayer, balance_loss

from .conftest import rel_err

D, HM = 32, 32


def make_pair(seed: int = 0, dispatch: str = "sparse", **kwargs) -> tuple[MoELayer, MoELayer]:
    """A layer with ``dispatch`` and a dense one with the same weights."""
    torch.manual_seed(seed)
    sparse = MoELayer(D, HM, dispatch=dispatch, **kwargs)
    dense = MoELayer(D, HM, dispatch="dense", **kwargs)
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def varied_batch(b: int, seed: int = 0) -> torch.Tensor:
    """Samples with very different means and scales, so their routes differ. [B, D, 6, 5]."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-2, 2, b).reshape(b, 1, 1, 1)
    shift = torch.linspace(-3, 3, b).reshape(b, 1, 1, 1)
    return torch.randn(b, D, 6, 5, generator=g) * scale + shift


def grads(layer: MoELayer) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in layer.named_parameters()}


@pytest.mark.parametrize("dispatch", ["sparse", "grouped"])
@pytest.mark.parametrize("b", [1, 2, 3, 8, 13])
@pytest.mark.parametrize("training", [True, False])
def test_sparse_equals_dense_outputs_and_gradients(b, training, dispatch):
    sparse, dense = make_pair(seed=b, dispatch=dispatch)
    x = varied_batch(b, seed=b)
    results = []
    for layer in (sparse, dense):
        layer.train(training)
        inp = x.clone().requires_grad_(True)
        out, aux = layer(inp)
        target = torch.sin(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
        ((out * target).sum() + aux).backward()
        results.append((out, aux, inp.grad, grads(layer), layer.last_topk_indices))
    (o_s, a_s, gx_s, g_s, i_s), (o_d, a_d, gx_d, g_d, i_d) = results
    assert torch.equal(i_s, i_d)
    assert rel_err(o_s, o_d) < 1e-5
    assert torch.allclose(a_s, a_d, rtol=1e-5, atol=1e-7)
    assert rel_err(gx_s, gx_d) < 1e-5
    scale = max(float(g.abs().max()) for g in g_d.values())
    for name in g_d:
        assert g_s[name] is not None, f"sparse path left {name} without a gradient"
        if g_d[name].abs().max() == 0:
            assert g_s[name].abs().max() == 0, name
        else:  # atol: e.g. the bias before a training-mode BatchNorm has a rounding-noise gradient
            assert torch.allclose(g_s[name], g_d[name], rtol=1e-4, atol=1e-6 * scale), name


@pytest.mark.parametrize("dispatch", ["sparse", "grouped"])
def test_unchosen_experts_get_zero_gradient_and_stay_in_graph(dispatch):
    """With 2 samples x 4 slots at most 8 of 16 experts run; the rest get exact zeros (for DDP)."""
    sparse, _ = make_pair(dispatch=dispatch)
    sparse.train()
    out, aux = sparse(varied_batch(2))
    (out.square().sum() + aux).backward()
    chosen = set(sparse.last_topk_indices.flatten().tolist())
    assert len(chosen) < sparse.num_experts
    for e, expert in enumerate(sparse.experts):
        for p in expert.parameters():
            assert p.grad is not None
            assert (p.grad.abs().sum() > 0) == (e in chosen), e


@pytest.mark.parametrize("dispatch", ["sparse", "grouped"])
def test_forward_with_no_grad_skips_unused_experts_term(dispatch):
    sparse, dense = make_pair(dispatch=dispatch)
    sparse.eval()
    dense.eval()
    x = varied_batch(3)
    with torch.no_grad():
        assert rel_err(sparse(x)[0], dense(x)[0]) < 1e-5


def test_sparse_dispatch_does_only_the_chosen_experts_matmuls():
    """Counted matmul FLOPs of an eval forward equal the architecture's count: the feature
    extractor, the router, the shared experts and, per sample, only its k routed experts (plus
    their weighted sum); the dense reference runs all E routed experts on every sample."""
    from torch.utils.flop_counter import FlopCounterMode

    sparse, dense = make_pair()
    x = varied_batch(8)
    b, p = x.shape[0], x.shape[2] * x.shape[3]
    e, k, attention = sparse.num_experts, sparse.top_k, 2 * HM // 16
    trunk = 2 * b * p * D * HM + 2 * b * p * HM * 2 * D  # feature extractor, 2 shared experts
    router = 2 * b * (HM * 2 * HM + 2 * (2 * HM * attention) + 2 * HM * HM + HM * e)
    expected = {
        "sparse": trunk + router + 2 * b * k * p * HM * D + 2 * b * k * p * D,
        "dense": trunk + router + 2 * b * e * p * HM * D,
    }
    for name, layer in (("sparse", sparse), ("dense", dense)):
        layer.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            layer(x)
        assert counter.get_total_flops() == expected[name], name


def test_balance_loss_against_a_loop():
    g = torch.Generator().manual_seed(0)
    indices = torch.stack([torch.randperm(16, generator=g)[:4] for _ in range(5)])
    weights = torch.softmax(torch.randn(5, 4, generator=g), dim=1)
    importance = [0.0] * 16
    for b in range(5):
        for k in range(4):
            importance[int(indices[b, k])] += float(weights[b, k])
    ideal = sum(importance) / 16
    expected = sum((v - ideal) ** 2 for v in importance) / 16
    assert float(balance_loss(indices, weights, 16)) == pytest.approx(expected, rel=1e-5)
    # perfectly balanced routing costs nothing
    balanced = torch.arange(16).reshape(4, 4)
    assert float(balance_loss(balanced, torch.full((4, 4), 0.25), 16)) == pytest.approx(0.0, abs=1e-12)


def test_top_k_weights_are_softmax_over_scores_divided_by_temperature():
    layer, _ = make_pair()
    layer.eval()
    layer.temperature.fill_(0.7)
    x = varied_batch(4)
    layer(x)
    with torch.no_grad():
        features = torch.nn.functional.gelu(layer.feature_extractor.conv[0](x))  # the original's conv
        scores = layer.gating(features.mean(dim=(2, 3), keepdim=True)).flatten(1)
    top = scores.gather(1, layer.last_topk_indices)
    assert torch.all(top[:, :-1] >= top[:, 1:])
    assert torch.allclose(layer.last_topk_weights, torch.softmax(top / 0.7, dim=1), atol=1e-6)


def test_temperature_decays_per_training_forward_to_the_floor():
    layer, _ = make_pair()
    x = varied_batch(2)[:, :, :2, :2]
    layer.train()
    expected = 2.0
    for _ in range(150):
        layer(x)
        expected = max(expected * 0.99, 0.5)
        assert float(layer.temperature) == pytest.approx(expected, rel=1e-5)
    assert float(layer.temperature) == pytest.approx(0.5)
    layer.eval()
    layer.temperature.fill_(1.0)
    layer(x)
    assert float(layer.temperature) == 1.0  # eval never changes it


def test_step_decay_only_on_step_temperature():
    layer, _ = make_pair(temperature_decay="step")
    layer.train()
    layer(varied_batch(4))
    assert float(layer.temperature) == 2.0
    layer.step_temperature()
    assert float(layer.temperature) == pytest.approx(1.98)


def test_finetune_freezes_router_and_features():
    layer, _ = make_pair()
    layer.set_finetune(True)
    layer.train()
    assert not layer.gating.training and not layer.feature_extractor.training
    assert layer.experts.training
    frozen = list(layer.gating.parameters()) + list(layer.feature_extractor.parameters())
    assert all(not p.requires_grad for p in frozen)
    bn = layer.gating.gate[1]
    running = bn.running_mean.clone()
    out, aux = layer(varied_batch(5))
    assert float(aux) == 0.0
    assert float(layer.temperature) == 0.5
    assert torch.equal(bn.running_mean, running)
    out.sum().backward()
    assert all(p.grad is None for p in frozen)
    assert layer.shared_experts[0].conv[0].weight.grad is not None
    layer.set_finetune(False)
    layer.train()
    assert layer.gating.training and all(p.requires_grad for p in frozen)


def test_training_batch_of_one_uses_running_statistics():
    layer, _ = make_pair()
    bn = layer.gating.gate[1]
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    running = bn.running_mean.clone()
    x = varied_batch(1)
    layer.temperature.fill_(0.5)  # the floor: no decay between the two forwards
    layer.eval()
    ref_idx = layer(x)[0], layer.last_topk_indices.clone(), layer.last_topk_weights.clone()
    layer.train()
    out, aux = layer(x)  # must not raise
    assert torch.equal(layer.last_topk_indices, ref_idx[1])
    assert torch.allclose(layer.last_topk_weights, ref_idx[2])
    assert torch.equal(bn.running_mean, running)
    assert layer.gating.training  # mode restored
    assert torch.isfinite(aux)


def test_a_training_batch_of_one_leaves_no_trace_on_the_router():
    """After the B=1 forward (on running statistics) the router's BatchNorms are back on batch
    statistics: a following B=4 training forward, and the statistics it updates, equal those of a
    copy that never saw the batch of one."""
    layer, _ = make_pair()
    layer.temperature.fill_(0.5)  # the floor: no decay, so the temperatures stay equal
    twin = copy.deepcopy(layer)
    layer.train()
    twin.train()
    layer(varied_batch(1))
    norms = [m for m in layer.gating.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and all(m.training for m in norms)
    x = varied_batch(4, seed=1)
    out, aux = layer(x)
    ref_out, ref_aux = twin(x)
    assert torch.equal(layer.last_topk_indices, twin.last_topk_indices)
    assert rel_err(out, ref_out) < 1e-6
    assert torch.allclose(aux, ref_aux, rtol=1e-5, atol=1e-9)
    ref_state = twin.state_dict()
    for key, value in layer.state_dict().items():
        assert torch.allclose(value.double(), ref_state[key].double(), rtol=1e-6, atol=1e-7), key


@pytest.mark.parametrize("num_shared", [0, 1, 3])
def test_fused_shared_experts_equal_the_mean_of_each_expert(num_shared):
    """The shared experts run as one concatenated matmul; compare with each expert on its own."""
    sparse, dense = make_pair(num_shared=num_shared)
    features = torch.randn(3, 7, HM, generator=torch.Generator().manual_seed(4))
    fused = sparse._shared(features)
    if num_shared == 0:
        assert fused is None
    else:
        separate = torch.stack([expert(features) for expert in sparse.shared_experts]).mean(dim=0)
        assert rel_err(fused, separate) < 1e-6
    x = varied_batch(4)
    grouped, _ = make_pair(num_shared=num_shared, dispatch="grouped")
    for layer in (sparse, dense, grouped):
        layer.eval()
    with torch.no_grad():
        assert rel_err(sparse(x)[0], dense(x)[0]) < 1e-5
        assert rel_err(grouped(x)[0], dense(x)[0]) < 1e-5


def test_channel_attention_on_a_one_by_one_map_equals_both_pools():
    """The router's shortcut (both pools are z on a 1x1 map) against the pooled formula."""
    from moepot.models.moe import ChannelAttention

    torch.manual_seed(0)
    attention = ChannelAttention(32)
    z = torch.randn(5, 32, 1, 1)
    expected = z * torch.sigmoid(
        attention.fc(z.mean(dim=(2, 3), keepdim=True)) + attention.fc(z.amax(dim=(2, 3), keepdim=True))
    )
    assert torch.allclose(attention(z), expected, rtol=1e-6, atol=1e-7)


def test_grouped_dispatch_is_refused_clearly_where_it_cannot_run(monkeypatch):
    from moepot import build_model
    from moepot.errors import ConfigError

    with pytest.raises(ConfigError, match="multiples of 8"):
        MoELayer(32, 12, dispatch="grouped")
    monkeypatch.delattr(torch.nn.functional, "grouped_mm")
    with pytest.raises(ConfigError, match="grouped_mm.*use expert_dispatch='sparse'"):
        build_model("moepot", img_size=16, patch_size=4, embed_dim=32, depth=1, n_blocks=2, modes=3,
                    expert_dispatch="grouped")  # fmt: skip


@pytest.mark.parametrize("decay", ["forward", "step"])
def test_a_temperature_step_between_forward_and_backward_is_harmless(decay):
    """The forward routes with a copy of the temperature, so decaying the buffer before the
    backward (a loop that steps the temperature early) neither breaks nor changes the gradient."""
    h = varied_batch(4)
    grads = []
    for early_step in (False, True):
        torch.manual_seed(0)
        layer = MoELayer(D, HM, temperature_decay=decay).train()
        out, aux = layer(h)
        if early_step:
            layer.step_temperature()
        (out.square().mean() + aux).backward()
        grads.append(layer.gating.gate[7].weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
