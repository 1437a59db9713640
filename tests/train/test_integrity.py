"""Integrity of what training reads and writes: damaged checkpoints and exports are caught with a
clear error naming the file, a pickle that would run code is refused without running it, and a
non-finite step (loss or gradient) changes nothing before it is skipped."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
from tiny_data import write_decay_dataset
from tiny_run import tiny_config

import moepot
from moepot.cli import main
from moepot.errors import CheckpointError
from moepot.models.moe import TEMPERATURE_DECAY, TEMPERATURE_START
from moepot.models.registry import save_pretrained
from moepot.train.checkpoint import load_checkpoint, save_checkpoint
from moepot.train.loop import load_model_for_eval, train

MODEL = dict(img_size=16, patch_size=4, in_channels=2, out_channels=2, in_timesteps=4, embed_dim=16, depth=1,
             n_blocks=2, modes=3, out_layer_dim=8, n_cls=2)
RUN = dict(epochs=2, warmup_epochs=1, eval_every_epochs=5)  # on top of tiny_run.TINY_RUN


def flip_a_byte_inside(path, tensor: torch.Tensor) -> None:
    """Flip one bit in the middle of ``tensor``'s bytes as stored in ``path`` (found by content)."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    start = bytes(data).find(raw)
    assert start >= 0, "tensor bytes not found verbatim in the file"
    data[start + len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def training_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = moepot.build_model("moepot", **MODEL)
    return {"model": model.state_dict(), "model_config": model.config.to_dict(), "step": 3, "epoch": 0,
            "batch_in_epoch": 3, "best_metric": float("inf"), "config": {"lr": 1e-3}}


def biggest(state_dict: dict[str, torch.Tensor]) -> str:
    return max(state_dict, key=lambda k: state_dict[k].numel())


# --------------------------------------------------------------------------- training checkpoints
def test_a_flipped_bit_in_tensor_data_is_caught_by_the_checksum(tmp_path):
    state = training_state()
    path = save_checkpoint(tmp_path / "step.pt", state)
    key = biggest(state["model"])
    flip_a_byte_inside(path, state["model"][key])
    # why the checksum exists: torch's reader hands back the damaged tensor without a word
    silently = torch.load(path, weights_only=True)
    assert not torch.equal(silently["model"][key], state["model"][key])
    with pytest.raises(CheckpointError, match=r"step\.pt is corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_a_truncated_training_checkpoint_is_a_clear_error(tmp_path, keep):
    path = save_checkpoint(tmp_path / "cut.pt", training_state())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.pt is (empty|truncated)"):
        load_checkpoint(path)


def test_damaged_checkpoints_stop_evaluate_and_resume_with_one_line(tmp_path, capsys):
    write_decay_dataset(tmp_path, "decay", n_train=8, channels=2)
    corrupt = save_checkpoint(tmp_path / "corrupt.pt", training_state())
    flip_a_byte_inside(corrupt, training_state()["model"][biggest(training_state()["model"])])
    truncated = save_checkpoint(tmp_path / "truncated.pt", training_state())
    truncated.write_bytes(truncated.read_bytes()[:1000])
    runs = [
        ["evaluate", "--checkpoint", str(corrupt), "--data", "decay", "--data-root", str(tmp_path)],
        ["evaluate", "--checkpoint", str(truncated), "--data", "decay", "--data-root", str(tmp_path)],
    ]
    config = tmp_path / "config.yaml"
    config.write_text("model: moepot\ntrain_paths: [decay]\nres: 16\npatch_size: 4\nwidth: 16\nn_layers: 1\n"
                      "n_blocks: 2\nmodes: 3\nout_layer_dim: 8\nT_in: 4\nbatch_size: 4\nuse_writer: false\n")
    for damaged in (corrupt, truncated):
        runs.append(["pretrain", "--config", str(config), "--data-root", str(tmp_path), "--run-dir",
                     str(tmp_path / f"run-{damaged.stem}"), "--resume", str(damaged)])
    for argv in runs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("moepot: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert argv[argv.index("--checkpoint" if "--checkpoint" in argv else "--resume") + 1] in lines[0]


# --------------------------------------------------------------------------- exported models
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_flipped_bit_in_an_export_is_caught(tmp_path, suffix):
    torch.manual_seed(0)
    model = moepot.build_model("dpot", **MODEL)
    path = save_pretrained(model, tmp_path / f"export{suffix}")
    key = biggest(model.state_dict())
    flip_a_byte_inside(path, model.state_dict()[key])
    with pytest.raises(CheckpointError, match=rf"export\{suffix} is corrupt"):
        moepot.load_pretrained(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.99])
def test_a_truncated_export_is_a_clear_error(tmp_path, suffix, keep):
    model = moepot.build_model("dpot", **MODEL)
    path = save_pretrained(model, tmp_path / f"export{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=rf"export\{suffix}"):
        moepot.load_pretrained(path)


def test_intact_files_still_load_bit_for_bit(tmp_path):
    state = training_state()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "ok.pt", state))
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    model = moepot.build_model("dpot", **MODEL)
    for suffix in (".safetensors", ".pt"):
        again = moepot.load_pretrained(save_pretrained(model, tmp_path / f"ok{suffix}"))
        for key, value in model.state_dict().items():
            assert torch.equal(again.state_dict()[key], value)


# --------------------------------------------------------------------------- code in a pickle
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_would_run_code_is_refused_by_every_reader(tmp_path, capsys, code_running_payload):
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "moepot-train-checkpoint", "model": {}, "x": code_running_payload(target)}, evil)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"model": code_running_payload(target)}))
    assert not target.exists()
    for path in (evil, legacy):
        with pytest.raises(CheckpointError, match=path.name):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match=path.name):
            load_model_for_eval(path)
        assert main(["evaluate", "--checkpoint", str(path), "--data", "x"]) == 2
        assert path.name in capsys.readouterr().err
    assert not target.exists()


# --------------------------------------------------------------------------- non-finite steps
def test_a_nan_gradient_with_a_finite_loss_is_skipped_then_restored(data_root, tmp_path, poison_forwards, caplog):
    poison_forwards({4, 5}, how="gradient")
    cfg = tiny_config(data_root, **RUN, model="dpot", max_steps=6, nan_tolerance=2, nan_lr_factor=0.5, checkpoint_every_steps=2)
    with caplog.at_level(logging.WARNING, logger="moepot.train"):
        result = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert result.skipped_steps == 2 and result.step == 6
    assert np.isfinite(result.losses).all()
    skips = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert len(skips) == 2
    assert all("non-finite gradient norm nan;" in m and "non-finite loss" not in m for m in skips), skips
    assert skips[0].startswith("step 4 ")  # the 4th batch would have been optimizer step 4
    text = caplog.text
    assert "2 non-finite steps in a row at step 4: restored the last good checkpoint" in text
    assert "step_00000002.pt (step 2)" in text
    assert "learning rate lowered by x0.5" in text
    state = load_checkpoint(result.checkpoint)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_skipped_step_leaves_batchnorm_statistics_and_temperatures_untouched(data_root, tmp_path, poison_forwards):
    """A NaN forward updates the router's BatchNorm running statistics (and the MoE temperature)
    before the loss is seen; the skip must undo that, or the model stays NaN in evaluation."""
    poison_forwards({3}, how="input")
    cfg = tiny_config(data_root, **RUN, model="moepot", max_steps=4, nan_tolerance=100, checkpoint_every_steps=2)
    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert result.skipped_steps == 1 and result.step == 4
    state = load_checkpoint(result.checkpoint)
    buffers = {k: v for k, v in state["model"].items() if "running_" in k or k.endswith("temperature")}
    assert buffers and all(torch.isfinite(v).all() for v in buffers.values()), buffers
    assert all(np.isfinite(v["rel_l2_rollout"]) for v in result.metrics.values()), result.metrics
    # the temperature decayed once per kept training forward only (the model's rule, 4 kept steps)
    temperature = next(v for k, v in state["model"].items() if k.endswith("temperature"))
    assert float(temperature) == pytest.approx(TEMPERATURE_START * TEMPERATURE_DECAY**4, rel=1e-6)
