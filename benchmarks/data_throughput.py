"""Data throughput: our mixture loader against the original's per-sample HDF5 path.

Three tiny-but-realistic training sets are written to a temporary data root with our writers
(float32, one HDF5 chunk per sample):

- ``fno_like``: single-file storage shaped like FNO NS 1e-5, ``[N, 64, 64, 20]`` (no channel axis);
- ``swe_like``: scatter storage shaped like PDEBench SWE, ``[64, 64, 101, 1]`` per file;
- ``cns_like``: scatter storage shaped like PDEBench CNS, ``[64, 64, 21, 4]`` per file.

For each storage (``single`` = fno_like, ``scatter`` = swe_like + cns_like, ``mixture`` = all
three) and each DataLoader worker count (0 and 2), one epoch of training items (res 64, t_in 10,
t_ar 1, batch 8, shuffled) is timed for:

- **ours**: :class:`moepot.data.mixture.MixtureDataset` (handles kept open per process, only the
  window ``[s, s + t_in + t_ar)`` read from disk and checked, window-only resize and padding),
  through one DataLoader whose workers persist across epochs, as in our training loop;
- **original**: :class:`OriginalStyleDataset`, the original ``MixedTemporalDataset`` path: open
  the HDF5 file on every ``__getitem__``, read the whole trajectory, bilinearly interpolate every
  frame to ``res`` (always, as the original does), pad every frame with ones to the channel
  count, then cut the window. (For single storage the original kept one handle opened in
  ``__init__`` and shared it with forked workers, which is unsafe; opening per sample is the
  safe form of that path and the one the original uses for scatter storage.) Its workers start
  afresh every epoch, as the original's loop (no persistent workers) had them.

The two sides alternate epoch by epoch (which goes first alternates too); each side's median
samples/s is reported with the ratio ours / original. ``data_throughput_ratio`` is the ratio on
the three-set mixture, the lower of the 0- and 2-worker values (target >= 5). A second table
breaks one item down into its stages (file open, reads, checks, transforms) for each set.

    python -m benchmarks --only data_throughput [--quick] [--json]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from moepot.data.catalog import Catalog, DatasetEntry, load_catalog, record_entries
from moepot.data.mixture import MixtureDataset, pad_channels, resize_bilinear
from moepot.data.protocol import DATA_KEY, sample_file_name, write_sample, write_single

RES = 64
T_IN = 10
T_AR = 1
BATCH = 8
WORKERS = (0, 2)
TARGET = 5.0

# name -> (per-sample stored shape, scatter storage)
SETS: dict[str, tuple[tuple[int, ...], bool]] = {
    "fno_like": ((64, 64, 20), False),
    "swe_like": ((64, 64, 101, 1), True),
    "cns_like": ((64, 64, 21, 4), True),
}
# Full mode only: a scatter set with more files than a reader keeps open (max_open = 64), so our
# loader too opens a file for almost every item.
MANY_FILES = 160
STORAGES: dict[str, tuple[str, ...]] = {
    "single": ("fno_like",),
    "scatter": ("swe_like", "cns_like"),
    "mixture": ("fno_like", "swe_like", "cns_like"),
    f"scatter, {MANY_FILES} files": ("cns_many",),
}


# ----------------------------------------------------------------------------------------------
# The data


def write_sets(data_root: Path, n_samples: int, many_files: bool, seed: int = 0) -> Catalog:
    """Write every set of :data:`SETS` (``n_samples`` training trajectories each) and catalogue them.

    With ``many_files``, also ``cns_many``: ``cns_like`` with :data:`MANY_FILES` trajectories.
    """
    rng = np.random.default_rng(seed)
    entries = {}
    sets = {name: (shape, scatter, n_samples) for name, (shape, scatter) in SETS.items()}
    if many_files:
        sets["cns_many"] = (*SETS["cns_like"], MANY_FILES)
    for name, (shape, scatter, n_samples) in sets.items():
        relative = f"bench/{name}" if scatter else f"bench/{name}.hdf5"
        path = data_root / relative
        # smooth in time (a random walk), so a trajectory looks like one rather than like noise
        trajectories = np.cumsum(rng.standard_normal((n_samples, *shape), dtype=np.float32), axis=3) * 0.1
        if scatter:
            for i in range(n_samples):
                write_sample(path / sample_file_name(i), trajectories[i])
        else:
            write_single(path, trajectories)
        steps = shape[2]
        entries[name] = {
            "train_path": relative, "test_path": relative, "train_size": n_samples, "test_size": n_samples,
            "scatter": scatter, "t_in": T_IN, "t_test": steps - T_IN, "t_total": steps,
            "in_size": list(shape[:2]), "n_channels": shape[3] if len(shape) == 4 else 1,
        }
    record_entries(data_root, entries)
    return load_catalog(data_root=data_root)


class OriginalStyleDataset(Dataset):
    """The original ``MixedTemporalDataset`` training item, opening the HDF5 file on every item.

    Item ``index`` (same numbering as :class:`MixtureDataset` over the same ``names``) ->
    ``(x [res, res, t_in, C], y [res, res, t_ar, C], mask [res, res, 1, C], dataset [1])``.
    """

    def __init__(self, names: Sequence[str], catalog: Catalog, *, res: int = RES, t_in: int = T_IN,
                 t_ar: int = T_AR):
        self.entries: list[DatasetEntry] = [catalog[name] for name in names]
        self.paths = [entry.path("train", catalog.data_root) for entry in self.entries]
        self.offsets = np.cumsum([0] + [entry.train_size for entry in self.entries])
        self.n_channels = max(entry.n_channels for entry in self.entries)
        self.res, self.t_in, self.t_ar = res, t_in, t_ar

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _read(self, dataset: int, local: int) -> np.ndarray:
        if self.entries[dataset].scatter:
            with h5py.File(self.paths[dataset] / sample_file_name(local), "r") as f:
                return f[DATA_KEY][:]
        with h5py.File(self.paths[dataset], "r") as f:
            return f[DATA_KEY][local][:]

    def _pad_data(self, sample: torch.Tensor) -> torch.Tensor:
        """``[X, Y, T, C]`` -> every frame resized to ``[res, res]`` and padded with ones to ``n_channels``."""
        size_x, size_y, steps, channels = sample.shape
        planes = sample.reshape(size_x, size_y, -1).permute(2, 0, 1).unsqueeze(0)
        planes = F.interpolate(planes, size=(self.res, self.res), mode="bilinear")
        frames = planes.squeeze(0).permute(1, 2, 0).reshape(self.res, self.res, steps, channels)
        padded = torch.ones(self.res, self.res, steps, self.n_channels)
        padded[..., :channels] = frames
        return padded

    def __getitem__(self, index: int):
        dataset = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = int(index - self.offsets[dataset])
        sample = torch.from_numpy(self._read(dataset, local)).float()
        if sample.ndim == 3:
            sample = sample.unsqueeze(-1)
        sample = self._pad_data(sample)
        start = np.random.randint(max(sample.shape[-2] - (self.t_in + self.t_ar) + 1, 1))
        x = sample[..., start:start + self.t_in, :]
        y = sample[..., start + self.t_in:start + self.t_in + self.t_ar, :]
        mask = torch.ones(*x.shape[:2], 1, x.shape[-1])
        return x, y, mask, torch.LongTensor([dataset])


class PrebuiltItems(Dataset):
    """Returns one prebuilt item of the same shapes for every index: the DataLoader's own ceiling
    (collation and, with workers, the transfer between processes), with no I/O or transforms."""

    def __init__(self, length: int, n_channels: int):
        self.length = length
        self.item = (torch.zeros(RES, RES, T_IN, n_channels), torch.zeros(RES, RES, T_AR, n_channels),
                     torch.zeros(RES, RES, 1, n_channels), torch.tensor(0))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.item


# ----------------------------------------------------------------------------------------------
# Timing


def _loader(dataset: Dataset, workers: int, epoch: int, persistent: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                      generator=torch.Generator().manual_seed(epoch), persistent_workers=persistent and workers > 0)


def _epoch_rate(loader: DataLoader, epoch: int) -> float:
    """Samples per second of one shuffled epoch of ``loader``.

    The clock starts when the first batch arrives, so worker start-up (paid once per epoch
    by a loader without persistent workers) is not counted; the first batch is not counted either.
    """
    if isinstance(loader.dataset, MixtureDataset):
        loader.dataset.set_epoch(epoch)
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    n = sum(batch[0].shape[0] for batch in batches)
    return n / (time.perf_counter() - start)


def measure_storage(names: Sequence[str], catalog: Catalog, workers: int, repeats: int) -> dict:
    """Alternate ours / original for ``repeats`` epochs each; medians of samples/s and their ratio.

    Ours (and the no-I/O ceiling) run as our training loop runs them: one DataLoader for the
    whole run, so with workers they persist across epochs and keep their open files. The
    original's loop also built its DataLoader once, but without persistent workers, so its
    workers start afresh every epoch: a fresh DataLoader per epoch here.
    """
    ours = MixtureDataset(list(names), split="train", res=RES, t_in=T_IN, t_ar=T_AR, catalog=catalog)
    original = OriginalStyleDataset(names, catalog)
    assert len(ours) == len(original)
    ceiling = PrebuiltItems(len(ours), ours.n_channels)
    loaders = {"ours": _loader(ours, workers, 0, persistent=True),
               "ceiling": _loader(ceiling, workers, 0, persistent=True)}

    def loader(side: str, epoch: int) -> DataLoader:
        return loaders[side] if side in loaders else _loader(original, workers, epoch, persistent=False)

    for side in ("ours", "original", "ceiling"):  # warm the page cache, start persistent workers
        _epoch_rate(loader(side, repeats), epoch=repeats)
    rates: dict[str, list[float]] = {side: [] for side in ("ours", "original", "ceiling")}
    for epoch in range(repeats):
        order = ("ours", "original", "ceiling") if epoch % 2 == 0 else ("original", "ours", "ceiling")
        for side in order:
            rates[side].append(_epoch_rate(loader(side, epoch), epoch))
    loaders.clear()  # shuts the persistent workers down
    ours.close()
    median = {side: statistics.median(values) for side, values in rates.items()}
    return {"sets": list(names), "workers": workers, "samples_per_epoch": len(ours),
            "ours_samples_per_s": round(median["ours"], 1), "original_samples_per_s": round(median["original"], 1),
            "ceiling_samples_per_s": round(median["ceiling"], 1),
            "ratio": round(median["ours"] / median["original"], 2),
            "ceiling_ratio": round(median["ceiling"] / median["original"], 2), "epochs_each": repeats}


def _median_ms(fn: Callable[[int], object], n: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean time of ``fn(i)`` for i in range(n), in milliseconds."""
    fn(0)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter() - start) / n)
    return round(statistics.median(times) * 1e3, 3)


def stage_breakdown(name: str, catalog: Catalog, rounds: int) -> dict:
    """Milliseconds per item of each stage of the two paths, for one set (0 workers)."""
    entry = catalog[name]
    path = entry.path("train", catalog.data_root)
    n = entry.train_size
    file_of = (lambda i: path / sample_file_name(i)) if entry.scatter else (lambda i: path)
    select = (lambda i: ()) if entry.scatter else (lambda i: (i,))
    window = (slice(None), slice(None), slice(5, 5 + T_IN + T_AR))

    def open_close(i: int) -> None:
        h5py.File(file_of(i), "r").close()

    handles = [h5py.File(file_of(i), "r") for i in range(n if entry.scatter else 1)]
    data = [h[DATA_KEY] for h in handles]
    pick = (lambda i: data[i]) if entry.scatter else (lambda i: data[0])
    whole = [np.asarray(pick(i)[select(i)]) for i in range(n)]
    original = OriginalStyleDataset([name], catalog)
    ours = MixtureDataset([name], split="train", res=RES, t_in=T_IN, t_ar=T_AR, catalog=catalog,
                          n_channels=4)
    original.n_channels = 4
    stages = {
        "h5py open + close": _median_ms(open_close, n, rounds),
        "read whole trajectory (open handle)": _median_ms(lambda i: pick(i)[select(i)], n, rounds),
        "read window only (open handle)": _median_ms(lambda i: pick(i)[select(i) + window], n, rounds),
        "finite check, whole trajectory": _median_ms(lambda i: np.isfinite(whole[i]).all(), n, rounds),
        "original transforms (resize + pad every frame)": _median_ms(
            lambda i: original._pad_data(torch.from_numpy(whole[i]).reshape(*whole[i].shape[:3], -1)), n, rounds),
        "our transforms (window: resize + pad)": _median_ms(
            lambda i: pad_channels(resize_bilinear(torch.from_numpy(
                np.ascontiguousarray(whole[i].reshape(*whole[i].shape[:3], -1)[:, :, 5:5 + T_IN + T_AR])), RES), 4), n, rounds),
        "original item (all stages)": _median_ms(lambda i: original[i], n, rounds),
        "our item (all stages, handles open)": _median_ms(lambda i: ours[i], n, rounds),
    }
    for handle in handles:
        handle.close()
    ours.close()
    return {"set": name, "shape": list(SETS[name][0]), "storage": "scatter" if entry.scatter else "single",
            "ms_per_item": stages}


def run(quick: bool) -> dict:
    """Write the sets, time every storage x worker count, and break one item down into stages."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader item runs on one core; keeps the two sides comparable
    try:
        return _measure(quick)
    finally:
        torch.set_num_threads(previous_threads)  # the benchmarks run after this one keep theirs


def _measure(quick: bool) -> dict:
    n_samples = 24 if quick else 64
    repeats = 3 if quick else 7
    storages = ("mixture",) if quick else tuple(STORAGES)
    results: dict = {"res": RES, "t_in": T_IN, "t_ar": T_AR, "batch": BATCH, "n_samples_per_set": n_samples,
                     "sets": {name: {"shape": list(shape), "scatter": scatter} for name, (shape, scatter) in SETS.items()},
                     "rows": [], "stages": []}
    with tempfile.TemporaryDirectory(prefix="moepot-bench-data-") as tmp:
        catalog = write_sets(Path(tmp), n_samples, many_files=not quick)
        for storage in storages:
            for workers in WORKERS:
                row = measure_storage(STORAGES[storage], catalog, workers, repeats)
                results["rows"].append({"storage": storage, **row})
        for name in () if quick else SETS:  # the stage breakdown only in the full run
            results["stages"].append(stage_breakdown(name, catalog, rounds=7))
    mixture = [row["ratio"] for row in results["rows"] if row["storage"] == "mixture"]
    results["data_throughput_ratio"] = min(mixture)
    results["target"] = TARGET
    results["target_met"] = results["data_throughput_ratio"] >= TARGET
    return results


def markdown(results: dict) -> str:
    """The throughput table, the stage breakdown and the verdict."""
    lines = [f"Training items at res {results['res']}, t_in {results['t_in']}, t_ar {results['t_ar']}, batch "
             f"{results['batch']}, {results['n_samples_per_set']} trajectories per set; one shuffled epoch per "
             "timing, the two loaders alternating; medians. Ours: one DataLoader for all epochs (workers "
             "persist, as in our training loop); original: workers restarted every epoch, as in its loop.", "",
             "| storage | sets | workers | ours (samples/s) | original, open per sample (samples/s) | ratio "
             "| DataLoader ceiling, no I/O (samples/s) | ceiling / original |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['storage']} | {', '.join(row['sets'])} | {row['workers']} | "
                     f"{row['ours_samples_per_s']} | {row['original_samples_per_s']} | **{row['ratio']}x** | "
                     f"{row['ceiling_samples_per_s']} | {row['ceiling_ratio']}x |")
    lines += ["", "The ceiling is a dataset that returns one prebuilt item: what the DataLoader itself "
              "(collation, and with workers the transfer between processes) allows; ceiling / original "
              "bounds the ratio any loader could reach in that row."]
    names = [stage["set"] for stage in results["stages"]]
    if names:
        lines += ["", "Where one item's time goes (ms per item, 0 workers, page cache warm):", "",
                  "| stage | " + " | ".join(f"{n} {results['sets'][n]['shape']}" for n in names) + " |",
                  "|---|" + "---|" * len(names)]
        for stage in results["stages"][0]["ms_per_item"]:
            lines.append(f"| {stage} | " + " | ".join(str(s["ms_per_item"][stage]) for s in results["stages"]) + " |")
    verdict = "met" if results["target_met"] else "missed"
    lines += ["", f"`data_throughput_ratio` = **{results['data_throughput_ratio']}x** (three-set mixture, lower "
              f"of 0 and 2 workers); target >= {results['target']}x: **{verdict}**."]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(markdown(run(quick="--quick" in sys.argv)))
