"""Official-format checkpoints made by the original code load strictly and reproduce its outputs."""

from __future__ import annotations

import argparse

import pytest
import torch

from moepot import load_pretrained

from .conftest import load_fixture, rel_err

TOL = 1e-5


@pytest.mark.parametrize("arch", ["moepot", "dpot"])
def test_eval_outputs_match_original(arch, fixtures_dir):
    case = load_fixture(f"{arch}_ref_a_case.pt")
    model = load_pretrained(fixtures_dir / f"{arch}_ref_a.pth")
    assert not model.training
    with torch.no_grad():
        out = model(case["input"])
    assert out.pred.shape == case["eval_pred"].shape
    assert rel_err(out.pred, case["eval_pred"]) < TOL
    assert rel_err(out.cls_logits, case["eval_cls"]) < TOL
    assert float(out.aux_loss) == 0.0


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_moepot_routing_matches_original(dispatch, fixtures_dir):
    case = load_fixture("moepot_ref_a_case.pt")
    model = load_pretrained(fixtures_dir / "moepot_ref_a.pth", expert_dispatch=dispatch)
    with torch.no_grad():
        out = model(case["input"])
    layers = model.moe_layers()
    assert len(layers) == case["eval_topk_indices"].shape[0]
    indices = torch.stack([layer.last_topk_indices for layer in layers])
    weights = torch.stack([layer.last_topk_weights for layer in layers])
    assert torch.equal(indices, case["eval_topk_indices"])
    assert rel_err(weights, case["eval_topk_weights"]) < TOL
    assert rel_err(out.pred, case["eval_pred"]) < TOL


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_moepot_first_training_forward_matches_original(dispatch, fixtures_dir):
    """A fresh model (temperature 2.0, router BatchNorm on batch statistics)."""
    case = load_fixture("moepot_ref_a_case.pt")
    model = load_pretrained(fixtures_dir / "moepot_ref_a.pth", expert_dispatch=dispatch)
    for layer in model.moe_layers():
        layer.temperature.fill_(2.0)
    model.train()
    out = model(case["input"])
    assert rel_err(out.pred, case["train_pred"]) < TOL
    assert rel_err(out.cls_logits, case["train_cls"]) < TOL
    assert rel_err(out.aux_loss, case["train_balance_loss_sum"]) < TOL
    for layer in model.moe_layers():
        assert float(layer.temperature) == pytest.approx(case["train_temperature_after"], rel=1e-6)


def test_module_prefix_is_stripped(tmp_path, fixtures_dir):
    """Checkpoints saved from DDP carry 'module.' on every key."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(fixtures_dir / "dpot_ref_a.pth", weights_only=True)
    ckpt["model"] = {f"module.{k}": v for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "ddp.pth")
    case = load_fixture("dpot_ref_a_case.pt")
    with torch.no_grad():
        out = load_pretrained(tmp_path / "ddp.pth")(case["input"])
    assert rel_err(out.pred, case["eval_pred"]) < TOL


def test_inferred_architecture_matches_checkpoint_args(fixtures_dir):
    with torch.serialization.safe_globals([argparse.Namespace]):
        args = torch.load(fixtures_dir / "moepot_ref_a.pth", weights_only=True)["args"]
    cfg = load_pretrained(fixtures_dir / "moepot_ref_a.pth").config
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth) == (
        args.res,
        args.patch_size,
        args.width,
        args.n_layers,
    )
    assert (cfg.n_blocks, cfg.mlp_ratio, cfg.modes, cfg.out_layer_dim) == (
        args.n_blocks,
        args.mlp_ratio,
        args.modes,
        args.out_layer_dim,
    )
    assert (cfg.in_timesteps, cfg.out_timesteps, cfg.n_cls) == (
        args.T_in,
        args.T_bundle,
        len(args.train_paths),
    )
    assert cfg.normalize == bool(args.normalize)


def test_a_file_without_args_modes_warns_and_modes_can_be_given(tmp_path, fixtures_dir, caplog):
    """A bare state dict (no args) cannot tell its Fourier modes: loading it used to assume 32
    in silence (other outputs); it warns, and load_pretrained(path, modes=N) gives the original's."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(fixtures_dir / "moepot_ref_a.pth", weights_only=True)
    torch.save(ckpt["model"], tmp_path / "bare.pth")
    case = load_fixture("moepot_ref_a_case.pt")
    with caplog.at_level("WARNING"):
        assert load_pretrained(tmp_path / "bare.pth").config.modes == 32
    assert "stores no args.modes" in caplog.text and "modes=N" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        model = load_pretrained(tmp_path / "bare.pth", modes=ckpt["args"].modes)
        load_pretrained(fixtures_dir / "moepot_ref_a.pth")
    assert "args.modes" not in caplog.text
    with torch.no_grad():
        assert rel_err(model(case["input"]).pred, case["eval_pred"]) < TOL


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_official_checkpoint_exports_with_moepot_save_pretrained(suffix, tmp_path, fixtures_dir):
    """The README's export: moepot.save_pretrained (the top-level twin of load_pretrained, which
    was missing) writes a file that reloads to the original's outputs."""
    import moepot

    case = load_fixture("moepot_ref_a_case.pt")
    path = moepot.save_pretrained(load_pretrained(fixtures_dir / "moepot_ref_a.pth"), tmp_path / f"ref{suffix}")
    model = load_pretrained(path)
    with torch.no_grad():
        out = model(case["input"])
    assert rel_err(out.pred, case["eval_pred"]) < TOL and rel_err(out.cls_logits, case["eval_cls"]) < TOL
    assert [float(layer.temperature) for layer in model.moe_layers()] == [0.5, 0.5]


def test_a_truncated_official_checkpoint_is_one_short_line(tmp_path, fixtures_dir):
    """The reason keeps torch's first sentence, not the paragraph of advice that follows it."""
    from moepot.errors import CheckpointError

    data = (fixtures_dir / "moepot_ref_a.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_pretrained(tmp_path / "cut.pth")
    message = str(info.value)
    assert "cut.pth is truncated or not a torch checkpoint" in message and "\n" not in message
    assert "internal miniz error" not in message and len(message) < 300  # torch's advice is cut
