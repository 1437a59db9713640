"""Shallow-water dam break: exact Riemann solution, conservation, positivity, symmetry, raw layout."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
import yaml
from scipy.optimize import brentq

from moepot.data.generators import GenerateRequest
from moepot.data.generators.run import trajectory_rng
from moepot.data.generators.swe_pdb import (
    NAME,
    block_average,
    cell_centres,
    dam_break_depth,
    sample_radius,
    simulate_shallow_water,
    write_raw,
)

TIMES = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)


def stoker_depth(x: np.ndarray, t: float, h_left: float, h_right: float, g: float = 1.0) -> np.ndarray:
    """Exact depth of the planar wet-bed dam break (rarefaction left, shock right), from rest."""
    c_left = math.sqrt(g * h_left)

    def mismatch(h_mid: float) -> float:
        rarefaction_u = 2 * (c_left - math.sqrt(g * h_mid))
        shock_u = (h_mid - h_right) * math.sqrt(0.5 * g * (h_mid + h_right) / (h_mid * h_right))
        return rarefaction_u - shock_u

    h_mid = brentq(mismatch, h_right, h_left)
    u_mid = 2 * (c_left - math.sqrt(g * h_mid))
    shock_speed = h_mid * u_mid / (h_mid - h_right)
    xi = x / t
    fan = ((2 * c_left - xi) / 3) ** 2 / g
    depth = np.where(xi < -c_left, h_left, np.where(xi < u_mid - math.sqrt(g * h_mid), fan, h_mid))
    return np.where(xi > shock_speed, h_right, depth)


def planar_error(cells: int) -> float:
    x = cell_centres(cells, -2.5, 2.5)
    h0 = torch.from_numpy(np.where(x < 0, 2.0, 1.0)[:, None].repeat(2, axis=1))[None]  # [1, X, Y=2]
    h = simulate_shallow_water(h0, torch.tensor([0.0, 0.5], dtype=torch.float64))[0, -1]
    np.testing.assert_allclose(h[:, 0], h[:, 1], rtol=0, atol=1e-13)  # uniform in y stays uniform
    return float(np.abs(h[:, 0].numpy() - stoker_depth(x, 0.5, 2.0, 1.0)).mean())


def test_planar_dam_break_converges_to_the_exact_riemann_solution():
    coarse, fine = planar_error(100), planar_error(200)
    assert fine < 0.01
    assert fine < 0.7 * coarse  # converges under refinement


@pytest.fixture(scope="module")
def radial():
    size, radius = 32, 0.55
    h0 = torch.from_numpy(dam_break_depth(radius, size))[None]
    return size, radius, simulate_shallow_water(h0, TIMES)[0].numpy()  # [T, X, Y]


def test_initial_frame_is_the_piecewise_dam(radial):
    size, radius, h = radial
    x = cell_centres(size, -2.5, 2.5)
    inside = x[:, None] ** 2 + x[None, :] ** 2 <= radius**2
    assert set(np.unique(h[0])) == {1.0, 2.0}
    np.testing.assert_array_equal(h[0] == 2.0, inside)


def test_volume_is_conserved_while_the_front_stays_inside(radial):
    _, _, h = radial
    volume = h.sum(axis=(1, 2))
    np.testing.assert_allclose(volume, volume[0], rtol=1e-13)
    assert abs(h[-1, 0, :] - 1.0).max() < 1e-9  # the front has not reached the edge by t = 1


def test_depth_stays_positive_and_below_the_dam_height(radial):
    _, _, h = radial
    assert h.min() > 0
    assert h.max() <= 2.0 + 1e-9


def test_dam_break_keeps_its_symmetries(radial):
    _, _, h = radial
    np.testing.assert_allclose(h, h.transpose(0, 2, 1), rtol=0, atol=1e-12)  # x <-> y
    np.testing.assert_allclose(h, h[:, ::-1, :], rtol=0, atol=1e-12)  # x -> -x
    np.testing.assert_allclose(h, h[:, :, ::-1], rtol=0, atol=1e-12)  # y -> -y


def test_trajectories_do_not_depend_on_their_batch_mates():
    size = 16
    small, large = (torch.from_numpy(dam_break_depth(r, size)) for r in (0.3, 0.7))
    together = simulate_shallow_water(torch.stack([small, large]), TIMES[:21])
    alone = simulate_shallow_water(small[None], TIMES[:21])
    torch.testing.assert_close(together[0], alone[0], rtol=0, atol=1e-14)


def test_block_average_keeps_totals():
    rng = np.random.default_rng(0)
    fine = rng.random((2, 3, 8, 8, 1))
    coarse = block_average(fine, 2)
    assert coarse.shape == (2, 3, 4, 4, 1)
    np.testing.assert_allclose(coarse.sum(axis=(2, 3)) * 4, fine.sum(axis=(2, 3)))


def test_raw_file_follows_the_pdebench_layout(tmp_path):
    request = GenerateRequest(raw_dir=tmp_path, n_train=2, n_test=1, size=16, stored_size=8, seed=7, progress=False)
    path = write_raw(request, dtype=torch.float64)
    assert path.name == "2D_rdb_NA_NA.h5"
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["0000", "0001", "0002"]
        group = f["0002"]  # the first test trajectory comes after the training ones
        data = group["data"][...]
        assert data.dtype == np.float32 and data.shape == (101, 8, 8, 1)
        np.testing.assert_allclose(group["grid/t"][...], np.linspace(0, 1, 101), atol=1e-7)
        np.testing.assert_allclose(group["grid/x"][...], cell_centres(8, -2.5, 2.5), atol=1e-6)
        config = yaml.safe_load(group.attrs["config"])
    radius = sample_radius(trajectory_rng(7, NAME, "test", 0))
    assert 0.3 <= radius <= 0.7 and config["radius"] == pytest.approx(radius)
    fine = simulate_shallow_water(torch.from_numpy(dam_break_depth(radius, 16))[None], TIMES)
    expected = block_average(fine.numpy(), 2)[0]
    np.testing.assert_allclose(data[..., 0], expected, rtol=1e-6, atol=1e-6)


def test_an_unstable_run_stops_with_an_error_instead_of_writing_nan():
    h0 = torch.from_numpy(dam_break_depth(0.6, 16))[None]
    with pytest.raises(FloatingPointError, match="unstable"):
        simulate_shallow_water(h0, torch.tensor([0.0, 1.0], dtype=torch.float64), courant=4.0)
