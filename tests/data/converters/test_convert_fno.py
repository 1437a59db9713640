"""`fno` converter: MATLAB v7.3 (h5py) and v5 (scipy) vorticity files -> [N, X, Y, T] split files."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from moepot.data import protocol
from moepot.data.converters import convert
from moepot.errors import DataError

TRAIN = Path("data/large/ns2d_1e-5_train.hdf5")  # the original's output paths (raw-formats.md §1)
TEST = Path("data/large/ns2d_1e-5_test.hdf5")


def read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["data"]
        assert f["data"].dtype == np.float32
        return f["data"][()]


def expected_samples(raw, samples: range, s2: int = 6, s1: int = 8, t: int = 12) -> np.ndarray:
    """out[k, p, q, t] = MATLAB/h5py u[t, p, q, n] with n = samples[k] (permutation (3, 1, 2, 0))."""
    return raw.from_code(
        lambda k, p, q, ti: raw.fno_code(k + samples.start, ti, p, q), (len(samples), s2, s1, t)
    )


@pytest.mark.parametrize(("n_train", "n_test"), [(4, 1), (2, 2), (5, 0)])
def test_v73_element_placement_and_split(raw, raw_dir, data_root, n_train, n_test):
    mat = raw.write_fno_v73(raw_dir / "NavierStokes_V1e-5_N1200_T20.mat")
    paths = convert(
        "fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=n_train, n_test=n_test, progress=False
    )
    assert paths == [data_root / TRAIN, data_root / TEST]
    train, test = read(data_root / TRAIN), read(data_root / TEST)
    assert train.shape == (n_train, 6, 8, 12) and test.shape == (n_test, 6, 8, 12)
    np.testing.assert_array_equal(train, expected_samples(raw, range(0, n_train)))
    np.testing.assert_array_equal(test, expected_samples(raw, range(5 - n_test, 5)))  # the LAST n_test


def test_v5_file_lands_like_the_v73_file(raw, raw_dir, tmp_path):
    """Both files hold the same MATLAB array; (0, 2, 1, 3) on v5 must match (3, 1, 2, 0) on v7.3."""
    outputs = {}
    for kind, writer in (("v73", raw.write_fno_v73), ("v5", raw.write_fno_v5)):
        root = tmp_path / kind
        writer(raw_dir / f"{kind}.mat")
        convert(
            "fno",
            raw_dir / f"{kind}.mat",
            name="ns2d_fno_1e-5",
            data_root=root,
            n_train=3,
            n_test=2,
            progress=False,
        )
        outputs[kind] = (read(root / TRAIN), read(root / TEST))
    np.testing.assert_array_equal(outputs["v5"][0], expected_samples(raw, range(0, 3)))
    np.testing.assert_array_equal(outputs["v5"][1], outputs["v73"][1])


def test_default_split_is_the_catalogue_sizes(raw, raw_dir, data_root):
    """ns2d_fno_1e-5: 1200 samples -> first 1000 train, last 200 test."""
    mat = raw.write_fno_v73(raw_dir / "v.mat", n=1200, t=3, s2=2, s1=3)
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, progress=False)
    train, test = read(data_root / TRAIN), read(data_root / TEST)
    assert train.shape == (1000, 2, 3, 3) and test.shape == (200, 2, 3, 3)
    sample_ids = np.rint(np.concatenate([train, test])[:, 0, 0, 0] / 1_000_000)
    np.testing.assert_array_equal(sample_ids, np.arange(1200))


def test_streams_in_blocks(raw, raw_dir, data_root, monkeypatch):
    """With a tiny block budget every block is one sample and the result is unchanged."""
    from moepot.data.converters import outputs

    monkeypatch.setattr(outputs, "BLOCK_BYTES", 1)
    mat = raw.write_fno_v73(raw_dir / "v.mat")
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=1, progress=False)
    np.testing.assert_array_equal(read(data_root / TRAIN), expected_samples(raw, range(0, 4)))


def test_interrupted_write_leaves_nothing_and_rerun_completes(raw, raw_dir, data_root, monkeypatch):
    mat = raw.write_fno_v73(raw_dir / "v.mat")
    original_write = protocol.SingleWriter.write
    calls = []

    def failing_write(self, index, sample):
        calls.append(index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original_write(self, index, sample)

    monkeypatch.setattr(protocol.SingleWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=1, progress=False)
    out_dir = data_root / TRAIN.parent
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    monkeypatch.setattr(protocol.SingleWriter, "write", original_write)
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=1, progress=False)
    np.testing.assert_array_equal(read(data_root / TRAIN), expected_samples(raw, range(0, 4)))


def test_rerun_keeps_finished_files(raw, raw_dir, data_root):
    mat = raw.write_fno_v73(raw_dir / "v.mat")
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=1, progress=False)
    before = (data_root / TRAIN).stat().st_ino, (data_root / TEST).stat().st_ino
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=1, progress=False)
    assert ((data_root / TRAIN).stat().st_ino, (data_root / TEST).stat().st_ino) == before
    # a different split is not "finished": the file is rewritten
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=3, n_test=1, progress=False)
    assert read(data_root / TRAIN).shape[0] == 3


def test_rerun_with_other_raw_data_of_the_same_shape_rewrites(raw, raw_dir, data_root):
    mat = raw.write_fno_v73(raw_dir / "v.mat")
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=1, progress=False)
    with h5py.File(mat, "r+") as f:
        f["u"][...] = 7.0
    os.utime(mat, ns=(0, mat.stat().st_mtime_ns + 10**9))  # file systems with coarse clocks
    convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=1, progress=False)
    assert (read(data_root / TRAIN) == 7.0).all() and (read(data_root / TEST) == 7.0).all()


def test_too_few_samples_names_file_and_key(raw, raw_dir, data_root):
    mat = raw.write_fno_v73(raw_dir / "v.mat")
    with pytest.raises(DataError, match=r"v\.mat.*'u' holds 5 sample.*4 \+ 2"):
        convert("fno", mat, name="ns2d_fno_1e-5", data_root=data_root, n_train=4, n_test=2, progress=False)


def test_missing_variable_u(raw_dir, data_root):
    path = raw_dir / "other.mat"
    with h5py.File(path, "w") as f:
        f["w"] = np.zeros((3, 4, 5, 6), np.float32)
    with pytest.raises(DataError, match=r"other\.mat.*no variable 'u'.*'w'"):
        convert("fno", path, name="ns2d_fno_1e-5", data_root=data_root, progress=False)


def test_wrong_rank(raw_dir, data_root):
    path = raw_dir / "rank3.mat"
    with h5py.File(path, "w") as f:
        f["u"] = np.zeros((3, 4, 5), np.float32)
    with pytest.raises(DataError, match=r"rank3\.mat.*'u' has shape \(3, 4, 5\).*4 axes"):
        convert("fno", path, name="ns2d_fno_1e-5", data_root=data_root, progress=False)


def test_not_a_mat_file(raw_dir, data_root):
    path = raw_dir / "notes.mat"
    path.write_text("just text")
    with pytest.raises(DataError, match=r"notes\.mat.*not a MATLAB"):
        convert("fno", path, name="ns2d_fno_1e-5", data_root=data_root, progress=False)


@pytest.mark.parametrize("content", [b"", b"tiny", bytes(range(200))])
def test_short_or_random_file_is_not_a_mat_file(raw_dir, data_root, content):
    path = raw_dir / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"notes\.txt.*not a MATLAB"):
        convert("fno", path, name="ns2d_fno_1e-5", data_root=data_root, progress=False)


def test_entry_of_another_storage_kind_is_refused(raw, raw_dir, data_root):
    mat = raw.write_fno_v73(raw_dir / "v.mat")
    with pytest.raises(DataError, match="swe_pdb"):
        convert("fno", mat, name="swe_pdb", data_root=data_root, progress=False)
