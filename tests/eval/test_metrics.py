"""relative_l2 against a second (loop) implementation and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moepot.eval.metrics import format_error, relative_l2


def loop_relative_l2(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The definition written out: per sample, per channel over masked points, mean over kept channels."""
    out = []
    for b in range(pred.shape[0]):
        errors, kept = [], 0
        for c in range(pred.shape[-1]):
            m = np.ones(pred.shape[1:-1]) if mask is None else np.broadcast_to(mask[b, ..., c], pred.shape[1:-1])
            p, t = pred[b, ..., c] * m, target[b, ..., c] * m
            errors.append(np.sqrt(((p - t) ** 2).sum()) / (np.sqrt((t**2).sum()) + 1e-8))
            kept += bool(m.any())
        out.append(sum(errors) / (pred.shape[-1] if mask is None else kept))
    return np.array(out)


def test_matches_loop_implementation_with_and_without_mask():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 6, 5, 4, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(3, 6, 5, 4, 3, generator=gen, dtype=torch.float64)
    mask = torch.zeros(3, 6, 5, 1, 3, dtype=torch.float64)
    mask[:, ::2, ::2, :, :2] = 1  # every 2nd grid point, 2 of 3 channels
    mask[1, :, :, :, 0] = 0  # sample 1 keeps one channel only
    for m in (None, mask):
        got = relative_l2(pred, target, m).numpy()
        want = loop_relative_l2(pred.numpy(), target.numpy(), None if m is None else m.numpy())
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_scaled_prediction_gives_the_scale_error_per_channel():
    target = torch.rand(2, 8, 8, 3, 2, dtype=torch.float64) + 1.0
    scale = torch.tensor([1.1, 0.7], dtype=torch.float64)  # per-channel relative errors 0.1 and 0.3
    got = relative_l2(target * scale, target)
    torch.testing.assert_close(got, torch.full((2,), 0.2, dtype=torch.float64))


def test_masked_out_points_and_channels_do_not_count():
    target = torch.rand(2, 8, 8, 3, 3) + 1.0
    pred = target * 1.5
    mask = torch.zeros(2, 8, 8, 1, 3)
    mask[..., :2] = 1
    base = relative_l2(pred, target, mask)
    torch.testing.assert_close(base, torch.full((2,), 0.5))  # channel 3 is not averaged in
    pred2 = pred.clone()
    pred2[..., 2] = 1e6  # garbage in the masked channel
    torch.testing.assert_close(relative_l2(pred2, target, mask), base)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        relative_l2(torch.zeros(1, 2, 2, 1, 1), torch.zeros(1, 2, 2, 2, 1))


@pytest.mark.parametrize("value", [0.99995, 0.999949, 1.23456, 0.0123456, 0.00987654, 1.234567e-5, 42.0])
def test_format_error_keeps_four_significant_digits(value):
    """Read back, the text is within half a unit of the 4th significant digit (``%.4g`` printed
    0.99995 as '1')."""
    text = format_error(value)
    assert abs(float(text) - value) <= 0.5 * 10 ** (np.floor(np.log10(value)) - 3) + 1e-15
    assert (float(text) < 1) == (value < 1)


def test_format_error_of_zero_and_non_finite_values():
    assert float(format_error(0.0)) == 0.0
    assert format_error(float("nan")) == "nan" and format_error(float("inf")) == "inf"
