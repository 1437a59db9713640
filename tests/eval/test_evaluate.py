"""evaluate_model on geometric-decay data, where a persistence forecast's errors are known exactly."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
import torch
from tiny_data import write_decay_dataset
from torch import nn

from moepot.eval.evaluate import evaluate_model, resize_grid
from moepot.models.base import ModelOutput

RATE, T_IN, T_TEST = 0.8, 4, 3


class Persistence(nn.Module):
    """Repeats the last input frame ``bundle`` times; writes garbage into ``junk_channel`` (if any)."""

    def __init__(self, img_size: int, channels: int, junk_channel: int | None = None,
                 bundle: int = 1) -> None:
        super().__init__()
        self.config = SimpleNamespace(img_size=img_size, in_timesteps=T_IN, in_channels=channels,
                                      out_timesteps=bundle)  # fmt: skip
        self.unused = nn.Parameter(torch.zeros(()))
        self.junk_channel = junk_channel

    def forward(self, x: torch.Tensor) -> ModelOutput:
        assert x.shape[1] == self.config.img_size, "the model must see its own grid"
        pred = x[..., -1:, :].repeat(1, 1, 1, self.config.out_timesteps, 1)
        if self.junk_channel is not None:
            pred[..., self.junk_channel] = 1e3
        return ModelOutput(pred, x.new_zeros(x.shape[0], 1), x.new_zeros(()))


def expected_persistence_errors() -> tuple[float, float, float]:
    """step, rollout and teacher-forced errors of persistence on u_t = RATE**t * u0."""
    last = RATE ** (T_IN - 1)
    targets = [RATE ** (T_IN + k) for k in range(T_TEST)]
    step = sum(abs(last - t) / t for t in targets) / T_TEST
    rollout = math.sqrt(sum((last - t) ** 2 for t in targets)) / math.sqrt(sum(t * t for t in targets))
    return step, rollout, 1 / RATE - 1


@pytest.fixture()
def data_root(tmp_path):
    write_decay_dataset(tmp_path, "decay_a", t_in=T_IN, t_test=T_TEST, t_total=8, rate=RATE, seed=1)
    write_decay_dataset(tmp_path, "decay_flat", t_in=T_IN, t_test=T_TEST, t_total=8, rate=RATE, seed=2,
                        constant=True)
    return tmp_path


def test_persistence_errors_match_closed_form_and_padding_is_masked(data_root):
    step, roll, forced = expected_persistence_errors()
    model = Persistence(img_size=16, channels=2, junk_channel=1)  # channel 1 is padding: masked out
    out = evaluate_model(model, ["decay_a"], data_root=data_root, batch_size=3, teacher_forced=True)
    assert set(out) == {"decay_a"}
    assert out["decay_a"]["rel_l2_step"] == pytest.approx(step, rel=1e-5)
    assert out["decay_a"]["rel_l2_rollout"] == pytest.approx(roll, rel=1e-5)
    assert out["decay_a"]["rel_l2_teacher_forced"] == pytest.approx(forced, rel=1e-5)


def test_step_error_is_the_mean_over_model_calls_of_a_bundle(data_root: Path) -> None:
    """T_bundle = 2 over t_test = 3 frames: two model calls, frames [0, 2) and [2, 3); rel_l2_step is
    the mean of their two errors (the original's test_l2_step), while the rollout (persistence
    all along) is the one-frame model's."""
    last = RATE ** (T_IN - 1)
    first = [RATE ** (T_IN + k) for k in range(2)]
    bundle_errors = (math.sqrt(sum((last - t) ** 2 for t in first) / sum(t * t for t in first)),
                     abs(last - RATE ** (T_IN + 2)) / RATE ** (T_IN + 2))  # fmt: skip
    _, roll, _ = expected_persistence_errors()
    out = evaluate_model(Persistence(img_size=16, channels=1, bundle=2), ["decay_a"], data_root=data_root)
    assert out["decay_a"]["rel_l2_step"] == pytest.approx(sum(bundle_errors) / 2, rel=1e-5)
    assert out["decay_a"]["rel_l2_rollout"] == pytest.approx(roll, rel=1e-5)


def test_other_resolution_resizes_in_and_out(data_root, tmp_path):
    step, roll, _ = expected_persistence_errors()
    model = Persistence(img_size=8, channels=1)
    save = tmp_path / "rollouts.hdf5"
    out = evaluate_model(model, ["decay_flat"], res=32, data_root=data_root, n_test=2, save_path=save)
    assert out["decay_flat"]["rel_l2_step"] == pytest.approx(step, rel=1e-5)
    assert out["decay_flat"]["rel_l2_rollout"] == pytest.approx(roll, rel=1e-5)
    with h5py.File(save, "r") as handle:
        assert handle["decay_flat"]["pred"].shape == (2, 32, 32, T_TEST, 1)  # n_test trajectories
        # the input windows on the data grid: the constant fields' first T_IN frames, u0 * RATE**t
        inputs = handle["decay_flat"]["input"][:]
        assert inputs.shape == (2, 32, 32, T_IN, 1)
        assert inputs[:, :, :, 1:] == pytest.approx(inputs[:, :, :, :-1] * RATE, rel=1e-5)
        assert handle.attrs["res"] == 32 and list(handle.attrs["model_grid"]) == [8, 8]
        assert handle["decay_flat"].attrs["rel_l2_rollout"] == pytest.approx(roll, rel=1e-5)
        assert handle["decay_flat"]["mask"][0, 1, 1, 0, 0] == 0  # stored grid is every 2nd point


def test_resize_grid_round_trip_of_constant_field():
    x = torch.full((2, 4, 4, 3, 2), 3.0)
    torch.testing.assert_close(resize_grid(resize_grid(x, (16, 16)), (4, 4)), x)
    assert resize_grid(x, (4, 4)) is x


FIXTURE = Path(__file__).parents[3] / "shared" / "fixtures" / "moepot_ref_a.pth"


@pytest.mark.skipif(not FIXTURE.is_file(), reason="needs ../shared/fixtures")
def test_official_checkpoint_through_the_cli_matches_a_hand_written_loop(tmp_path, capsys):
    """`moepot evaluate --json` on an official file equals the original's loop written out by hand."""
    import json

    import moepot
    from moepot.cli import main

    write_decay_dataset(tmp_path, "decay_c", n_test=3, size=32, channels=3, t_in=4, t_test=3, t_total=8, seed=4)
    assert main(["evaluate", "--checkpoint", str(FIXTURE), "--data", "decay_c", "--data-root", str(tmp_path),
                 "--batch-size", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["decay_c"]

    model = moepot.load_pretrained(FIXTURE)
    with h5py.File(tmp_path / "decay_c_test.hdf5", "r") as handle:
        data = torch.from_numpy(handle["data"][:])  # [3, 32, 32, 8, 3], already on the model grid
    step_errors, rollout_errors = [], []
    with torch.no_grad():
        for trajectory in data:
            window, frames = trajectory[None, :, :, :4], []
            for _ in range(3):
                frame = model(window).pred
                frames.append(frame)
                window = torch.cat((window[..., 1:, :], frame), dim=-2)
            pred, target = torch.cat(frames, dim=-2)[0], trajectory[:, :, 4:7]

            def rel(p, t):
                diff = (p - t).reshape(-1, 3).norm(dim=0)
                return (diff / (t.reshape(-1, 3).norm(dim=0) + 1e-8)).mean().item()

            step_errors.append(sum(rel(pred[:, :, k], target[:, :, k]) for k in range(3)) / 3)
            rollout_errors.append(rel(pred, target))
    assert got["rel_l2_step"] == pytest.approx(sum(step_errors) / 3, rel=1e-5)
    assert got["rel_l2_rollout"] == pytest.approx(sum(rollout_errors) / 3, rel=1e-5)


def test_moe_models_evaluate_at_the_inference_temperature(data_root, tmp_path):
    """architecture.md: evaluation uses temperature 0.5. A model still at 2.0 (early pre-training)
    evaluates like its copy at 0.5 and keeps its own temperature; a training checkpoint loads for
    evaluation at 0.5, like load_pretrained."""
    import copy

    from moepot import build_model, load_pretrained
    from moepot.train.checkpoint import save_checkpoint
    from moepot.train.loop import load_model_for_eval

    torch.manual_seed(0)
    hot = build_model("moepot", img_size=16, patch_size=4, in_channels=1, out_channels=1, in_timesteps=T_IN,
                      embed_dim=16, depth=2, n_blocks=2, modes=3, out_layer_dim=8, num_experts=4, top_k=2)  # fmt: skip
    cold = copy.deepcopy(hot)
    for layer in cold.moe_layers():
        layer.temperature.fill_(0.5)
    assert [float(layer.temperature) for layer in hot.moe_layers()] == [2.0, 2.0]
    assert evaluate_model(hot, ["decay_a"], data_root=data_root) == evaluate_model(cold, ["decay_a"], data_root=data_root)
    assert [float(layer.temperature) for layer in hot.moe_layers()] == [2.0, 2.0]  # restored

    path = tmp_path / "train.pt"
    save_checkpoint(path, {"format": "moepot-train-checkpoint", "model": hot.state_dict(),
                           "model_config": hot.config.to_dict(), "step": 1})  # fmt: skip
    for loaded in (load_model_for_eval(path), load_pretrained(path)):
        assert [float(layer.temperature) for layer in loaded.moe_layers()] == [0.5, 0.5]
