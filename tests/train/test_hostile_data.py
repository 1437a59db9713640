"""Hostile data at training start and mid-training, through the command line.

Every broken input makes ``moepot pretrain`` exit with status 2 and one ``moepot: error:`` line
naming the file (and the sample when one sample is at fault), never a traceback or a NaN loss;
``moepot data validate`` reports the same problems with the file. The data are a clean tiny
mixture (``tiny_data``) with one dataset damaged per case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from tiny_data import decay_trajectories, write_decay_dataset

from moepot.cli import main

TRAIN = dict(model="dpot", width=16, n_layers=1, n_blocks=2, patch_size=4, res=16, modes=3, out_layer_dim=8,
             T_in=4, T_ar=1, batch_size=4, n_test=2, epochs=1, warmup_epochs=0, lr_method="step",
             use_writer=False, train_paths=["decay_a", "decay_b"], eval_every_epochs=5, num_workers=0)
N_TRAIN, SIZE, STEPS = 8, 16, 8


@pytest.fixture()
def data_root(tmp_path):
    root = tmp_path / "data"
    write_decay_dataset(root, "decay_a", n_train=N_TRAIN, size=SIZE, t_total=STEPS, rate=0.8, seed=1)
    write_decay_dataset(root, "decay_b", n_train=N_TRAIN, size=SIZE, t_total=STEPS, channels=2, rate=0.9, seed=2)
    return root


def bad_file(root: Path) -> Path:
    return root / "decay_b_train.hdf5"


def write_raw(path: Path, array: np.ndarray, key: str = "data") -> None:
    """Write ``array`` as-is (our writers refuse NaN and non-float data; these files mimic others')."""
    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        f[key] = array


def good_train_array(channels: int = 2, steps: int = STEPS, n: int = N_TRAIN) -> np.ndarray:
    return decay_trajectories(n, SIZE, steps, channels, 0.9, seed=2)


def truncate(root: Path) -> None:
    data = bad_file(root).read_bytes()
    bad_file(root).write_bytes(data[: len(data) // 2])


# case -> (damage the data root, fragments of the error line); each line must also name the file
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "missing file": (lambda root: bad_file(root).unlink(), ("no such file",)),
    "truncated file": (truncate, ()),
    "not HDF5": (lambda root: bad_file(root).write_bytes(b"\x00garbage" * 100), ("not a readable HDF5 file",)),
    "no data key": (lambda root: write_raw(bad_file(root), good_train_array(), key="u"),
                    ("'data' array is missing", "found: u")),
    "wrong rank": (lambda root: write_raw(bad_file(root), np.zeros((N_TRAIN, SIZE, SIZE), np.float32)),
                   ("shape", "expected rank")),
    "integer dtype": (lambda root: write_raw(bad_file(root), good_train_array().astype(np.int32)),
                      ("dtype int32",)),
    "complex dtype": (lambda root: write_raw(bad_file(root), good_train_array().astype(np.complex64)),
                      ("dtype complex64",)),
    "too few time steps": (lambda root: write_raw(bad_file(root), good_train_array(steps=4)),
                           ("4 time steps", "t_in 4 + t_ar 1")),
    "wrong channel count": (lambda root: write_raw(bad_file(root), good_train_array(channels=3)),
                            ("3 channels", "n_channels = 2")),
    "empty dataset": (lambda root: write_raw(bad_file(root), np.zeros((0, SIZE, SIZE, STEPS, 2), np.float32)),
                      ("empty",)),
    "fewer samples than the catalogue": (lambda root: write_raw(bad_file(root), good_train_array(n=3)),
                                         ("holds 3 samples", "train_size is 8")),
}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def the_error_line(err: str) -> str:
    """The one ``moepot: error:`` line; no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("moepot: error:")]
    assert len(lines) == 1, err
    return lines[0]


def pretrain(capsys, tmp_path: Path, data_root: Path, *extra: str, **config) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**TRAIN, **config}))
    code, _, err = run_cli(capsys, "pretrain", "--config", str(path), "--data-root", str(data_root),
                           "--run-dir", str(tmp_path / "run"), *extra)
    return code, err


@pytest.mark.parametrize("case", list(CASES))
def test_broken_dataset_stops_training_at_start_with_one_line_naming_the_file(case, data_root, tmp_path, capsys):
    damage, fragments = CASES[case]
    damage(data_root)
    code, err = pretrain(capsys, tmp_path, data_root)
    line = the_error_line(err)
    assert code == 2
    assert "decay_b_train.hdf5" in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert "step/s" not in err, "found only when reading samples: the progress bar had started"


@pytest.mark.parametrize("case", [c for c in CASES if c != "fewer samples than the catalogue"])
def test_validate_reports_the_same_problems_with_the_file(case, data_root, capsys):
    damage, _ = CASES[case]
    damage(data_root)
    code, out, err = run_cli(capsys, "data", "validate", "decay_b", "--split", "train", "--data-root", str(data_root))
    assert code == 1, (out, err)
    assert "decay_b_train.hdf5" in out and "PROBLEM" in out, out


@pytest.mark.parametrize("num_workers", [0, 1])
def test_nan_found_mid_training_is_a_one_line_error_naming_file_and_sample(num_workers, data_root, tmp_path,
                                                                           capsys):
    array = good_train_array()
    array[5, 3, 4, 6, 1] = np.nan  # only reading sample 5 finds it
    write_raw(bad_file(data_root), array)
    code, err = pretrain(capsys, tmp_path, data_root, "--set", f"num_workers={num_workers}")
    line = the_error_line(err)
    assert code == 2
    assert "decay_b_train.hdf5" in line and "sample 5" in line and "NaN/Inf" in line, line
    assert "DataLoader worker" not in line


def test_inf_found_by_validate_with_every_bad_sample(data_root, capsys):
    array = good_train_array()
    array[1, 0, 0, 0, 0] = np.inf
    array[6, 2, 2, 2, 1] = np.nan
    write_raw(bad_file(data_root), array)
    code, out, _ = run_cli(capsys, "data", "validate", "decay_b", "--split", "train", "--data-root", str(data_root))
    assert code == 1
    assert "decay_b_train.hdf5 [sample 1]" in out and "decay_b_train.hdf5 [sample 6]" in out, out


def test_more_data_channels_than_the_model_has_is_refused(data_root, tmp_path, capsys):
    code, err = pretrain(capsys, tmp_path, data_root, "--set", "n_channels=1")
    line = the_error_line(err)
    assert code == 2 and "'decay_b'" in line and "2 channels" in line and "n_channels = 1" in line, line


def test_finetuning_on_more_channels_reinitialises_the_channel_layers_with_a_warning(data_root, tmp_path, capsys,
                                                                                     caplog):
    """Documented behaviour: the model is built for the data's channels; a checkpoint with fewer
    keeps its shared layers and the channel-shaped layers start fresh (one warning names them)."""
    import moepot
    from moepot.models.registry import save_pretrained

    one_channel = moepot.build_model("dpot", img_size=16, patch_size=4, in_channels=1, out_channels=1, in_timesteps=4,
                                     embed_dim=16, depth=1, n_blocks=2, modes=3, out_layer_dim=8, n_cls=2)
    source = save_pretrained(one_channel, tmp_path / "one_channel.safetensors")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**TRAIN, "max_steps": 1, "load_components": ["all"]}))
    with caplog.at_level(logging.WARNING):
        code, _, err = run_cli(capsys, "finetune", "--config", str(path), "--checkpoint", str(source), "--data-root",
                               str(data_root), "--run-dir", str(tmp_path / "ft"))
    assert code == 0, err
    assert "re-initialised" in caplog.text and "patch_embed.proj.0.weight" in caplog.text
    state = torch.load(tmp_path / "ft" / "checkpoints" / "last.pt", weights_only=True)
    assert state["model"]["patch_embed.proj.0.weight"].shape[1] == 2 + 3  # the data's 2 channels + grid


def test_catalogue_entry_outside_its_root_is_refused(data_root, tmp_path, capsys):
    outside = tmp_path / "elsewhere.hdf5"
    outside.write_bytes(bad_file(data_root).read_bytes())
    catalog = tmp_path / "mine.yaml"
    catalog.write_text(yaml.safe_dump({"decay_b": {"train_path": "../elsewhere.hdf5"}}))
    code, err = pretrain(capsys, tmp_path, data_root, "--catalog", str(catalog))
    line = the_error_line(err)
    assert code == 2 and "decay_b" in line and "train_path" in line and "mine.yaml" in line, line
    code, _, err = run_cli(capsys, "data", "validate", "decay_b", "--data-root", str(data_root), "--catalog",
                           str(catalog))
    line = the_error_line(err)
    assert code == 2 and "train_path" in line, line
