"""Fine-tuning: component loading, re-initialisation of mismatched shapes, frozen router."""

from __future__ import annotations

import pytest
import torch
from tiny_data import write_decay_dataset

import moepot
from moepot.errors import ConfigError
from moepot.train.checkpoint import load_checkpoint
from moepot.train.config import TrainConfig
from moepot.train.finetune import load_components
from moepot.train.loop import train

ARCH = dict(patch_size=4, in_timesteps=4, embed_dim=16, depth=1, n_blocks=2, modes=3, out_layer_dim=8, n_cls=2)


def tiny(seed: int, **kwargs):
    torch.manual_seed(seed)
    return moepot.build_model("moepot-ti", **{**ARCH, "img_size": 16, "in_channels": 2, "out_channels": 2, **kwargs})


def test_selected_components_are_copied_and_the_rest_kept():
    source, target = tiny(0), tiny(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_components(target, {f"module.{k}": v for k, v in source.state_dict().items()}, ["blocks", "pos"])
    for key, value in target.state_dict().items():
        from_source = key.startswith("blocks.") or key == "pos_embed"
        torch.testing.assert_close(value, (source.state_dict() if from_source else before)[key], rtol=0, atol=0)
    assert not report.reinitialised and not report.missing


def test_other_channels_and_resolution_reinitialise_with_a_warning(caplog):
    source = tiny(0)
    with torch.no_grad():
        source.pos_embed.fill_(0.25)  # a constant embedding stays constant when interpolated
    target = tiny(1, img_size=32, in_channels=3, out_channels=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level("WARNING"):
        report = load_components(target, source.state_dict(), "all")
    assert any(r.startswith("patch_embed.proj.0.weight") for r in report.reinitialised)
    assert any(r.startswith("out_layer.4.weight") for r in report.reinitialised)
    torch.testing.assert_close(target.state_dict()["patch_embed.proj.0.weight"], before["patch_embed.proj.0.weight"])
    assert target.pos_embed.shape[-1] == 8 and torch.allclose(target.pos_embed, torch.tensor(0.25))
    torch.testing.assert_close(target.state_dict()["blocks.0.filter.w1"], source.state_dict()["blocks.0.filter.w1"])
    assert "re-initialised: patch_embed.proj.0.weight" in caplog.text


@pytest.mark.parametrize("other", [{"embed_dim": 32}, {"depth": 2}, {"num_experts": 8}])
def test_a_checkpoint_of_another_trunk_is_refused_not_mostly_reinitialised(other):
    """Fine-tuning is about the pre-trained blocks: a config describing another model is an error."""
    target = tiny(1)
    with pytest.raises(ConfigError, match=r"differ in the pre-trained blocks \((missing|unexpected|mis-shaped) keys"):
        load_components(target, tiny(0, **other).state_dict(), ["blocks", "pos"])
    load_components(target, tiny(0, **other).state_dict(), ["patch"])  # the trunk not asked for: fine


def test_unknown_component_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown component.*time_agg"):
        load_components(tiny(0), tiny(1).state_dict(), ["bloks"])


def test_finetuning_changes_only_unfrozen_parameters(tmp_path):
    from moepot.models.registry import save_pretrained

    write_decay_dataset(tmp_path, "decay_a", n_train=8, channels=2, seed=1)
    source = tiny(0)
    path = save_pretrained(source, tmp_path / "pre.safetensors")
    cfg = TrainConfig.from_dict(dict(model="moepot", width=16, n_layers=1, n_blocks=2, patch_size=4, res=16,
                                     modes=3, out_layer_dim=8, T_in=4, n_class=2, train_paths=["decay_a"],
                                     data_root=str(tmp_path), batch_size=4, epochs=3, warmup_epochs=1, lr=1e-2,
                                     n_test=2, load_components=["all"], use_writer=False))
    result = train(cfg, run_dir=tmp_path / "run", finetune_from=path, progress=False)
    after = load_checkpoint(result.checkpoint)["model"]
    frozen = [k for k in after if ".feature_extractor." in k or ".gating." in k]
    assert frozen and any(".experts." in k for k in after)
    for key, value in source.state_dict().items():
        changed = not torch.equal(after[key], value)
        if key in frozen:  # router weights and BatchNorm statistics stay as loaded
            assert not changed, key
        elif key.endswith("temperature"):
            assert float(after[key]) == 0.5
    assert not torch.equal(after["blocks.0.filter.w1"], source.state_dict()["blocks.0.filter.w1"])


def test_a_config_without_architecture_fine_tunes_the_checkpoints_model(tmp_path):
    """The architecture keys a fine-tuning config leaves unset come from the checkpoint: a config
    naming only the data and the schedule fine-tunes the pre-trained model as it is."""
    from moepot.models.registry import save_pretrained

    write_decay_dataset(tmp_path, "decay_a", n_train=8, channels=2, seed=1)
    source = tiny(0, num_experts=8, top_k=2)
    path = save_pretrained(source, tmp_path / "pre.safetensors")
    cfg = TrainConfig.from_dict(dict(model="moepot", res=16, T_in=4, n_class=2, train_paths=["decay_a"],
                                     data_root=str(tmp_path), batch_size=4, max_steps=1, epochs=2, warmup_epochs=1,
                                     n_test=2, load_components=["all"], use_writer=False))  # fmt: skip
    result = train(cfg, run_dir=tmp_path / "run", finetune_from=path, progress=False)
    state = load_checkpoint(result.checkpoint)
    assert {k: state["model_config"][k] for k in ("embed_dim", "depth", "num_experts", "top_k")} == {
        "embed_dim": 16, "depth": 1, "num_experts": 8, "top_k": 2}
    assert set(state["model"]) == set(source.state_dict())
    saved = __import__("yaml").safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["width"], saved["n_layers"], saved["n_blocks"]) == (16, 1, 2)  # the model it fine-tuned



def test_a_named_preset_or_another_family_keeps_its_own_architecture(tmp_path):
    from moepot.models.registry import save_pretrained
    from moepot.train.loop import _pretrained_architecture

    path = save_pretrained(tiny(0), tmp_path / "pre.safetensors")  # a small MoE-POT
    assert _pretrained_architecture(path, "moepot")["embed_dim"] == 16
    assert _pretrained_architecture(path, "moepot-s") == {}  # the preset's sizes: the trunk check names them
    assert _pretrained_architecture(path, "fno") == {}  # another family: nothing to take


def test_the_run_records_the_checkpoint_it_fine_tuned_from(tmp_path):
    """config.yaml (which reruns the job) and `moepot info` name the pre-trained checkpoint:
    before, config.yaml said resume_path: null and a rerun from it stopped asking for one."""
    from moepot.models.cli import format_info
    from moepot.models.registry import describe_source, save_pretrained

    write_decay_dataset(tmp_path, "decay_a", n_train=8, channels=2, seed=1)
    path = save_pretrained(tiny(0), tmp_path / "pre.safetensors")
    cfg = TrainConfig.from_dict(dict(model="moepot", res=16, T_in=4, n_class=2, train_paths=["decay_a"],
                                     data_root=str(tmp_path), batch_size=4, max_steps=1, epochs=2, warmup_epochs=1,
                                     n_test=2, load_components=["all"], use_writer=False))  # fmt: skip
    assert cfg.resume_path is None
    train(cfg, run_dir=tmp_path / "run", finetune_from=path, progress=False)
    saved = TrainConfig.from_dict(__import__("yaml").safe_load((tmp_path / "run" / "config.yaml").read_text()))
    assert saved.resume_path == str(path)
    info = describe_source(str(tmp_path / "run"))
    assert info["training"]["finetuned_from"] == str(path)
    assert f"  fine-tuned from: {path}" in format_info(info).splitlines()
