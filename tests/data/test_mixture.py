"""The mixture dataset reproduces the original's windows, resizing, padding, masks and weights.

Truths used: a second, per-plane implementation of the original's item transform; a numpy
bilinear interpolation written from the align_corners=False definition; the stored arrays
themselves (windows must be contiguous slices of them); the original's index replication
built naively.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from moepot.data.mixture import (
    MixtureDataset,
    WeightedMixtureSampler,
    evaluation_mask,
    original_replicated_indices,
    resize_bilinear,
)
from moepot.errors import ConfigError, DataError

# ----------------------------------------------------------------------------------------------
# Independent implementations


def numpy_bilinear(plane: np.ndarray, out_x: int, out_y: int) -> np.ndarray:
    """Bilinear resize of ``plane: [X, Y]`` with half-pixel centres (align_corners=False)."""

    def axis(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, src - low

    lx, hx, wx = axis(plane.shape[0], out_x)
    ly, hy, wy = axis(plane.shape[1], out_y)
    top = plane[lx][:, ly] * (1 - wy) + plane[lx][:, hy] * wy
    bottom = plane[hx][:, ly] * (1 - wy) + plane[hx][:, hy] * wy
    return top * (1 - wx)[:, None] + bottom * wx[:, None]


def reference_item(stored: np.ndarray, *, res: int, n_channels: int, n_real: int, start: int, t_in: int, n_out: int):
    """The original's item, one plane at a time: window, resize, pad with ones, mask.

    ``stored: [X, Y, T, C]`` -> (x [res, res, t_in, n_channels], y [res, res, n_out, n_channels],
    mask [res, res, 1, n_channels]).
    """
    frames = stored[:, :, start:start + t_in + n_out]
    size_x, size_y, steps, channels = frames.shape
    out = np.ones((res, res, steps, n_channels))
    for t in range(steps):
        for c in range(channels):
            plane = torch.tensor(frames[:, :, t, c], dtype=torch.float32)[None, None]
            out[:, :, t, c] = F.interpolate(plane, size=(res, res), mode="bilinear", align_corners=False)[0, 0]
    k_x, k_y = res // size_x or 1, res // size_y or 1
    mask = np.zeros((res, res, 1, n_channels))
    for i in range(res):
        for j in range(res):
            for c in range(n_channels):
                mask[i, j, 0, c] = float(i % k_x == 0 and j % k_y == 0 and c < n_real)
    return out[:, :, :t_in], out[:, :, t_in:], mask


def find_window(trajectory: np.ndarray, window: np.ndarray) -> list[int]:
    """All starts s with trajectory[:, :, s:s+len] == window (trajectory, window: [X, Y, T, C])."""
    length = window.shape[2]
    return [s for s in range(trajectory.shape[2] - length + 1)
            if np.array_equal(trajectory[:, :, s:s + length].astype(np.float32), window)]


# ----------------------------------------------------------------------------------------------
# Transforms


@pytest.mark.parametrize(("size", "res"), [((8, 6), 16), ((7, 9), 4), ((5, 5), 12)])
def test_resize_matches_bilinear_definition(size, res):
    rng = np.random.default_rng(1)
    sample = rng.standard_normal((*size, 3, 2)).astype(np.float32)
    out = resize_bilinear(torch.from_numpy(sample), res).numpy()
    assert out.shape == (res, res, 3, 2)
    for t in range(3):
        for c in range(2):
            np.testing.assert_allclose(out[:, :, t, c], numpy_bilinear(sample[:, :, t, c].astype(np.float64), res, res),
                                       rtol=1e-5, atol=1e-5)


def test_resize_to_own_size_is_identity():
    sample = torch.randn(6, 6, 2, 3)
    np.testing.assert_array_equal(resize_bilinear(sample, 6).numpy(), sample.numpy())
    planes = sample.reshape(6, 6, 6).permute(2, 0, 1)[None]
    same = F.interpolate(planes, size=(6, 6), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(same[0].permute(1, 2, 0).reshape(6, 6, 2, 3).numpy(), sample.numpy())


@pytest.mark.parametrize(("res", "stored", "k"), [(16, (8, 8), (2, 2)), (16, (5, 6), (3, 2)), (4, (8, 6), (1, 1)),
                                                  (8, (8, 3), (1, 2))])
def test_evaluation_mask_rule(res, stored, k):
    mask = evaluation_mask(res, stored, n_channels=4, n_real=3).numpy()
    assert mask.shape == (res, res, 1, 4)
    expected_points = len(range(0, res, k[0])) * len(range(0, res, k[1]))
    assert mask[..., 0].sum() == expected_points and mask[..., 3].sum() == 0
    assert mask[0, 0, 0, :3].tolist() == [1, 1, 1]
    if k[0] > 1:
        assert mask[1, 0, 0, 0] == 0


# ----------------------------------------------------------------------------------------------
# The dataset against the reference transform


@pytest.fixture
def mixture_data(tiny_data):
    tiny_data.add("aa", n_train=3, n_test=2, size=(8, 8), steps=14, channels=2, t_in=4)
    tiny_data.add("bb", n_train=2, n_test=3, size=(8, 6), steps=12, channels=1, channel_axis=False,
                  scatter=True, t_in=4, t_test=5)
    tiny_data.add("cfd", n_train=2, n_test=2, size=(5, 5), steps=10, channels=3, pred_channels=2, t_in=4)
    return tiny_data


@pytest.mark.parametrize("res", [8, 16])
def test_test_split_matches_the_original_item(mixture_data, res):
    catalog = mixture_data.catalog()
    names = ["aa", "bb", "cfd"]
    dataset = MixtureDataset(names, split="test", res=res, t_in=4, catalog=catalog)
    assert dataset.n_channels == 3 and len(dataset) == 2 + 3 + 2
    assert dataset.dataset_offsets == (0, 2, 5, 7)
    for index in range(len(dataset)):
        d = int(np.searchsorted([2, 5, 7], index, side="right"))
        name = names[d]
        local = index - dataset.dataset_offsets[d]
        entry = catalog[name]
        stored = mixture_data.datasets[name].test[local]
        x, y, mask = reference_item(stored, res=res, n_channels=3, n_real=entry.pred_channels or stored.shape[-1],
                                    start=0, t_in=4, n_out=entry.t_test)
        sample = dataset[index]
        assert sample.x.dtype == torch.float32 and sample.x.shape == (res, res, 4, 3)
        assert sample.y.shape == (res, res, entry.t_test, 3)
        np.testing.assert_allclose(sample.x.numpy(), x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(sample.y.numpy(), y, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(sample.mask.numpy(), mask)
        assert int(sample.dataset_index) == d


def test_test_split_at_stored_resolution_is_the_stored_frames(mixture_data):
    dataset = MixtureDataset("aa", split="test", res=8, t_in=4, catalog=mixture_data.catalog())
    stored = mixture_data.datasets["aa"].test.astype(np.float32)
    for i in range(2):
        np.testing.assert_array_equal(dataset[i].x.numpy(), stored[i, :, :, :4])
        np.testing.assert_array_equal(dataset[i].y.numpy(), stored[i, :, :, 4:14])
        assert dataset[i].mask.numpy().all()


def test_padding_is_ones_and_masked_out(mixture_data):
    dataset = MixtureDataset(["bb", "cfd"], split="train", res=8, t_in=4, t_ar=2, catalog=mixture_data.catalog())
    sample = dataset[0]  # bb: one real channel, padded to 3
    assert (sample.x[..., 1:] == 1.0).all() and (sample.y[..., 1:] == 1.0).all()
    assert not (sample.x[..., 0] == 1.0).all()
    assert sample.mask[..., 1:].sum() == 0
    cfd = dataset[2]  # cfdbench-like: 3 real channels, only the first 2 scored
    assert cfd.mask[..., :2].sum() > 0 and cfd.mask[..., 2].sum() == 0


def test_training_windows_are_random_contiguous_and_reproducible(mixture_data):
    catalog = mixture_data.catalog()
    t_in, t_ar, steps = 4, 3, 14
    dataset = MixtureDataset("aa", split="train", res=8, t_in=t_in, t_ar=t_ar, catalog=catalog, seed=5)
    trajectories = mixture_data.datasets["aa"].train
    starts = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            sample = dataset[index]
            assert sample.x.shape == (8, 8, t_in, 2) and sample.y.shape == (8, 8, t_ar, 2)
            whole = torch.cat([sample.x, sample.y], dim=2).numpy()
            found = find_window(trajectories[index], whole)
            assert len(found) == 1
            starts.add(found[0])
    assert starts == set(range(steps - t_in - t_ar + 1))  # every valid start, none beyond
    dataset.set_epoch(3)
    first = [dataset[i].x for i in range(len(dataset))]
    again = MixtureDataset("aa", split="train", res=8, t_in=t_in, t_ar=t_ar, catalog=catalog, seed=5)
    again.set_epoch(3)
    for i in range(len(dataset)):
        assert torch.equal(first[i], again[i].x)


def test_every_draw_of_a_weighted_trajectory_has_its_own_window(mixture_data):
    """The original drew a window per replicated copy: a weight of 20 gives 20 windows an epoch."""
    catalog = mixture_data.catalog()
    t_in, t_ar = 4, 3
    dataset = MixtureDataset("aa", split="train", res=8, t_in=t_in, t_ar=t_ar, catalog=catalog, seed=5)
    trajectories = mixture_data.datasets["aa"].train
    sampler = WeightedMixtureSampler(dataset, [20], seed=5)
    starts: dict[int, set[int]] = {}
    for index in sampler:
        sample = dataset[index]
        item = index % len(dataset)
        assert int(sample.dataset_index) == 0
        found = find_window(trajectories[item], torch.cat([sample.x, sample.y], dim=2).numpy())
        assert len(found) == 1
        starts.setdefault(item, set()).add(found[0])
    assert len(starts) == len(dataset)
    span = 14 - t_in - t_ar + 1  # 8 possible starts: 20 draws of a trajectory hit several
    assert all(len(s) >= 4 for s in starts.values()) and all(max(s) < span for s in starts.values())


def test_copies_are_training_only_and_iteration_ends(mixture_data):
    catalog = mixture_data.catalog()
    test = MixtureDataset("aa", split="test", res=8, t_in=4, catalog=catalog)
    with pytest.raises(IndexError):
        test[len(test)]
    assert len(list(test)) == len(test)


@pytest.mark.parametrize("span", [2, 7, 91])
def test_window_starts_are_uniform_and_independent_across_seeds(mixture_data, span):
    """Chi-square against the uniform law over many (epoch, index), and seeds that agree only by chance."""
    catalog = mixture_data.catalog()
    t_in, t_ar = 4, 1
    datasets = [MixtureDataset("aa", split="train", res=8, t_in=t_in, t_ar=t_ar, catalog=catalog, seed=seed)
                for seed in (0, 1)]
    n_steps = span + t_in + t_ar - 1
    draws = {0: [], 1: []}
    for epoch in range(200):
        for seed, dataset in enumerate(datasets):
            dataset.set_epoch(epoch)
            draws[seed] += [dataset.window_start(index, n_steps) for index in range(100)]
    starts = np.asarray(draws[0])
    assert starts.min() >= 0 and starts.max() <= span - 1
    counts = np.bincount(starts, minlength=span)
    expected = len(starts) / span
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 99.9% quantiles of chi-square with span - 1 degrees of freedom (scipy.stats.chi2.ppf(0.999, df))
    assert chi2 < {2: 10.83, 7: 22.46, 91: 137.2}[span]
    agree = float(np.mean(starts == np.asarray(draws[1])))
    assert abs(agree - 1 / span) < 4 * np.sqrt((1 / span) * (1 - 1 / span) / len(starts))


@pytest.mark.parametrize(("size", "stride"), [((8, 8), (2, 2)), ((8, 12), (2, 3))])
def test_downsample_strides_the_stored_grid(tiny_data, size: tuple[int, int],
                                            stride: tuple[int, int]) -> None:
    """``downsample: [dx, dy]`` takes every dx-th point along X and every dy-th along Y."""
    tiny_data.add("ds", size=size, steps=6, channels=1, t_in=4, downsample=list(stride))
    dataset = MixtureDataset("ds", split="test", res=4, t_in=4, catalog=tiny_data.catalog())
    stored = tiny_data.datasets["ds"].test.astype(np.float32)
    np.testing.assert_array_equal(dataset[1].x.numpy(), stored[1, ::stride[0], ::stride[1], :4])
    assert dataset[1].mask.numpy().all()  # stored grid after striding is 4x4 = res


def test_chunked_and_float64_files_load_alike(tiny_data):
    tiny_data.add("chunked", chunked=True, channels=2)
    tiny_data.add("double", dtype="float64", channels=2)
    catalog = tiny_data.catalog()
    for name in ("chunked", "double"):
        dataset = MixtureDataset(name, split="test", res=8, t_in=4, catalog=catalog)
        np.testing.assert_array_equal(dataset[0].x.numpy(),
                                      tiny_data.datasets[name].test[0, :, :, :4].astype(np.float32))


def test_n_samples_reads_the_first_samples(tiny_data):
    tiny_data.add("many", n_train=5, channels=1, catalog_sizes=(3, 2))
    catalog = tiny_data.catalog()
    assert len(MixtureDataset("many", split="train", res=8, t_in=4, catalog=catalog)) == 3
    dataset = MixtureDataset("many", split="train", res=8, t_in=4, catalog=catalog, n_samples={"many": 5})
    assert len(dataset) == 5
    dataset = MixtureDataset("many", split="test", res=8, t_in=4, catalog=catalog, n_samples=1)
    np.testing.assert_array_equal(dataset[0].x.numpy(), tiny_data.datasets["many"].test[0, :, :, :4].astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Hostile data at construction and at read time


def test_construction_errors_name_the_file(tiny_data, write_h5):
    tiny_data.add("ok", channels=2, steps=6, t_in=4)
    tiny_data.add("short_catalogue", n_train=2, catalog_sizes=(5, 2), channels=2)
    tiny_data.add("empty", n_train=0, channels=2)
    tiny_data.add("mismatch", channels=2)
    tiny_data.set_fields("mismatch", tiny_data.datasets["mismatch"].fields | {"n_channels": 3})
    tiny_data.set_fields("cube", tiny_data.datasets["ok"].fields | {"in_size": [8, 8, 8], "downsample": [1, 1, 1]})
    tiny_data.set_fields("gone", tiny_data.datasets["ok"].fields | {"train_path": "tiny/gone.hdf5"})
    catalog = tiny_data.catalog()

    def build(name, **options):
        return MixtureDataset(name, catalog=catalog, **({"split": "train", "res": 8, "t_in": 4} | options))

    with pytest.raises(DataError, match=r"6 time steps, fewer than the 7 needed \(t_in 4 \+ t_ar 3\)"):
        build("ok", t_ar=3)
    with pytest.raises(DataError, match=r"short_catalogue_train.hdf5.*holds 2 samples but the catalogue's train_size is 5"):
        build("short_catalogue")
    assert len(build("short_catalogue", n_samples=2)) == 2
    with pytest.raises(DataError, match=r"holds 2 samples but n_samples asks for 4"):
        build("short_catalogue", n_samples=4)
    with pytest.raises(DataError, match=r"empty_train.hdf5.*empty dataset"):
        build("empty")
    with pytest.raises(DataError, match=r"'ok' has 2 channels, more than n_channels = 1"):
        build("ok", n_channels=1)
    with pytest.raises(DataError, match=r"mismatch.*2 channels, the catalogue says n_channels = 3"):
        build("mismatch")
    with pytest.raises(DataError, match=r"3-D data"):
        build("cube")
    with pytest.raises(DataError, match=r"tiny/gone.hdf5: no such file"):
        build("gone")
    with pytest.raises(DataError, match="unknown dataset id 'okk'"):
        build("okk")
    with pytest.raises(ConfigError, match="split"):
        build("ok", split="valid")


def test_nan_sample_fails_at_read_time_naming_file_and_sample(tiny_data, write_h5):
    data = tiny_data.add("nan", n_train=3, channels=1, steps=8, t_in=4)
    array = data.train.copy()
    array[2, 1, 1, 4, 0] = np.nan  # step 4 lies in every training window [s, s + 5), s <= 3
    write_h5(data.train_path, array)
    dataset = MixtureDataset("nan", split="train", res=8, t_in=4, catalog=tiny_data.catalog())
    dataset[1]
    for epoch in range(4):
        dataset.set_epoch(epoch)
        with pytest.raises(DataError, match=r"nan_train.hdf5: sample 2 has 1 NaN/Inf"):
            dataset[2]


def test_only_the_window_is_read_and_checked(tiny_data, write_h5):
    """A training item reads only its window's frames: a NaN outside the window never reaches it,
    every window that covers the NaN raises, and the test split (whole trajectory) raises."""
    data = tiny_data.add("late_nan", n_train=1, n_test=1, channels=1, steps=12, t_in=4, t_test=7)
    for split in ("train", "test"):
        array = data.array(split).copy()
        array[0, 2, 3, 10, 0] = np.inf
        write_h5(data.path(split), array)
    catalog = tiny_data.catalog()
    dataset = MixtureDataset("late_nan", split="train", res=8, t_in=4, t_ar=2, catalog=catalog, seed=3)
    outcomes = set()
    for epoch in range(60):
        dataset.set_epoch(epoch)
        start = dataset.window_start(0, 12)
        if start + 6 > 10:  # the window [start, start + 6) covers step 10
            with pytest.raises(DataError, match=r"late_nan_train.hdf5: sample 0 has 1 NaN/Inf"):
                dataset[0]
            outcomes.add("raised")
        else:
            sample = dataset[0]
            whole = torch.cat([sample.x, sample.y], dim=2).numpy()
            np.testing.assert_array_equal(whole, data.train[0, :, :, start:start + 6].astype(np.float32))
            outcomes.add("read")
    assert outcomes == {"raised", "read"}
    with pytest.raises(DataError, match=r"late_nan_test.hdf5: sample 0 has 1 NaN/Inf"):
        MixtureDataset("late_nan", split="test", res=8, t_in=4, catalog=catalog)[0]


def test_scatter_sample_with_fewer_steps_fails_when_read(tiny_data, write_h5):
    data = tiny_data.add("ragged", n_train=3, channels=2, steps=10, scatter=True, t_in=4)
    write_h5(data.train_path / "data_1.hdf5", data.train[1, :, :, :5])
    dataset = MixtureDataset("ragged", split="train", res=8, t_in=4, t_ar=2, catalog=tiny_data.catalog())
    with pytest.raises(DataError, match=r"data_1.hdf5: sample 1 of 'ragged' has shape \(8, 8, 5, 2\)"):
        dataset[1]


# ----------------------------------------------------------------------------------------------
# Worker-safe opening


class _WithOpenCounts(Dataset):
    """Returns each item with its reader's open count and the process id that read it."""

    def __init__(self, mixture: MixtureDataset):
        self.mixture = mixture

    def __len__(self) -> int:
        return len(self.mixture)

    def __getitem__(self, index):
        sample = self.mixture[index]
        dataset = int(sample.dataset_index)
        return sample.x, sample.y, self.mixture.readers[dataset].open_count, dataset, os.getpid()


def test_two_worker_dataloader_opens_once_per_worker(mixture_data):
    dataset = MixtureDataset(["aa", "cfd"], split="test", res=8, t_in=4, catalog=mixture_data.catalog())
    assert not any(reader.is_open for reader in dataset.readers)  # nothing opened by __init__
    expected = [dataset[i] for i in range(len(dataset))]
    dataset.close()
    loader = DataLoader(_WithOpenCounts(dataset), batch_size=None, num_workers=2, shuffle=False)
    pids = set()
    for index, (x, y, open_count, _, pid) in enumerate(loader):
        torch.testing.assert_close(x, expected[index].x, rtol=0, atol=0)
        torch.testing.assert_close(y, expected[index].y, rtol=0, atol=0)
        assert open_count == 1  # single-file storage: opened once in that worker, then kept open
        pids.add(pid)
    assert len(pids) == 2 and os.getpid() not in pids
    assert not any(reader.is_open for reader in dataset.readers)  # the main process never opened


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_follow_set_epoch(mixture_data, context):
    """Workers started once (as the training loop keeps them) draw each epoch's windows: the
    epoch set in the main process after they started reaches them (it lives in shared memory)."""
    dataset = MixtureDataset("aa", split="train", res=8, t_in=4, t_ar=3, catalog=mixture_data.catalog(), seed=5)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=True,
                        multiprocessing_context=context)
    seen = []
    for epoch in (0, 1, 7):
        dataset.set_epoch(epoch)
        expected = [dataset[i].x for i in range(len(dataset))]
        got = [sample.x for sample in loader]
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
        seen.append(torch.stack(got))
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])  # windows moved
    dataset.close()


def test_collated_batch_shapes(mixture_data):
    dataset = MixtureDataset(["aa", "bb"], split="train", res=8, t_in=4, t_ar=2, catalog=mixture_data.catalog())
    batch = next(iter(DataLoader(dataset, batch_size=5, shuffle=False)))
    assert batch.x.shape == (5, 8, 8, 4, 2) and batch.y.shape == (5, 8, 8, 2, 2)
    assert batch.mask.shape == (5, 8, 8, 1, 2)
    assert batch.dataset_index.tolist() == [0, 0, 0, 1, 1]


# ----------------------------------------------------------------------------------------------
# Dataset weights


class _Sizes:
    """Stands in for a MixtureDataset: only names and offsets matter to the sampler."""

    def __init__(self, sizes):
        self.names = tuple(f"d{i}" for i in range(len(sizes)))
        self.dataset_offsets = tuple(int(o) for o in np.cumsum((0, *sizes)))


def naive_replication(sizes, weights):
    """The original's replicated dataset, built literally: trajectory i of d listed w_d times in a row."""
    offsets = np.cumsum((0, *sizes))
    return [offsets[d] + i for d, (n, w) in enumerate(zip(sizes, weights)) for i in range(n) for _ in range(w)]


def test_original_replication_formula_matches_the_naive_list():
    sizes, weights = (3, 5, 2), (2, 1, 4)
    np.testing.assert_array_equal(original_replicated_indices(_Sizes(sizes), weights), naive_replication(sizes, weights))


def items(indices, sizes) -> list[int]:
    """The mixture items of sampler indices (copy c of item i is i + c * len)."""
    return [i % sum(sizes) for i in indices]


def test_sampler_reproduces_the_replicated_list():
    sizes, weights = (3, 5, 2), (2, 1, 4)
    mixture = _Sizes(sizes)
    ordered = WeightedMixtureSampler(mixture, weights, shuffle=False)
    assert items(ordered, sizes) == naive_replication(sizes, weights)
    assert len(set(ordered)) == len(list(ordered))  # every draw of a trajectory is its own copy
    shuffled = WeightedMixtureSampler(mixture, weights, seed=3)
    first = list(shuffled)
    assert sorted(items(first, sizes)) == sorted(naive_replication(sizes, weights)) and first != sorted(first)
    assert list(shuffled) == first  # same epoch, same order
    shuffled.set_epoch(1)
    assert list(shuffled) != first and sorted(shuffled) == sorted(first)
    by_name = WeightedMixtureSampler(mixture, {"d0": 2, "d2": 4}, shuffle=False)  # d1 defaults to 1
    assert list(by_name) == list(ordered)


def test_sampler_splits_an_epoch_across_ranks():
    sizes, weights = (3, 4), (1, 2)  # 11 items: padded to 12 for 3 ranks
    mixture = _Sizes(sizes)
    ranks = [WeightedMixtureSampler(mixture, weights, num_replicas=3, rank=r, seed=7) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(2)
    parts = [list(s) for s in ranks]
    assert [len(p) for p in parts] == [4, 4, 4] and all(len(s) == 4 for s in ranks)
    whole = ranks[0].epoch_indices().tolist()
    interleaved = [parts[k % 3][k // 3] for k in range(12)]
    assert interleaved == whole + whole[:1]
    assert sorted(items(whole, sizes)) == sorted(naive_replication(sizes, weights))


def test_fractional_weights_draw_the_expected_counts():
    sizes = (10, 4)
    sampler = WeightedMixtureSampler(_Sizes(sizes), (0.5, 1.5), seed=1)
    assert len(sampler) == 5 + 6
    for epoch in range(5):
        sampler.set_epoch(epoch)
        drawn = items(sampler, sizes)
        first = [i for i in drawn if i < 10]
        second = np.bincount([i - 10 for i in drawn if i >= 10], minlength=4)
        assert len(first) == 5 and len(set(first)) == 5  # half of d0, without repeats
        assert sorted(second.tolist()) == [1, 1, 2, 2]  # each of d1 once, two of them twice


def test_sampler_option_errors():
    with pytest.raises(ConfigError, match="weights"):
        WeightedMixtureSampler(_Sizes((2, 2)), (1,))
    with pytest.raises(ConfigError, match="not in the mixture"):
        WeightedMixtureSampler(_Sizes((2, 2)), {"zz": 2})
    with pytest.raises(ConfigError, match=">= 0"):
        WeightedMixtureSampler(_Sizes((2, 2)), (1, -1))
    with pytest.raises(ConfigError, match="rank"):
        WeightedMixtureSampler(_Sizes((2, 2)), num_replicas=2, rank=2)
