"""`pdearena-ns` and `pdearena-sw` converters: PDEArena folders -> scatter splits."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from moepot.data.converters import convert
from moepot.errors import DataError

PDEARENA = Path("data/large/pdearena")  # the original's output root (raw-formats.md §1)


def read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["data"]
        assert f["data"].dtype == np.float32
        return f["data"][()]


def file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def ns_expected(raw, file_id: int, k: int, t: int = 14, x: int = 8, y: int = 6) -> np.ndarray:
    """[X, Y, T, 3] in channel order [u, vx, vy] for trajectory k of file ``file_id``."""
    return raw.from_code(lambda xi, yi, ti, c: raw.arena_code(file_id, c, k, ti, xi, yi), (x, y, t, 3))


@pytest.fixture
def ns_folder(raw, tmp_path) -> Path:
    """Standard layout; the folder name contains 'test' (classification must use file names only)."""
    root = tmp_path / "NavierStokes-2D_test_copy"
    raw.write_pdearena_ns_file(root / "NavierStokes2D_valid_242_0.50000.h5", "valid", file_id=2)
    raw.write_pdearena_ns_file(root / "NavierStokes2D_train_142_0.50000_2.h5", "train", file_id=1)
    raw.write_pdearena_ns_file(root / "sub" / "NavierStokes2D_test_342_0.50000.h5", "test", file_id=3)
    return root


def test_ns_valid_joins_train_and_numbering_follows_sorted_files(raw, ns_folder, data_root):
    paths = convert("pdearena-ns", ns_folder, name="ns2d_pda", data_root=data_root, progress=False)
    out = data_root / PDEARENA / "ns2d_pda"
    assert file_names(out / "train") == [f"data_{i}.hdf5" for i in range(4)]
    assert file_names(out / "test") == ["data_0.hdf5", "data_1.hdf5"]
    assert len(paths) == 6
    # sorted: ..._train_... before ..._valid_...
    for index, (file_id, k) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1)]):
        np.testing.assert_array_equal(
            read(out / "train" / f"data_{index}.hdf5"), ns_expected(raw, file_id, k)
        )
    np.testing.assert_array_equal(read(out / "test" / "data_1.hdf5"), ns_expected(raw, 3, 1))


def test_ns_conditioned_variant_and_caps(raw, tmp_path, data_root):
    root = tmp_path / "NavierStokes-2D-conditoned"
    raw.write_pdearena_ns_file(root / "NavierStokes2D_train_1_0.31000_4.h5", "train", file_id=1, n=4, t=12)
    raw.write_pdearena_ns_file(root / "NavierStokes2D_test_2_0.42000.h5", "test", file_id=2, n=3, t=12)
    convert(
        "pdearena-ns", root, name="ns2d_cond_pda", data_root=data_root, n_train=3, n_test=1, progress=False
    )
    out = data_root / PDEARENA / "ns2d_cond_pda"
    assert file_names(out / "train") == [f"data_{i}.hdf5" for i in range(3)]
    assert file_names(out / "test") == ["data_0.hdf5"]
    np.testing.assert_array_equal(read(out / "train" / "data_2.hdf5"), ns_expected(raw, 1, 2, t=12))
    with pytest.raises(DataError, match=r"'test files' holds 3 sample.*needs.*5"):
        convert("pdearena-ns", root, name="ns2d_cond_pda", data_root=data_root, n_test=5, progress=False)


def test_ns_file_name_without_split(raw, tmp_path, data_root):
    root = tmp_path / "ns"
    raw.write_pdearena_ns_file(root / "NavierStokes2D_other_1_0.5.h5", "train", file_id=1)
    with pytest.raises(DataError, match=r"NavierStokes2D_other_1_0\.5\.h5: file name names no split"):
        convert("pdearena-ns", root, name="ns2d_pda", data_root=data_root, progress=False)


def test_ns_group_and_field_errors(raw, tmp_path, data_root):
    root = tmp_path / "ns"
    path = raw.write_pdearena_ns_file(root / "NavierStokes2D_test_1_0.5.h5", "valid", file_id=1)
    with pytest.raises(
        DataError, match=r"NavierStokes2D_test_1_0\.5\.h5: no group 'test' \(found \['valid'\]\)"
    ):
        convert("pdearena-ns", root, name="ns2d_pda", data_root=data_root, progress=False)
    path.unlink()
    path = raw.write_pdearena_ns_file(root / "NavierStokes2D_test_1_0.5.h5", "test", file_id=1)
    with h5py.File(path, "r+") as f:
        del f["test/vy"]
    with pytest.raises(DataError, match=r"group 'test' lacks \['vy'\]"):
        convert("pdearena-ns", root, name="ns2d_pda", data_root=data_root, progress=False)


def test_ns_entry_with_other_channel_count(ns_folder, data_root):
    with pytest.raises(DataError, match=r"3 channel.*'sw2d_pda' expects n_channels = 5"):
        convert("pdearena-ns", ns_folder, name="sw2d_pda", data_root=data_root, progress=False)


def test_sw_runs_split_by_folder(raw, tmp_path, data_root):
    root = tmp_path / "ShallowWater-2D"
    raw.write_pdearena_sw_run(root / "train" / "seed=1" / "run0001" / "output.nc", run_id=1)
    raw.write_pdearena_sw_run(root / "train" / "seed=1" / "run0002" / "output.nc", run_id=2)
    raw.write_pdearena_sw_run(root / "valid" / "seed=1" / "run0001" / "output.nc", run_id=3)
    raw.write_pdearena_sw_run(root / "test" / "seed=1" / "run0001" / "output.nc", run_id=4)
    convert("pdearena-sw", root, name="sw2d_pda", data_root=data_root, progress=False)
    out = data_root / PDEARENA / "sw2d_pda"
    assert file_names(out / "train") == ["data_0.hdf5", "data_1.hdf5", "data_2.hdf5"]
    assert file_names(out / "test") == ["data_0.hdf5"]
    for split, index, run_id in (("train", 0, 1), ("train", 1, 2), ("train", 2, 3), ("test", 0, 4)):
        data = read(out / split / f"data_{index}.hdf5")
        expected = raw.from_code(lambda h, w, t, c, r=run_id: raw.sw_code(r, c, t, h, w), (4, 6, 5, 5))
        np.testing.assert_array_equal(data, expected)  # order [u, v, div, vor, pres]


def test_sw_rerun_with_another_run_added_renumbers_runs_of_equal_size_and_time(raw, tmp_path, data_root):
    """Every run is an output.nc of the same size; copied trees share mtimes too. The origin names
    the path under the raw folder, so a run added before the others moves every file along."""
    import os

    root = tmp_path / "ShallowWater-2D"
    later = raw.write_pdearena_sw_run(root / "train" / "seed=2" / "run0001" / "output.nc", run_id=2)
    os.utime(later, ns=(10**18, 10**18))
    convert("pdearena-sw", root, name="sw2d_pda", data_root=data_root, progress=False)
    earlier = raw.write_pdearena_sw_run(root / "train" / "seed=1" / "run0001" / "output.nc", run_id=1)
    os.utime(earlier, ns=(10**18, 10**18))  # same name, size and time as the first run
    convert("pdearena-sw", root, name="sw2d_pda", data_root=data_root, progress=False)
    out = data_root / PDEARENA / "sw2d_pda" / "train"
    for index, run_id in ((0, 1), (1, 2)):
        expected = raw.from_code(lambda h, w, t, c, r=run_id: raw.sw_code(r, c, t, h, w), (4, 6, 5, 5))
        np.testing.assert_array_equal(read(out / f"data_{index}.hdf5"), expected)


def test_sw_missing_variable(raw, tmp_path, data_root):
    path = raw.write_pdearena_sw_run(tmp_path / "sw" / "test" / "seed=1" / "run0001" / "output.nc", run_id=1)
    with h5py.File(path, "r+") as f:
        del f["pres"]
    with pytest.raises(DataError, match=r"output\.nc: missing variable\(s\) \['pres'\]"):
        convert("pdearena-sw", tmp_path / "sw", name="sw2d_pda", data_root=data_root, progress=False)


def test_raw_path_must_be_a_folder(raw, tmp_path, data_root):
    path = raw.write_pdearena_ns_file(tmp_path / "NavierStokes2D_test_1_0.5.h5", "test", file_id=1)
    with pytest.raises(DataError, match=r"is not a directory; expected a PDEArena NavierStokes2D folder"):
        convert("pdearena-ns", path, name="ns2d_pda", data_root=data_root, progress=False)


def test_ns_test_in_the_file_name_wins_over_train(raw, tmp_path, data_root):
    """raw-formats.md §8.2: a file name is checked for 'test' before 'train' (and 'valid'), so a test
    file whose name also contains 'train' (here in 'retrained') is a test file read from group 'test'."""
    root = tmp_path / "ns"
    raw.write_pdearena_ns_file(root / "NavierStokes2D_train_1_0.50000_2.h5", "train", file_id=1)
    raw.write_pdearena_ns_file(root / "NavierStokes2D_test_2_0.50000_retrained.h5", "test", file_id=2)
    raw.write_pdearena_ns_file(root / "NavierStokes2D_valid_3_0.50000_train.h5", "train", file_id=3)
    convert("pdearena-ns", root, name="ns2d_pda", data_root=data_root, progress=False)
    out = data_root / PDEARENA / "ns2d_pda"
    assert file_names(out / "test") == ["data_0.hdf5", "data_1.hdf5"]
    np.testing.assert_array_equal(read(out / "test" / "data_1.hdf5"), ns_expected(raw, 2, 1))
    assert file_names(out / "train") == [f"data_{i}.hdf5" for i in range(4)]
    # 'train' is checked before 'valid': the valid file named ..._train.h5 is read from group 'train'
    np.testing.assert_array_equal(read(out / "train" / "data_2.hdf5"), ns_expected(raw, 3, 0))
