"""`pdebench-cfd`, `pdebench-swe`, `pdebench-dr` converters: raw PDEBench HDF5 -> scatter splits."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from moepot.data import protocol
from moepot.data.converters import convert
from moepot.errors import DataError

PDEBENCH = Path("data/large/pdebench")  # the original's output root (raw-formats.md §1)


def read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["data"]
        assert f["data"].dtype == np.float32
        return f["data"][()]


def scatter_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def names(n: int) -> list[str]:
    return sorted(f"data_{i}.hdf5" for i in range(n))


# ---------------------------------------------------------------------------------------------
# compressible NS


def test_cfd_2d_default_split_channels_and_axes(raw, raw_dir, data_root):
    """N = 10 -> train 0..8, test 9; per file [X, Y, T, 4] in order [Vx, Vy, density, pressure]."""
    src = raw.write_pdebench_cfd(raw_dir / "2D_CFD_Rand_M1.0_Eta0.1_Zeta0.1_periodic_128_Train.hdf5")
    name = "ns2d_pdb_M1_eta1e-1_zeta1e-1"
    convert("pdebench-cfd", src, name=name, data_root=data_root, progress=False)
    out = data_root / PDEBENCH / name
    assert scatter_files(out / "train") == names(9)
    assert scatter_files(out / "test") == names(1)
    raw_order = ("Vx", "Vy", "density", "pressure")
    for split, index, sample in (("train", 0, 0), ("train", 8, 8), ("test", 0, 9)):
        data = read(out / split / f"data_{index}.hdf5")
        assert data.shape == (8, 6, 21, 4)
        for channel, field in enumerate(("Vx", "Vy", "density", "pressure")):
            c = raw_order.index(field)
            expected = raw.from_code(lambda x, y, t, c=c, n=sample: raw.cfd_code(c, n, t, x, y), (8, 6, 21))
            np.testing.assert_array_equal(data[..., channel], expected)


def test_cfd_3d_swaps_pressure_and_density(raw, raw_dir, data_root):
    """3-D: [X, Y, Z, T, 5] in order [Vx, Vy, Vz, pressure, density]."""
    src = raw.write_pdebench_cfd(
        raw_dir / "3D_CFD_Rand_M1.0_Eta1e-08_Zeta1e-08_periodic_Train.hdf5", t=5, spatial=(4, 3, 2)
    )
    convert("pdebench-cfd", src, name="ns3d_pdb_M1_rand", data_root=data_root, progress=False)
    out = data_root / PDEBENCH / "ns3d_pdb_M1_rand"
    data = read(out / "test" / "data_0.hdf5")
    assert data.shape == (4, 3, 2, 5, 5)
    raw_order = ("Vx", "Vy", "Vz", "density", "pressure")
    for channel, field in enumerate(("Vx", "Vy", "Vz", "pressure", "density")):
        c = raw_order.index(field)
        expected = raw.from_code(lambda x, y, z, t, c=c: raw.cfd_code(c, 9, t, x, y, z), (4, 3, 2, 5))
        np.testing.assert_array_equal(data[..., channel], expected)


def test_cfd_overrides_take_first_n_train_then_next_n_test(raw, raw_dir, data_root):
    src = raw.write_pdebench_cfd(raw_dir / "cfd.hdf5", t=3)
    name = "ns2d_pdb_M1_eta1e-1_zeta1e-1"
    convert("pdebench-cfd", src, name=name, data_root=data_root, n_train=3, n_test=2, progress=False)
    out = data_root / PDEBENCH / name
    assert scatter_files(out / "train") == names(3) and scatter_files(out / "test") == names(2)
    for split, index, sample in (("train", 2, 2), ("test", 0, 3), ("test", 1, 4)):
        assert read(out / split / f"data_{index}.hdf5")[1, 2, 0, 0] == raw.cfd_code(0, sample, 0, 1, 2)


def test_cfd_missing_field_names_file_and_key(raw_dir, data_root):
    path = raw_dir / "partial.hdf5"
    with h5py.File(path, "w") as f:
        for key in ("Vx", "Vy", "density"):
            f[key] = np.zeros((10, 3, 4, 5), np.float32)
    with pytest.raises(DataError, match=r"partial\.hdf5.*missing dataset.*'pressure'"):
        convert(
            "pdebench-cfd", path, name="ns2d_pdb_M1_eta1e-1_zeta1e-1", data_root=data_root, progress=False
        )


def test_cfd_3d_file_for_a_2d_entry_is_refused(raw, raw_dir, data_root):
    src = raw.write_pdebench_cfd(raw_dir / "3d.hdf5", t=5, spatial=(4, 3, 2))
    with pytest.raises(DataError, match=r"3d\.hdf5.*5 channel.*n_channels = 4"):
        convert("pdebench-cfd", src, name="ns2d_pdb_M1_eta1e-1_zeta1e-1", data_root=data_root, progress=False)


def test_cfd_too_few_samples(raw, raw_dir, data_root):
    src = raw.write_pdebench_cfd(raw_dir / "cfd.hdf5", t=3)
    with pytest.raises(DataError, match=r"cfd\.hdf5.*'Vx' holds 10 sample.*8 \+ 3"):
        convert(
            "pdebench-cfd",
            src,
            name="ns2d_pdb_M1_eta1e-1_zeta1e-1",
            data_root=data_root,
            n_train=8,
            n_test=3,
            progress=False,
        )


def test_scatter_resume_writes_only_missing_files(raw, raw_dir, data_root, monkeypatch):
    """Interrupt after 4 files; the rerun writes the other 6 and leaves the 4 untouched."""
    src = raw.write_pdebench_cfd(raw_dir / "cfd.hdf5", t=3)
    name = "ns2d_pdb_M1_eta1e-1_zeta1e-1"
    original_write = protocol.write_sample
    written: list[str] = []

    def counting_write(path, array, origin=None):
        if len(written) == 4 and not resumed:
            raise KeyboardInterrupt
        written.append(Path(path).name)
        return original_write(path, array, origin)

    monkeypatch.setattr(protocol, "write_sample", counting_write)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        convert("pdebench-cfd", src, name=name, data_root=data_root, progress=False)
    train_dir = data_root / PDEBENCH / name / "train"
    assert scatter_files(train_dir) == names(4)  # no temporary leftovers
    inodes = {p.name: p.stat().st_ino for p in train_dir.iterdir()}
    resumed = True
    convert("pdebench-cfd", src, name=name, data_root=data_root, progress=False)
    assert len(written) == 10
    assert {p.name: p.stat().st_ino for p in train_dir.iterdir() if p.name in inodes} == inodes
    assert read(train_dir / "data_7.hdf5")[0, 0, 0, 0] == raw.cfd_code(0, 7, 0, 0, 0)


def test_rerun_with_another_split_rewrites_and_drops_stale_files(raw, raw_dir, data_root):
    """A rerun with another --n-train keeps no file of the first split: test file k is raw sample
    n_train + k, and files beyond the new counts are gone (the reader counts files)."""
    src = raw.write_pdebench_cfd(raw_dir / "cfd.hdf5", t=3)
    name = "ns2d_pdb_M1_eta1e-1_zeta1e-1"
    out = data_root / PDEBENCH / name
    convert("pdebench-cfd", src, name=name, data_root=data_root, n_train=8, n_test=2, progress=False)
    convert("pdebench-cfd", src, name=name, data_root=data_root, n_train=6, progress=False)
    assert scatter_files(out / "train") == names(6) and scatter_files(out / "test") == names(4)
    for split, index, sample in (("train", 5, 5), ("test", 0, 6), ("test", 3, 9)):
        assert read(out / split / f"data_{index}.hdf5")[0, 0, 0, 0] == raw.cfd_code(0, sample, 0, 0, 0)
    assert protocol.read_origin(out / "test" / "data_0.hdf5").endswith("sample 6")


def test_rerun_with_other_raw_data_rewrites_the_files(raw, raw_dir, data_root):
    """Other raw data at the same path (a regenerated file: other size or time) replaces the outputs."""
    src = raw.write_pdebench_cfd(raw_dir / "cfd.hdf5", t=3)
    name = "ns2d_pdb_M1_eta1e-1_zeta1e-1"
    convert("pdebench-cfd", src, name=name, data_root=data_root, progress=False)
    with h5py.File(src, "r+") as f:
        f["Vx"][...] = -1.0
    os.utime(src, ns=(0, src.stat().st_mtime_ns + 10**9))  # file systems with coarse clocks
    convert("pdebench-cfd", src, name=name, data_root=data_root, progress=False)
    out = data_root / PDEBENCH / name
    assert read(out / "train" / "data_3.hdf5")[..., 0].max() == -1.0
    assert read(out / "test" / "data_0.hdf5")[..., 0].max() == -1.0


def test_n_train_beyond_the_file_names_the_file(raw, raw_dir, data_root):
    src = raw.write_pdebench_cfd(raw_dir / "cfd.hdf5", t=3)
    with pytest.raises(DataError, match=r"cfd\.hdf5: 'Vx' holds 10 sample.*12 \+ 0"):
        convert("pdebench-cfd", src, name="ns2d_pdb_M1_eta1e-1_zeta1e-1", data_root=data_root, n_train=12,
                progress=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# shallow water and diffusion-reaction


def test_swe_groups_to_x_y_t_c(raw, raw_dir, data_root):
    src = raw.write_pdebench_grouped(raw_dir / "2D_rdb_NA_NA.h5", data_shape=(11, 8, 6, 1))
    convert("pdebench-swe", src, name="swe_pdb", data_root=data_root, progress=False)
    out = data_root / PDEBENCH / "swe_pdb"
    assert scatter_files(out / "train") == names(9) and scatter_files(out / "test") == names(1)
    for split, index, group in (("train", 0, 0), ("train", 5, 5), ("test", 0, 9)):
        data = read(out / split / f"data_{index}.hdf5")
        expected = raw.from_code(lambda x, y, t, c, g=group: raw.group_code(g, t, x, y, c), (8, 6, 11, 1))
        np.testing.assert_array_equal(data, expected)


def test_dr_keeps_generator_order_with_lzf(raw, raw_dir, data_root):
    """DR data [T, Ny, Nx, 2] (LZF) -> [Ny, Nx, T, 2], channels [u, v]."""
    src = raw.write_pdebench_grouped(
        raw_dir / "2D_diff-react_NA_NA.h5", data_shape=(11, 6, 8, 2), compression="lzf"
    )
    convert("pdebench-dr", src, name="dr_pdb", data_root=data_root, n_train=4, n_test=3, progress=False)
    out = data_root / PDEBENCH / "dr_pdb"
    assert scatter_files(out / "train") == names(4) and scatter_files(out / "test") == names(3)
    data = read(out / "test" / "data_2.hdf5")  # group 4 + 2 = 6
    expected = raw.from_code(lambda a, b, t, c: raw.group_code(6, t, a, b, c), (6, 8, 11, 2))
    np.testing.assert_array_equal(data, expected)


def test_grouped_gap_in_numbering_names_the_group(raw, raw_dir, data_root):
    src = raw.write_pdebench_grouped(raw_dir / "2D_rdb_NA_NA.h5", n=4, data_shape=(3, 4, 5, 1))
    with h5py.File(src, "r+") as f:
        f.move("0002", "0007")
    with pytest.raises(DataError, match=r"2D_rdb_NA_NA\.h5.*no group '0002'"):
        convert("pdebench-swe", src, name="swe_pdb", data_root=data_root, progress=False)


def test_grouped_other_root_members_are_ignored(raw, raw_dir, data_root):
    src = raw.write_pdebench_grouped(raw_dir / "2D_rdb_NA_NA.h5", n=4, data_shape=(3, 4, 5, 1))
    with h5py.File(src, "r+") as f:
        f.attrs["note"] = "x"
        f["readme"] = np.zeros(3)
    convert("pdebench-swe", src, name="swe_pdb", data_root=data_root, n_train=3, progress=False)
    out = data_root / PDEBENCH / "swe_pdb"
    assert scatter_files(out / "train") == names(3) and scatter_files(out / "test") == names(1)


def test_grouped_wrong_kind_of_file(raw, raw_dir, data_root):
    src = raw.write_pdebench_cfd(raw_dir / "cfd.hdf5", t=3)
    with pytest.raises(DataError, match=r"cfd\.hdf5.*no group '0000'.*2D_rdb_NA_NA\.h5"):
        convert("pdebench-swe", src, name="swe_pdb", data_root=data_root, progress=False)


def test_grouped_channel_count_checked_against_entry(raw, raw_dir, data_root):
    src = raw.write_pdebench_grouped(raw_dir / "2D_diff-react_NA_NA.h5", n=3, data_shape=(3, 4, 5, 2))
    with pytest.raises(DataError, match=r"'0000/data' gives 2 channel.*'swe_pdb' expects n_channels = 1"):
        convert("pdebench-swe", src, name="swe_pdb", data_root=data_root, progress=False)


def test_grouped_inconsistent_sample_shape(raw, raw_dir, data_root):
    src = raw.write_pdebench_grouped(raw_dir / "2D_rdb_NA_NA.h5", n=3, data_shape=(3, 4, 5, 1))
    with h5py.File(src, "r+") as f:
        del f["0001/data"]
        f["0001/data"] = np.zeros((2, 4, 5, 1), np.float32)
    with pytest.raises(DataError, match=r"'0001/data' has shape \(2, 4, 5, 1\)"):
        convert("pdebench-swe", src, name="swe_pdb", data_root=data_root, progress=False)


def test_not_hdf5(raw_dir, data_root):
    path = raw_dir / "2D_rdb_NA_NA.h5"
    path.write_text("not hdf5")
    with pytest.raises(DataError, match=r"2D_rdb_NA_NA\.h5: not a readable HDF5 file"):
        convert("pdebench-swe", path, name="swe_pdb", data_root=data_root, progress=False)
