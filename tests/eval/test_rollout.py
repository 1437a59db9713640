"""Autoregressive rollout against hand-computed sequences; HDF5 round trip."""

from __future__ import annotations

import h5py
import torch
from torch import nn

from moepot.eval.rollout import rollout, save_rollouts, slide_window
from moepot.models.base import ModelOutput


class NextIntegers(nn.Module):
    """Predicts the next ``bundle`` frames as last + 1, last + 2, ... (a counting sequence)."""

    def __init__(self, bundle: int) -> None:
        super().__init__()
        self.bundle = bundle
        self.calls = 0

    def forward(self, x: torch.Tensor) -> ModelOutput:
        self.calls += 1
        last = x[..., -1:, :]
        steps = torch.arange(1, self.bundle + 1, dtype=x.dtype).reshape(1, 1, 1, -1, 1)
        return ModelOutput(last + steps, x.new_zeros(x.shape[0], 1), x.new_zeros(()))


def test_slide_window_drops_oldest_frames():
    x = torch.arange(5.0).reshape(1, 1, 1, 5, 1)
    new = torch.tensor([10.0, 11.0]).reshape(1, 1, 1, 2, 1)
    assert slide_window(x, new).flatten().tolist() == [2.0, 3.0, 4.0, 10.0, 11.0]


def test_rollout_continues_the_sequence_and_cuts_the_last_bundle():
    x = torch.arange(4.0).reshape(1, 1, 1, 4, 1).expand(2, 3, 3, 4, 2).clone()
    for bundle in (1, 2, 3):
        model = NextIntegers(bundle)
        pred = rollout(model, x, steps=7)
        assert pred.shape == (2, 3, 3, 7, 2)
        assert pred[0, 0, 0, :, 0].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
        assert model.calls == -(-7 // bundle)  # ceil: the last bundle is cut


def test_rollout_resize_applies_to_outputs_only():
    x = torch.zeros(1, 2, 2, 3, 1)
    pred = rollout(NextIntegers(1), x, steps=3, resize=lambda t: t.repeat(1, 2, 2, 1, 1))
    assert pred.shape == (1, 4, 4, 3, 1)
    assert pred[0, 0, 0, :, 0].tolist() == [1.0, 2.0, 3.0]


def test_save_rollouts_round_trip(tmp_path):
    arrays = {"a": {"pred": torch.rand(2, 3, 3, 4, 1), "target": torch.rand(2, 3, 3, 4, 1)}}
    path = tmp_path / "roll.hdf5"
    save_rollouts(path, arrays, attrs={"res": 3, "checkpoint": "m.pt", "n_test": None},
                  group_attrs={"a": {"dataset": "a", "rel_l2_step": 0.5}})
    with h5py.File(path, "r") as handle:
        for key, value in arrays["a"].items():
            torch.testing.assert_close(torch.from_numpy(handle["a"][key][:]), value)
        assert dict(handle.attrs) == {"res": 3, "checkpoint": "m.pt"}  # None values left out
        assert dict(handle["a"].attrs) == {"dataset": "a", "rel_l2_step": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["roll.hdf5"]  # no temporary file left


def test_slide_window_keeps_the_last_t_in_frames_when_a_bundle_is_longer():
    """out_timesteps > T_in: the next window is the last T_in predicted frames."""
    x = torch.arange(2.0).reshape(1, 1, 1, 2, 1)
    new = torch.tensor([10.0, 11.0, 12.0]).reshape(1, 1, 1, 3, 1)
    assert slide_window(x, new).flatten().tolist() == [11.0, 12.0]
    window = torch.arange(2.0).reshape(1, 1, 1, 2, 1).expand(1, 2, 2, 2, 1).clone()
    pred = rollout(NextIntegers(3), window, steps=7)
    assert pred[0, 0, 0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
