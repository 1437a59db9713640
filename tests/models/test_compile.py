"""``torch.compile`` (the training config's ``compile: true``, the GPU benchmark's compiled mode):
compiled training steps equal eager ones, MoE temperature decay included."""

from __future__ import annotations

import copy

import pytest
import torch

from moepot import build_model

BACKEND = "aot_eager"  # dynamo capture + AOTAutograd (where the buffer-mutation bug lived), no C++ build
TINY = dict(img_size=16, patch_size=4, in_channels=2, out_channels=2, in_timesteps=3, embed_dim=16, depth=1,
            n_blocks=2, modes=3, out_layer_dim=8, n_cls=3)  # fmt: skip


def _train(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for x, y in batches:
        out = model(x)
        loss = (out.pred - y).square().mean() + 0.1 * out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name,dispatch", [("dpot", "sparse"), ("moepot", "sparse"), ("moepot", "grouped")])
def test_compiled_training_steps_equal_eager_ones(name, dispatch):
    torch.manual_seed(0)
    eager = build_model(name, **TINY, expert_dispatch=dispatch).train()
    compiled_model = copy.deepcopy(eager)
    generator = torch.Generator().manual_seed(1)
    scale = torch.tensor([0.1, 1.0, 10.0, 3.0]).reshape(4, 1, 1, 1, 1)  # samples route differently
    batches = [(torch.randn(4, 16, 16, 3, 2, generator=generator) * scale,
                torch.randn(4, 16, 16, 1, 2, generator=generator)) for _ in range(3)]
    expected = _train(eager, batches)
    got = _train(torch.compile(compiled_model, backend=BACKEND), batches)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    for (key, a), b in zip(eager.state_dict().items(), compiled_model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=key)  # MoE temperatures included


def test_new_routing_patterns_do_not_recompile():
    """The sparse dispatch's expert counts change from batch to batch; it runs eagerly inside the
    compiled model, so steps routed differently reuse the graphs of the first steps."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = build_model("moepot", **{**TINY, "depth": 2}).train()
    compiled = torch.compile(model, backend=BACKEND)
    graphs, routes = [], set()
    for step in range(8):
        scale = torch.logspace(-2, 2, 6).reshape(6, 1, 1, 1, 1) * (step + 1)
        out = compiled(torch.randn(6, 16, 16, 3, 2) * scale)
        (out.pred.square().mean() + out.aux_loss).backward()
        routes.add(tuple(model.moe_layers()[0].last_topk_indices.flatten().tolist()))
        graphs.append(counters["stats"]["unique_graphs"])
    assert len(routes) > 4  # the routing did change
    assert graphs[-1] == graphs[1], graphs


@pytest.mark.parametrize("training", [False, True])
def test_grouped_dispatch_compiles_into_one_graph_under_bf16(training):
    """With ``expert_dispatch="grouped"`` every shape is static: under bfloat16 autocast (what
    grouped_mm's compile-time shape function accepts) the whole model is one graph, with no
    graph break and no host synchronisation, in eval and in training with the per-step
    temperature decay; and it computes what the eager model computes."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = build_model("moepot", **{**TINY, "depth": 2}, expert_dispatch="grouped", temperature_decay="step")
    model.train(training)
    compiled = torch.compile(model, backend=BACKEND)
    x = torch.randn(6, 16, 16, 3, 2) * torch.logspace(-2, 2, 6).reshape(6, 1, 1, 1, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(training):
        expected = model(x).pred
        got = compiled(x).pred
        if training:
            got.float().square().mean().backward()
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
