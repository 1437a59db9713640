"""The mixture dataset of the original code (``MixedTemporalDataset``) and a weighted sampler.

One :class:`MixtureDataset` concatenates several catalogue datasets. Each item is one
trajectory of one dataset, turned into a model-ready :class:`Sample`:

1. choose the time window: training ``[s, s + t_in)`` as input and ``[s + t_in, s + t_in + t_ar)``
   as target, with ``s`` uniform in ``[0, T - t_in - t_ar]`` and deterministic in (seed, epoch,
   index); test ``[0, t_in)`` and ``[t_in, t_in + t_test)``;
2. read only those frames of the stored sample ``[X, Y, T, C]`` (float32; a missing channel axis
   added; NaN/Inf among them is a :class:`DataError`), the header giving ``T``;
3. stride the stored grid by the entry's ``downsample`` (``[::dx, ::dy]``);
4. resize every frame and channel bilinearly to ``res x res`` (:func:`resize_bilinear`);
5. pad channels with the constant 1.0 up to the mixture's channel count (:func:`pad_channels`);
6. attach the evaluation mask (:func:`evaluation_mask`) and the dataset's position in the mixture.

The original's dataset weights replicated indices; here the dataset keeps one index per
trajectory and :class:`WeightedMixtureSampler` draws the same distribution (DDP-aware). As in
the original, every copy of a trajectory drawn several times in an epoch gets its own random
window: the sampler passes copy ``c`` of item ``i`` as index ``i + c * len(dataset)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from moepot.data.catalog import SPLITS, Catalog, DatasetEntry, load_catalog
from moepot.data.protocol import SampleReader, is_float_dtype
from moepot.errors import ConfigError, DataError


class Sample(NamedTuple):
    """One model-ready item (a DataLoader batch adds a leading B axis to each field).

    Attributes:
        x: input window, ``[res, res, t_in, C]`` float32.
        y: target, ``[res, res, t_ar, C]`` (train) or ``[res, res, t_test, C]`` (test).
        mask: evaluation mask ``[res, res, 1, C]`` float32: 1 on the original grid points and the
            real (``pred_channels``) channels, 0 elsewhere.
        dataset_index: 0-d long tensor, the dataset's position in the mixture's ``names``.
    """

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    dataset_index: torch.Tensor


# ----------------------------------------------------------------------------------------------
# The per-sample transforms of the original, as plain functions


def resize_bilinear(sample: torch.Tensor, res: int) -> torch.Tensor:
    """Resize every frame and channel of ``sample: [X, Y, T, C]`` to ``[res, res, T, C]``.

    The original's rule: ``F.interpolate(mode="bilinear", align_corners=False)`` on the
    ``[1, T*C, X, Y]`` view. A sample already at ``res x res`` is returned unchanged (the
    interpolation would be the identity).
    """
    size_x, size_y, steps, channels = sample.shape
    if (size_x, size_y) == (res, res):
        return sample
    planes = sample.reshape(size_x, size_y, steps * channels).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(planes, size=(res, res), mode="bilinear", align_corners=False)
    return resized[0].permute(1, 2, 0).reshape(res, res, steps, channels)


def pad_channels(sample: torch.Tensor, n_channels: int) -> torch.Tensor:
    """Pad ``sample: [..., C]`` with the constant 1.0 to ``[..., n_channels]`` (the original pads with ones)."""
    channels = sample.shape[-1]
    if channels > n_channels:
        raise DataError(f"sample has {channels} channels, more than the mixture's {n_channels}")
    if channels == n_channels:
        return sample
    padded = torch.ones((*sample.shape[:-1], n_channels), dtype=sample.dtype)
    padded[..., :channels] = sample
    return padded


def evaluation_mask(res: int, stored_size: tuple[int, int], n_channels: int, n_real: int) -> torch.Tensor:
    """The original's evaluation mask ``[res, res, 1, n_channels]`` (float32).

    Rule: with ``(X, Y) = stored_size`` (after ``downsample``), ``k_x = res // X`` and
    ``k_y = res // Y``, each replaced by 1 when it is 0 (model grid coarser than the data).
    ``mask[i, j, 0, c] = 1`` iff ``i % k_x == 0`` and ``j % k_y == 0`` and ``c < n_real``, else 0.
    So upsampled data is scored only on the points that correspond to stored grid points, and
    padded channels (and, for cfdbench, the non-predicted mask channel) are never scored.
    """
    k_x = max(res // stored_size[0], 1)
    k_y = max(res // stored_size[1], 1)
    mask = torch.zeros((res, res, 1, n_channels), dtype=torch.float32)
    mask[::k_x, ::k_y, :, :n_real] = 1.0
    return mask


# ----------------------------------------------------------------------------------------------
# The dataset


class MixtureDataset(Dataset):
    """Several catalogue datasets as one map-style dataset of :class:`Sample` items.

    Args:
        names: dataset id(s); item ``dataset_offsets[d] + i`` is trajectory ``i`` of ``names[d]``.
        split: "train" (random windows) or "test" (whole evaluation trajectories). Build test
            sets one dataset at a time when batching: ``t_test`` differs between datasets.
        res: model grid side; every sample is resized to ``res x res``.
        t_in: input steps.
        t_ar: target steps of a training window (autoregressive steps x bundle).
        catalog: catalogue to use; default :func:`load_catalog` with ``data_root``.
        data_root: root the catalogue paths resolve against; default the catalogue's.
        n_channels: channel count after padding; default the largest ``n_channels`` of ``names``.
        n_samples: samples per dataset: None (the catalogue's train/test size), one int for all,
            a sequence aligned with ``names`` or a mapping name -> int (None = catalogue size).
            The first ``n`` samples of each split are used; a split holding fewer is an error.
        seed: seed of the training windows' random starts.
        n_samples_option: how the caller's user set ``n_samples`` (a config key such as
            ``ntrain_list``, or an option), named when a split holds fewer samples.

    Files are checked here (existence, ``data`` array, rank, channels, time steps, sample count)
    from their headers only; HDF5 files are then opened lazily in each worker process.

    Raises:
        DataError: a missing, empty or malformed split, too few samples or time steps, or more
            channels than ``n_channels``; the message names the file.
        ConfigError: an invalid option (split, res, t_in, t_ar, n_samples).
    """

    def __init__(
        self,
        names: str | Sequence[str],
        *,
        split: str,
        res: int,
        t_in: int = 10,
        t_ar: int = 1,
        catalog: Catalog | None = None,
        data_root: str | os.PathLike | None = None,
        n_channels: int | None = None,
        n_samples: int | Sequence[int | None] | Mapping[str, int | None] | None = None,
        seed: int = 0,
        n_samples_option: str = "n_samples",
    ):
        self.names: tuple[str, ...] = (names,) if isinstance(names, str) else tuple(names)
        if not self.names:
            raise ConfigError("MixtureDataset needs at least one dataset name")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"dataset names repeat in {list(self.names)}; use sampler weights instead")
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        for option, value in (("res", res), ("t_in", t_in), ("t_ar", t_ar)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{option} must be a positive integer, got {value!r}")
        self.split = split
        self.res = res
        self.t_in = t_in
        self.t_ar = t_ar
        self.seed = int(seed)
        self.n_samples_option = n_samples_option
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

        self.catalog = catalog if catalog is not None else load_catalog(data_root=data_root)
        self.data_root = self.catalog.data_root if data_root is None else data_root
        self.entries: tuple[DatasetEntry, ...] = tuple(self.catalog[name] for name in self.names)
        wanted_channels = max(entry.n_channels for entry in self.entries)
        if n_channels is not None and n_channels < wanted_channels:
            widest = max(self.entries, key=lambda e: e.n_channels)
            raise DataError(f"dataset {widest.name!r} has {widest.n_channels} channels, more than "
                            f"n_channels = {n_channels} (the model's channel count)")
        self.n_channels = wanted_channels if n_channels is None else int(n_channels)

        self.readers: tuple[SampleReader, ...] = tuple(
            SampleReader(entry.path(split, self.data_root), entry.scatter, spatial_dims=entry.spatial_dims)
            for entry in self.entries)
        requested = _per_dataset(n_samples, self.names)
        self.sizes = tuple(self._check_split(entry, reader, n)
                           for entry, reader, n in zip(self.entries, self.readers, requested))
        self.dataset_offsets: tuple[int, ...] = tuple(int(o) for o in np.cumsum((0, *self.sizes)))
        self._masks: dict[tuple[int, int, int], torch.Tensor] = {}  # (X', Y', real channels) -> mask

    @property
    def steps_needed(self) -> tuple[int, ...]:
        """Stored time steps each dataset's trajectories need for this split."""
        if self.split == "train":
            return tuple(self.t_in + self.t_ar for _ in self.entries)
        return tuple(self.t_in + entry.t_test for entry in self.entries)

    def _check_split(self, entry: DatasetEntry, reader: SampleReader, requested: int | None) -> int:
        """Check one split's header against the catalogue and the options; return its sample count."""
        where = f"dataset {entry.name!r} ({self.split} split, {reader.path})"
        if entry.spatial_dims != 2:
            raise DataError(f"{where}: {entry.spatial_dims}-D data (in_size {list(entry.in_size)}); the mixture "
                            "feeds 2-D models only")
        info = reader.info()
        n = entry.size(self.split) if requested is None else requested
        if n == 0 or info.n_samples == 0:
            raise DataError(f"{where}: empty dataset ({info.n_samples} samples stored, {n} requested)")
        if info.n_samples < n:
            how = (f"{self.n_samples_option} asks for {n}" if requested is not None
                   else f"the catalogue's {self.split}_size is {n} (pass {self.n_samples_option} to use fewer)")
            raise DataError(f"{where}: holds {info.n_samples} samples but {how}")
        assert info.sample_shape is not None
        if info.dtype is not None and not is_float_dtype(info.dtype):
            raise DataError(f"{where}: 'data' has dtype {info.dtype}; expected a floating-point type "
                            "(float32 or float64)")
        steps, channels = info.sample_shape[-2:]
        if channels != entry.n_channels:
            raise DataError(f"{where}: samples have {channels} channels, the catalogue says "
                            f"n_channels = {entry.n_channels}")
        needed = self.t_in + (self.t_ar if self.split == "train" else entry.t_test)
        if steps < needed:
            raise DataError(f"{where}: samples have {steps} time steps, fewer than the {needed} needed "
                            f"({self._steps_rule(entry)})")
        return n

    def _steps_rule(self, entry: DatasetEntry) -> str:
        if self.split == "train":
            return f"t_in {self.t_in} + t_ar {self.t_ar}"
        return f"t_in {self.t_in} + t_test {entry.t_test}"

    @property
    def epoch(self) -> int:
        """The epoch whose random training windows items use (see :meth:`set_epoch`)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the random training windows of ``epoch`` (call before each epoch's iterator).

        The epoch is held in shared memory, so DataLoader workers started earlier (persistent
        workers, forked or spawned) see the new value too.
        """
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.dataset_offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Mixture index -> (dataset position, sample index within that dataset)."""
        if not 0 <= index < len(self):
            raise IndexError(f"mixture index {index} out of range [0, {len(self)})")
        dataset = int(np.searchsorted(self.dataset_offsets, index, side="right")) - 1
        return dataset, index - self.dataset_offsets[dataset]

    def window_start(self, index: int, n_steps: int, copy: int = 0) -> int:
        """Start of the training window of item ``index`` in a trajectory of ``n_steps`` steps.

        Uniform in ``[0, n_steps - t_in - t_ar]`` and a pure function of (seed, epoch, index,
        copy): a 64-bit hash of them (:func:`_mix64`, microseconds, where seeding a numpy
        generator per item cost a tenth of the whole item), scaled to the span by a
        multiply-shift (bias below ``span / 2**64``). ``copy`` tells apart the draws of one
        trajectory within an epoch (weights above 1).
        """
        span = n_steps - (self.t_in + self.t_ar) + 1
        key = _mix64(_mix64(_mix64(self.seed & _MASK64) ^ (self.epoch & _MASK64)) ^ (index & _MASK64))
        if copy:
            key = _mix64(key ^ (copy & _MASK64))
        return (key * span) >> 64

    def __iter__(self) -> Iterator[Sample]:
        """Every item once, in order (indexing alone would not stop: training indices past the
        end are the sampler's copies)."""
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> Sample:
        copy, index = 0, int(index)
        if self.split == "train" and index >= len(self):  # the sampler's copy c of item i: i + c * len
            copy, index = divmod(index, len(self))
        dataset, local = self.locate(index)
        entry, reader = self.entries[dataset], self.readers[dataset]
        shape = reader.sample_shape(local)  # [X, Y, T, C] from the header: only the window is read
        steps, channels = shape[-2:]
        needed = self.steps_needed[dataset]
        if steps < needed or channels != entry.n_channels:
            raise DataError(f"{reader.sample_path(local)}: sample {local} of {entry.name!r} has shape "
                            f"{shape}; expected {entry.n_channels} channels and at least {needed} "
                            f"time steps ({self._steps_rule(entry)})")
        start = self.window_start(index, steps, copy) if self.split == "train" else 0
        window = reader.read(local, steps=slice(start, start + needed))  # [X, Y, needed, C]
        step_x, step_y = entry.downsample
        if (step_x, step_y) != (1, 1):
            window = np.ascontiguousarray(window[::step_x, ::step_y])
        frames = pad_channels(resize_bilinear(torch.from_numpy(window), self.res), self.n_channels)
        n_real = entry.pred_channels if entry.pred_channels is not None else channels
        mask_key = (*window.shape[:2], n_real)
        if mask_key not in self._masks:  # one per stored grid: scatter files may differ
            self._masks[mask_key] = evaluation_mask(self.res, window.shape[:2], self.n_channels, n_real)
        mask = self._masks[mask_key].clone()
        return Sample(frames[:, :, :self.t_in], frames[:, :, self.t_in:], mask,
                      torch.tensor(dataset, dtype=torch.long))

    def close(self) -> None:
        """Close this process's HDF5 handles."""
        for reader in self.readers:
            reader.close()


_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: a bijective hash of a 64-bit integer whose output bits all depend on every input bit."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _per_dataset(n_samples, names: tuple[str, ...]) -> list[int | None]:
    if n_samples is None:
        return [None] * len(names)
    if isinstance(n_samples, Mapping):
        unknown = sorted(set(n_samples) - set(names))
        if unknown:
            raise ConfigError(f"n_samples names datasets not in the mixture: {unknown} (mixture: {list(names)})")
        values = [n_samples.get(name) for name in names]
    elif isinstance(n_samples, (int, np.integer)):
        values = [int(n_samples)] * len(names)
    else:
        values = list(n_samples)
        if len(values) != len(names):
            raise ConfigError(f"n_samples has {len(values)} values for {len(names)} datasets {list(names)}")
    for name, value in zip(names, values):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 0):
            raise ConfigError(f"n_samples for {name!r} must be a non-negative integer, got {value!r}")
    return [None if v is None else int(v) for v in values]


# ----------------------------------------------------------------------------------------------
# Dataset weights


def _dataset_weights(dataset: MixtureDataset, weights) -> np.ndarray:
    """Weights aligned with ``dataset.names`` from None, a sequence or a mapping (missing = 1)."""
    names = dataset.names
    if weights is None:
        values = [1.0] * len(names)
    elif isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ConfigError(f"weights name datasets not in the mixture: {unknown} (mixture: {list(names)})")
        values = [weights.get(name, 1.0) for name in names]
    else:
        values = list(weights)
        if len(values) != len(names):
            raise ConfigError(f"{len(values)} weights for {len(names)} datasets {list(names)}")
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)) or np.any(array < 0) or not np.any(array > 0):
        raise ConfigError(f"dataset weights must be finite, >= 0 and not all 0, got {values}")
    return array


class WeightedMixtureSampler(Sampler[int]):
    """The original's dataset weights without index replication, split across DDP ranks.

    Each epoch draws ``w_d * n_d`` items from dataset ``d`` (so dataset ``d`` is drawn with
    probability proportional to ``w_d * n_d``, as with the original's replication): every
    trajectory ``floor(w_d)`` times, plus ``round(frac(w_d) * n_d)`` distinct trajectories chosen
    at random for a fractional weight. With integer weights and ``shuffle=False`` the order is
    exactly the original's replicated index list (:func:`original_replicated_indices`).

    The epoch list is shuffled (seeded by ``seed`` and the epoch, identical on every rank), padded
    by wrapping around to a multiple of ``num_replicas`` (like ``DistributedSampler``), and rank
    ``r`` takes items ``r, r + num_replicas, ...``. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, dataset: MixtureDataset, weights: Sequence[float] | Mapping[str, float] | None = None,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"rank must be in [0, num_replicas), got rank {rank} of {num_replicas}")
        self.sizes = np.diff(np.asarray(dataset.dataset_offsets, dtype=np.int64))
        self.offsets = np.asarray(dataset.dataset_offsets[:-1], dtype=np.int64)
        self.weights = _dataset_weights(dataset, weights)
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        whole = np.floor(self.weights).astype(np.int64)
        self._whole = whole
        self._extra = np.rint((self.weights - whole) * self.sizes).astype(np.int64)
        self.total_size = int(np.sum(whole * self.sizes + self._extra))
        if self.total_size == 0:
            raise ConfigError(f"weights {self.weights.tolist()} draw no sample from sizes {self.sizes.tolist()}")
        self.num_samples = math.ceil(self.total_size / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Use the draw and order of ``epoch``."""
        self.epoch = int(epoch)

    def epoch_indices(self) -> np.ndarray:
        """The whole epoch's indices (all ranks, before padding and splitting): copy ``c`` of
        mixture item ``i`` is ``i + c * len(dataset)`` (``% len(dataset)`` gives the item), so
        each draw of a trajectory gets its own window (:meth:`MixtureDataset.window_start`)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        total = int(self.offsets[-1] + self.sizes[-1])  # len(dataset)
        parts = []
        for offset, size, whole, extra in zip(self.offsets, self.sizes, self._whole, self._extra):
            local = np.repeat(np.arange(size, dtype=np.int64), whole)
            copy = np.tile(np.arange(whole, dtype=np.int64), size)
            if extra:
                chosen = rng.choice(size, size=extra, replace=False) if self.shuffle else np.arange(extra)
                local = np.concatenate([local, chosen])
                copy = np.concatenate([copy, np.full(extra, whole, dtype=np.int64)])
                order = np.argsort(local, kind="stable")
                local, copy = local[order], copy[order]
            parts.append(offset + local + copy * total)
        indices = np.concatenate(parts)
        return rng.permutation(indices) if self.shuffle else indices

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()
        padded = np.resize(indices, self.num_samples * self.num_replicas)  # wraps around
        return iter(padded[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


def original_replicated_indices(dataset: MixtureDataset, weights: Sequence[int]) -> np.ndarray:
    """The original's replicated index list, mapped to this dataset's indices (for comparisons).

    The original made its dataset ``sum(n_d * w_d)`` long (integer weights ``w_d``) and mapped
    its index ``g`` to dataset ``d = searchsorted(cumsum(n * w), g + 1)`` and trajectory
    ``(g - cumsum[d - 1]) // w_d``. Returns that trajectory's index in ``dataset`` for every
    ``g`` in order.
    """
    weights = list(weights)
    if len(weights) != len(dataset.names) or any(int(w) != w or w < 1 for w in weights):
        raise ConfigError(f"the original's replication needs one positive integer weight per dataset, got {weights}")
    sizes = np.diff(np.asarray(dataset.dataset_offsets, dtype=np.int64))
    cumulative = np.cumsum(sizes * np.asarray(weights, dtype=np.int64))
    g = np.arange(cumulative[-1])
    d = np.searchsorted(cumulative, g + 1)
    start = np.where(d == 0, 0, cumulative[np.maximum(d - 1, 0)])
    local = (g - start) // np.asarray(weights, dtype=np.int64)[d]
    return np.asarray(dataset.dataset_offsets, dtype=np.int64)[d] + local
