"""Presets, configs, parameter counts and checkpoint files (ours and refused ones)."""

from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

from moepot import build_model, load_pretrained
from moepot.errors import CheckpointError, ConfigError
from moepot.models.config import ModelConfig
from moepot.models.registry import PRESETS, describe, describe_source, resolve_config, save_pretrained

from .conftest import rel_err

TINY = dict(img_size=16, patch_size=4, in_channels=2, out_channels=2, in_timesteps=3, embed_dim=16,
            depth=2, n_blocks=2, modes=3, out_layer_dim=8, n_cls=3)  # fmt: skip

# Published sizes (architecture.md / the papers): millions of (total, activated) parameters.
PUBLISHED = {
    "moepot-ti": (30.2, 17.6),
    "moepot-s": (166.3, 90.8),
    "moepot-m": (489.6, 288.2),
    "dpot-ti": (7.5, 7.5),
    "dpot-s": (30.8, 30.8),
    "dpot-m": (122.1, 122.1),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts_match_the_papers(name):
    info = describe(resolve_config(name))
    total, active = PUBLISHED[name]
    assert round(info["total_params"] / 1e6, 1) == total
    assert round(info["activated_params"] / 1e6, 1) == active


def test_large_dpot_presets_are_near_published_sizes():
    assert describe(resolve_config("dpot-l"))["total_params"] == pytest.approx(509e6, rel=0.03)
    assert describe(resolve_config("dpot-h"))["total_params"] == pytest.approx(1.03e9, rel=0.03)


def test_every_preset_builds_and_rebuilds_from_its_config():
    for name in PRESETS:
        cfg = resolve_config(name)
        assert cfg.name == name
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        assert resolve_config(cfg.name, **cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", ["moepot-ti", "dpot-ti", "fno"])
def test_overrides_and_rebuild(name):
    model = build_model(name, **TINY)
    again = build_model(model.config.name, **model.config.to_dict())
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 16, 16, 3, 2)
    model.eval()
    again.eval()
    with torch.no_grad():
        assert torch.equal(model(x).pred, again(x).pred)


def test_bad_names_and_options_are_clear_errors():
    with pytest.raises(ConfigError, match="moepot-ti"):
        build_model("moepot-xl")
    with pytest.raises(ConfigError, match="expert_dispatch"):
        build_model("moepot-ti", expert_dispatch="fast")
    with pytest.raises(ConfigError, match="n_blocks"):
        build_model("dpot-ti", n_blocks=3)
    with pytest.raises(ConfigError, match="unknown model config key"):
        build_model("dpot-ti", width=3)


def test_wrong_input_shape_is_a_clear_error():
    model = build_model("moepot", **TINY)
    with pytest.raises(ConfigError, match=r"T_in=3"):
        model(torch.randn(1, 16, 16, 4, 2))
    with pytest.raises(ConfigError, match=r"C=2\]; got shape \(1, 16, 16, 3, 3\)"):
        model(torch.randn(1, 16, 16, 3, 3))
    with pytest.raises(ConfigError, match=r"\[B, 16, 16, .*got shape \(1, 16, 12, 3, 2\)"):
        model(torch.randn(1, 16, 12, 3, 2))


@pytest.mark.parametrize("name", ["moepot", "dpot", "fno"])
def test_wrong_input_type_dtype_or_device_is_a_clear_error(name):
    """float64 data (numpy / HDF5) or a numpy array used to fail deep inside a layer
    ('expected m1 and m2 to have the same dtype'; a linspace TypeError): one line naming the fix."""
    model = build_model(name, **{**({} if name == "fno" else TINY), "in_channels": 2, "out_channels": 2,
                                 "in_timesteps": 3})
    x = torch.randn(1, 16, 16, 3, 2)
    with pytest.raises(ConfigError, match=r"torch.float32 weights, its input is torch.float64; .*x.to\(torch.float32\)"):
        model(x.double())
    with pytest.raises(ConfigError, match=r"must be a torch.Tensor .*got a ndarray"):
        model(x.numpy())
    with pytest.raises(ConfigError, match=r"is on cpu, its input on meta"):
        model(x.to("meta"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts by itself
        assert model(x.bfloat16()).pred.shape == (1, 16, 16, 1, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_and_load_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    model = build_model("moepot", **{**TINY, "img_size": (16, 12)}, normalize=True)
    model.train()
    model(torch.randn(3, 16, 12, 3, 2))  # moves BatchNorm statistics and the temperature
    path = save_pretrained(model, tmp_path / f"ours{suffix}", extra={"step": 7})
    loaded = load_pretrained(path)
    assert loaded.config == model.config
    assert not loaded.training
    for key, value in model.state_dict().items():
        if key.endswith("temperature"):
            assert float(loaded.state_dict()[key]) == 0.5  # inference temperature
        else:
            assert torch.equal(loaded.state_dict()[key], value), key
    model.eval()
    for layer in model.moe_layers():
        layer.temperature.fill_(0.5)
    x = torch.randn(2, 16, 12, 3, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x).pred, model(x).pred)
    dense = load_pretrained(path, expert_dispatch="dense")
    with torch.no_grad():
        assert rel_err(dense(x).pred, model(x).pred) < 1e-5


def test_a_grouped_checkpoint_loads_sparse_where_torch_has_no_grouped_mm(tmp_path, monkeypatch, caplog):
    """The dispatch is how, not what: a model saved with ``grouped`` loads with ``sparse`` (same
    outputs) on a torch without grouped_mm, saying so; asking for ``grouped`` there is an error."""
    from moepot.train.checkpoint import save_checkpoint
    from moepot.train.loop import load_model_for_eval

    torch.manual_seed(0)
    model = build_model("moepot", **{**TINY, "embed_dim": 32}, expert_dispatch="grouped").eval()
    x = torch.randn(3, 16, 16, 3, 2) * torch.tensor([0.1, 1.0, 10.0]).reshape(3, 1, 1, 1, 1)
    export = save_pretrained(model, tmp_path / "grouped.safetensors")
    train_file = tmp_path / "train.pt"
    save_checkpoint(train_file, {"model": model.state_dict(), "model_config": model.config.to_dict(), "step": 1})
    loaders = (lambda: load_pretrained(export), lambda: load_model_for_eval(train_file))
    expected = [load()(x).pred for load in loaders]  # grouped, as saved
    monkeypatch.delattr(torch.nn.functional, "grouped_mm")
    for load, want in zip(loaders, expected):
        loaded = load()
        assert {layer.dispatch for layer in loaded.moe_layers()} == {"sparse"}
        assert rel_err(loaded(x).pred, want) < 1e-6
    assert "lacks; running the experts with 'sparse'" in caplog.text and "grouped.safetensors" in caplog.text
    assert describe_source(str(export))["config"]["expert_dispatch"] == "sparse"  # `moepot info` too
    with pytest.raises(ConfigError, match="grouped_mm"):
        load_pretrained(export, expert_dispatch="grouped")


def test_training_checkpoint_layout_loads(tmp_path):
    """Training checkpoints hold {'model', 'model_config', ...} (moepot.train.checkpoint)."""
    model = build_model("dpot", **TINY)
    torch.save({"format": "moepot-train-checkpoint", "model": model.state_dict(),
                "model_config": model.config.to_dict(), "step": 3}, tmp_path / "train.pt")  # fmt: skip
    assert load_pretrained(tmp_path / "train.pt").config == model.config


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_would_run_code_is_refused(tmp_path, code_running_payload):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"args": argparse.Namespace(modes=4), "model": {}, "x": code_running_payload(target)}, path)
    assert not target.exists()
    with pytest.raises(CheckpointError, match="weights_only"):
        load_pretrained(path)
    assert not target.exists()
    # the same payload with a plain pickle (legacy format) is refused too
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps({"model": code_running_payload(target)}))
    with pytest.raises(CheckpointError):
        load_pretrained(legacy)
    assert not target.exists()


class _BlockedModuleCall:
    """Pickles as a call of ``os.getcwd`` (harmless if it ran): torch blocks the whole module."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", ["builtins.open", "os.getcwd"])
def test_a_refused_pickle_names_what_it_asked_for_and_never_advises_weights_only_false(
    tmp_path, code_running_payload, payload
):
    """The reason given is the global the pickle needs, not torch's boilerplate (which suggests
    re-running with ``weights_only=False``)."""
    path = tmp_path / "evil.pth"
    obj = code_running_payload(tmp_path / "pwned.txt") if payload == "builtins.open" else _BlockedModuleCall()
    torch.save({"model": {}, "x": obj}, path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(path)
    message = str(info.value)
    assert "\n" not in message
    assert payload.split(".")[1] in message.split("Reason:")[1]
    assert "weights_only` set to `False`" not in message and "Please file an issue" not in message


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_plain_pickle_is_refused_with_the_global_it_asked_for_whatever_its_first_byte(tmp_path, protocol):
    """Protocol 1 does not start with b"\\x80" (here b"}q"): the refusal and the global it asked for
    still come first, not "a YAML config or another text file?"."""
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"model": _BlockedModuleCall()}, protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        load_pretrained(path)
    message = str(info.value)
    assert message.startswith(f"refusing to load {path}") and "getcwd" in message.split("Reason:")[1]
    assert "text file" not in message and "\n" not in message


def test_a_text_file_given_as_checkpoint_is_called_not_a_checkpoint(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("name: tiny\nwidth: 32\n")
    with pytest.raises(CheckpointError, match=r"config\.yaml is not a torch checkpoint or safetensors file") as info:
        load_pretrained(path)
    assert "refusing" not in str(info.value)


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    model = build_model("dpot", **TINY)
    state = model.state_dict()
    state["extra.weight"] = torch.zeros(1)
    state["cls_head.4.weight"] = torch.zeros(5, 16)
    del state["blocks.1.norm1.bias"]
    torch.save({"model": state, "model_config": model.config.to_dict()}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path / "bad.pt")
    message = str(err.value)
    assert "missing keys: blocks.1.norm1.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "cls_head.4.weight (5, 16)" in message


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "nope.pth")
    (tmp_path / "run").mkdir()  # e.g. moepot finetune --checkpoint runs/x: it exists, as a directory
    with pytest.raises(CheckpointError, match=r"run is a directory but not a run directory with a checkpoint"):
        load_pretrained(tmp_path / "run")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_pretrained(tmp_path / "junk.pth")
    torch.save({"model": {"foo": torch.zeros(2)}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="patch_embed.proj.0.weight"):
        load_pretrained(tmp_path / "foreign.pth")


def test_official_layout_of_a_preset_is_recognised(tmp_path):
    """A state dict with the shapes of DPOT-Ti, in the official file layout, is named dpot-ti;
    other shapes keep the family name."""
    for grid, expected_name in ((128, "dpot-ti"), (64, "dpot")):
        model = build_model("dpot-ti", img_size=grid)
        ckpt = {"args": argparse.Namespace(modes=32, act="gelu"), "model": model.state_dict()}
        torch.save(ckpt, tmp_path / "official.pth")
        config = load_pretrained(tmp_path / "official.pth").config
        assert config.name == expected_name
        assert {**config.to_dict(), "name": None} == {**model.config.to_dict(), "name": None}


@pytest.mark.parametrize(
    "name,options",
    [
        ("moepot", dict(img_size=(16, 12), patch_size=4, in_channels=3, out_channels=2, in_timesteps=4,
                        out_timesteps=2, embed_dim=16, depth=3, n_blocks=4, mlp_ratio=1.5, modes=3,
                        out_layer_dim=8, n_cls=5, act="tanh", time_agg="mlp", num_experts=6,
                        num_shared_experts=1)),
        ("dpot", dict(img_size=(12, 16), patch_size=2, in_channels=3, out_channels=3, in_timesteps=2,
                      out_timesteps=3, embed_dim=24, depth=1, n_blocks=3, mlp_ratio=2.0, modes=5,
                      out_layer_dim=4, n_cls=2, normalize=True, act="silu")),
    ],
)  # fmt: skip
def test_official_layout_architecture_round_trips_through_the_shapes(tmp_path, name, options):
    """A state dict in the official file layout (no temperature buffer; args with only modes and
    act) is read back as the architecture it was built with, every field distinct from the
    defaults and the fixtures' (rectangular grid, C_in != C_out, T_out > 1, mlp time aggregation,
    normalize, 6 experts, 1 shared), and gives the same predictions."""
    torch.manual_seed(0)
    model = build_model(name, **options).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".temperature")}
    args = argparse.Namespace(modes=options["modes"], act=options["act"])
    torch.save({"args": args, "model": state}, tmp_path / "official.pth")
    loaded = load_pretrained(tmp_path / "official.pth")
    assert {**loaded.config.to_dict(), "name": None} == {**model.config.to_dict(), "name": None}
    for layer in model.moe_layers():
        layer.temperature.fill_(0.5)
    x = torch.randn(2, *model.config.grid, options["in_timesteps"], options["in_channels"])
    with torch.no_grad():
        assert torch.equal(loaded(x).pred, model(x).pred)


def test_options_that_cannot_run_are_refused_at_build():
    for img_size in (0, -16, 16.0, "16", (16, 0), True):
        with pytest.raises(ConfigError, match="img_size"):
            build_model("dpot", **{**TINY, "img_size": img_size})
    with pytest.raises(ConfigError, match="normalize=True needs out_channels == in_channels"):
        build_model("moepot", **{**TINY, "out_channels": 3}, normalize=True)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "module._orig_mod.", "_orig_mod.module."])
def test_an_export_with_wrapper_prefixes_loads_from_either_format(tmp_path, prefix):
    """Exports of a compiled (``_orig_mod.``) or DDP-wrapped (``module.``) model, or of both
    wrappers stacked either way, load like the plain one."""
    from safetensors.torch import load_file, save_file

    model = build_model("moepot", **TINY).eval()
    plain = save_pretrained(model, tmp_path / "plain.safetensors")
    from safetensors import safe_open

    with safe_open(str(plain), framework="pt") as fh:
        metadata = fh.metadata()
    prefixed = tmp_path / "prefixed.safetensors"
    metadata = {k: v for k, v in metadata.items() if "sha256" not in k}  # the checksum covers the key names
    save_file({prefix + k: v for k, v in load_file(plain).items()}, prefixed, metadata=metadata)
    x = torch.randn(2, 16, 16, 3, 2)
    with torch.no_grad():
        assert torch.equal(load_pretrained(prefixed)(x).pred, load_pretrained(plain)(x).pred)


def test_an_official_checkpoint_whose_hidden_width_is_not_a_round_ratio_loads(tmp_path):
    """Hm = 956 at D = 416 (mlp_ratio 2.3): 956 / 416 * 416 rounds below 956 in floats."""
    assert int(416 * (956 / 416)) == 955  # the trap
    model = build_model("dpot", **{**TINY, "embed_dim": 416, "mlp_ratio": 2.3, "depth": 1})
    assert model.config.hidden_dim == 956
    for args in (argparse.Namespace(modes=3), argparse.Namespace(modes=3, mlp_ratio=2.3)):
        torch.save({"args": args, "model": model.state_dict()}, tmp_path / "official.pth")
        assert load_pretrained(tmp_path / "official.pth").config.hidden_dim == 956
