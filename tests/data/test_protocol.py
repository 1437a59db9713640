"""The HDF5 protocol: writers round-trip, readers accept the original's files, lazy per-process
handles, and hostile files give one clear DataError naming the file (and sample)."""

from __future__ import annotations

import multiprocessing
import pickle

import h5py
import numpy as np
import pytest

from moepot.data.protocol import SampleReader, SingleWriter, sample_file_name, write_sample, write_single
from moepot.errors import DataError

RNG = np.random.default_rng(0)


def test_write_single_round_trip_float32_chunked_per_sample(tmp_path):
    array = RNG.standard_normal((3, 8, 6, 5, 2))  # float64 in
    path = write_single(tmp_path / "split.hdf5", array)
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["data"]
        assert f["data"].dtype == np.float32
        assert f["data"].chunks == (1, 8, 6, 5, 2)
    reader = SampleReader(path, scatter=False)
    assert len(reader) == 3
    for i in range(3):
        out = reader.read(i)
        assert out.dtype == np.float32 and out.shape == (8, 6, 5, 2)
        np.testing.assert_array_equal(out, array[i].astype(np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["split.hdf5"]  # atomic: no temporary left


def test_write_sample_scatter_round_trip(tmp_path):
    samples = [RNG.standard_normal((8, 6, 5, 3)).astype(np.float32) for _ in range(4)]
    for i, sample in enumerate(samples):
        write_sample(tmp_path / "train" / sample_file_name(i), sample)
    reader = SampleReader(tmp_path / "train", scatter=True)
    assert len(reader) == 4
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(reader.read(i), sample)
    info = reader.info()
    assert (info.n_samples, info.sample_shape, info.missing) == (4, (8, 6, 5, 3), ())


def test_single_writer_streams_and_refuses_partial_files(tmp_path):
    array = RNG.standard_normal((3, 4, 5, 6, 1)).astype(np.float32)
    with SingleWriter(tmp_path / "s.hdf5", 3, (4, 5, 6, 1)) as writer:
        for i in (2, 0, 1):
            writer.write(i, array[i])
    np.testing.assert_array_equal(np.stack(list(SampleReader(tmp_path / "s.hdf5", False))), array)
    with pytest.raises(DataError, match="1 of 2 samples were never written"), \
            SingleWriter(tmp_path / "partial.hdf5", 2, (4, 5, 6, 1)) as writer:
        writer.write(0, array[0])
    with pytest.raises(DataError, match=r"sample 0 has shape \(4, 5, 6\)"), \
            SingleWriter(tmp_path / "wrong.hdf5", 1, (4, 5, 6, 1)) as writer:
        writer.write(0, array[0, ..., 0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.hdf5"]


def test_writers_refuse_nan_and_low_rank(tmp_path):
    bad = np.zeros((2, 4, 4, 3, 1))
    bad[1, 2, 3, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"1 NaN/Inf.*\(1, 2, 3, 0, 0\)"):
        write_single(tmp_path / "nan.hdf5", bad)
    bad[1, 2, 3, 0, 0] = -np.inf
    with pytest.raises(DataError, match=r"1 NaN/Inf.*\(2, 3, 0, 0\)"):
        write_sample(tmp_path / "inf.hdf5", bad[1])
    with pytest.raises(DataError, match="expected an array"):
        write_sample(tmp_path / "low.hdf5", np.zeros((4, 4)))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("scatter", [False, True])
def test_reader_accepts_original_files_without_channel_axis_in_float64(tmp_path, write_h5, scatter):
    array = RNG.standard_normal((3, 8, 6, 7))  # [N, X, Y, T], float64, unchunked (the FNO sets)
    if scatter:
        for i in range(3):
            write_h5(tmp_path / "d" / f"data_{i}.hdf5", array[i])
        path = tmp_path / "d"
    else:
        path = write_h5(tmp_path / "f.hdf5", array)
    reader = SampleReader(path, scatter)
    assert reader.info().channel_axis is False
    out = reader.read(1)
    assert out.shape == (8, 6, 7, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], array[1].astype(np.float32))


def test_reader_is_lazy_and_keeps_the_file_open(tmp_path):
    path = write_single(tmp_path / "f.hdf5", RNG.standard_normal((5, 4, 4, 3, 1)))
    reader = SampleReader(path, scatter=False)
    assert len(reader) == 5  # header read in a with-block
    assert not reader.is_open and reader.open_count == 0
    for i in range(5):
        reader.read(i)
    assert reader.is_open and reader.open_count == 1
    clone = pickle.loads(pickle.dumps(reader))  # spawn workers / DDP receive a pickled reader
    assert not clone.is_open
    np.testing.assert_array_equal(clone.read(4), reader.read(4))
    reader.close()
    assert not reader.is_open


def test_scatter_reader_bounds_its_open_files(tmp_path):
    for i in range(5):
        write_sample(tmp_path / sample_file_name(i), np.full((2, 2, 2, 1), float(i)))
    reader = SampleReader(tmp_path, scatter=True, max_open=2)
    assert [float(reader.read(i).mean()) for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert len(reader._handles) == 2


def test_scatter_reader_closes_the_least_recently_used_file(tmp_path):
    for i in range(3):
        write_sample(tmp_path / sample_file_name(i), np.full((2, 2, 2, 1), float(i)))
    reader = SampleReader(tmp_path, scatter=True, max_open=2)
    for i in (0, 1, 0, 2):  # 0 was used after 1: opening 2 closes 1
        reader.read(i)
    assert reader.open_count == 3
    assert float(reader.read(0).mean()) == 0.0 and reader.open_count == 3  # still open
    assert float(reader.read(1).mean()) == 1.0 and reader.open_count == 4  # reopened


def _read_in_child(reader: SampleReader, queue) -> None:
    queue.put((reader.read(2).tolist(), reader.open_count))


def test_forked_child_opens_its_own_handle(tmp_path):
    array = RNG.standard_normal((4, 3, 3, 2, 1)).astype(np.float32)
    path = write_single(tmp_path / "f.hdf5", array)
    reader = SampleReader(path, scatter=False)
    reader.read(0)
    reader.close()
    reader.read(0)  # the parent holds an open handle before forking, its second
    assert reader.open_count == 2
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(reader, queue))
    child.start()
    values, child_opens = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    np.testing.assert_array_equal(np.asarray(values, dtype=np.float32), array[2])
    assert child_opens == 1  # its own handle, not the inherited one
    np.testing.assert_array_equal(reader.read(3), array[3])  # the parent's handle still works


# ----------------------------------------------------------------------------------------------
# Hostile files


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere.hdf5: no such file"):
        SampleReader(tmp_path / "nothere.hdf5", False).read(0)
    with pytest.raises(DataError, match="scatter split directory does not exist"):
        len(SampleReader(tmp_path / "nodir", True))


def test_truncated_and_garbage_files(tmp_path):
    path = write_single(tmp_path / "t.hdf5", RNG.standard_normal((4, 16, 16, 8, 2)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t.hdf5") as info:
        SampleReader(path, False).read(3)
    assert "sample 3" in str(info.value) or "not a readable HDF5 file" in str(info.value)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"this is not HDF5 at all" * 10)
    with pytest.raises(DataError, match="junk.hdf5: not a readable HDF5 file"):
        SampleReader(junk, False).info()


def test_file_without_data_lists_what_it_has(tmp_path, write_h5):
    path = write_h5(tmp_path / "k.hdf5", np.zeros((2, 4, 4, 3)), key="u")
    with pytest.raises(DataError, match=r"k.hdf5: the 'data' array is missing \(found: u\)"):
        SampleReader(path, False).read(0)
    with h5py.File(tmp_path / "g.hdf5", "w") as f:
        f.create_group("data")
    with pytest.raises(DataError, match="'data' array is not a dataset"):
        SampleReader(tmp_path / "g.hdf5", False).info()


def test_wrong_rank_and_dtype(tmp_path, write_h5):
    path = write_h5(tmp_path / "r.hdf5", np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"r.hdf5: 'data' has shape \(2, 4, 4\); expected rank 5"):
        SampleReader(path, False).info()
    with pytest.raises(DataError, match="r.hdf5 sample 1: shape"):
        SampleReader(path, False).read(1)
    ints = write_h5(tmp_path / "i.hdf5", np.zeros((2, 4, 4, 3, 1), dtype=np.int32))
    with pytest.raises(DataError, match="i.hdf5: sample 0 has dtype int32"):
        SampleReader(ints, False).read(0)


def test_nan_and_inf_name_the_sample(tmp_path, write_h5):
    array = RNG.standard_normal((3, 4, 4, 3, 2))
    array[1, 0, 2, 1, 1] = np.inf
    array[1, 3, 3, 2, 0] = np.nan
    path = write_h5(tmp_path / "n.hdf5", array)
    reader = SampleReader(path, False)
    reader.read(0)
    with pytest.raises(DataError, match=r"n.hdf5: sample 1 has 2 NaN/Inf values \(first at \(0, 2, 1, 1\)"):
        reader.read(1)


def test_out_of_range_sample_and_scatter_gap(tmp_path):
    path = write_single(tmp_path / "f.hdf5", np.zeros((2, 2, 2, 2, 1)))
    with pytest.raises(DataError, match="sample 5 requested, the file holds 2"):
        SampleReader(path, False).read(5)
    for i in (0, 1, 3):
        write_sample(tmp_path / "s" / sample_file_name(i), np.zeros((2, 2, 2, 1)))
    reader = SampleReader(tmp_path / "s", True)
    assert len(reader) == 2 and reader.info().missing == (2,)
    with pytest.raises(DataError, match=r"data_2.hdf5: no such file \(reading sample 2\)"):
        reader.read(2)


# ----------------------------------------------------------------------------------------------
# Time windows


@pytest.mark.parametrize(("layout", "channel_axis"), [("ours_single", True), ("ours_scatter", True),
                                                      ("original_single", False), ("original_scatter", True)])
def test_window_read_is_the_slice_of_the_whole_sample(tmp_path, write_h5, layout, channel_axis):
    array = RNG.standard_normal((3, 6, 5, 9, 2) if channel_axis else (3, 6, 5, 9))
    scatter = layout.endswith("scatter")
    path = tmp_path / ("d" if scatter else "f.hdf5")
    for i in range(3) if scatter else ():
        (write_sample if layout.startswith("ours") else write_h5)(path / sample_file_name(i), array[i])
    if not scatter:
        (write_single if layout.startswith("ours") else write_h5)(path, array)
    reader = SampleReader(path, scatter)
    expected = array.astype(np.float32) if channel_axis else array.astype(np.float32)[..., None]
    for i in range(3):
        assert reader.sample_shape(i) == expected.shape[1:]
        for start, stop in [(0, 9), (2, 5), (8, 9), (4, 4)]:
            window = reader.read(i, steps=slice(start, stop))
            assert window.dtype == np.float32
            np.testing.assert_array_equal(window, expected[i, :, :, start:stop])
        np.testing.assert_array_equal(reader.read(i, steps=slice(None)), reader.read(i))


def test_window_outside_the_steps_names_file_and_sample(tmp_path):
    path = write_single(tmp_path / "f.hdf5", np.zeros((2, 3, 3, 6, 1)))
    reader = SampleReader(path, False)
    for bad in (slice(4, 7), slice(-1, 3), slice(3, 2), slice(0, 6, 2)):
        with pytest.raises(DataError, match=r"f.hdf5: sample 1 has 6 time steps; cannot read the window"):
            reader.read(1, steps=bad)
    with pytest.raises(DataError, match="sample 2 requested, the file holds 2"):
        reader.sample_shape(2)


def test_our_scatter_files_are_one_chunk_per_sample(tmp_path):
    path = write_sample(tmp_path / sample_file_name(0), RNG.standard_normal((8, 6, 5, 3)))
    with h5py.File(path, "r") as f:
        assert f["data"].chunks == (8, 6, 5, 3) and f["data"].dtype == np.float32
