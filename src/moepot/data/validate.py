"""Full scans of protocol files: every sample's shape, dtype, finiteness and length.

Unlike the loaders, which stop at the first bad sample, a scan goes on and reports every
problem it finds, each naming the file and the sample. Used by ``moepot data validate``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from moepot.data.catalog import SPLITS, DatasetEntry
from moepot.data.protocol import SampleReader, is_float_dtype
from moepot.errors import DataError


@dataclass(frozen=True)
class Problem:
    """One finding: the file (or split directory), the sample if any, and what is wrong."""

    path: Path
    message: str
    sample: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} [sample {self.sample}]" if self.sample is not None else str(self.path)
        return f"{where}: {self.message}"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sample": self.sample, "message": self.message}


@dataclass
class Report:
    """What a scan found. ``problems`` make the data unusable; ``warnings`` are inconsistencies
    the loader tolerates (e.g. a stored grid that differs from the catalogue's ``in_size``)."""

    target: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    samples_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"target": self.target, "ok": self.ok, "samples_checked": self.samples_checked,
                "problems": [p.to_dict() for p in self.problems],
                "warnings": [w.to_dict() for w in self.warnings]}


@dataclass(frozen=True)
class Expectations:
    """What a split's samples should look like; None = not checked.

    Attributes:
        n_samples: samples the catalogue reads (the split may hold more, never fewer).
        min_steps: time steps every trajectory needs (``t_in + t_test``).
        n_channels: stored channels.
        in_size: stored spatial size (a mismatch is a warning).
        t_total: stored time steps (a mismatch is a warning).
    """

    n_samples: int | None = None
    min_steps: int | None = None
    n_channels: int | None = None
    in_size: tuple[int, ...] | None = None
    t_total: int | None = None


def validate_entry(entry: DatasetEntry, data_root: str | os.PathLike, *, splits: Iterable[str] = SPLITS,
                   max_samples: int | None = None, progress: bool = False) -> Report:
    """Scan ``entry``'s splits under ``data_root`` against its catalogue facts."""
    report = Report(target=entry.name)
    for split in splits:
        expect = Expectations(n_samples=entry.size(split), min_steps=entry.t_in + entry.t_test,
                              n_channels=entry.n_channels, in_size=entry.in_size, t_total=entry.t_total)
        _scan(entry.path(split, data_root), entry.scatter, entry.spatial_dims, expect, report,
              max_samples=max_samples, progress=progress, label=f"{entry.name} {split}")
    return report


def validate_path(path: str | os.PathLike, *, spatial_dims: int = 2, expect: Expectations | None = None,
                  max_samples: int | None = None, progress: bool = False) -> Report:
    """Scan one split given by path: a file (single storage) or a directory of ``data_{i}.hdf5``."""
    path = Path(path)
    report = Report(target=str(path))
    if not path.exists():
        report.problems.append(Problem(path, "no such file or directory"))
        return report
    _scan(path, path.is_dir(), spatial_dims, expect or Expectations(), report,
          max_samples=max_samples, progress=progress, label=path.name)
    return report


def _scan(path: Path, scatter: bool, spatial_dims: int, expect: Expectations, report: Report, *,
          max_samples: int | None, progress: bool, label: str) -> None:
    reader = SampleReader(path, scatter, spatial_dims=spatial_dims, max_open=1)
    try:
        info = reader.info()
    except DataError as exc:
        report.problems.append(Problem(path, _strip_path(str(exc), path)))
        return
    for index in info.missing:
        report.problems.append(Problem(path, f"file data_{index}.hdf5 is missing (the numbering must be "
                                             "contiguous from 0; later files are unreachable)", index))
    if info.n_samples == 0:
        report.problems.append(Problem(path, "empty split: no samples"))
    elif expect.n_samples is not None and info.n_samples < expect.n_samples:
        report.problems.append(Problem(path, f"holds {info.n_samples} samples, the catalogue reads {expect.n_samples}"))

    if not scatter and info.dtype is not None and not is_float_dtype(info.dtype):
        report.problems.append(Problem(path, f"'data' has dtype {info.dtype}; expected float32 or float64"))
        return
    n_scan = info.n_samples if max_samples is None else min(info.n_samples, max_samples)
    reference_shape: tuple[int, ...] | None = None
    with reader:
        for index in tqdm(range(n_scan), desc=f"validate {label}", disable=not progress, leave=False):
            sample_path = reader.sample_path(index)
            try:
                sample = reader.read(index)
            except DataError as exc:
                report.problems.append(Problem(sample_path, _strip_path(str(exc), sample_path), index))
                continue
            finally:
                report.samples_checked += 1
            shape = tuple(sample.shape)
            if reference_shape is None:  # single storage: one shape for the whole file
                reference_shape = shape
                _check_shape(sample_path, index if scatter else None, shape, expect, report)
            elif shape != reference_shape:
                report.problems.append(Problem(sample_path, f"shape {shape} differs from the first sample's "
                                                            f"{reference_shape}", index))
                _check_shape(sample_path, index, shape, expect, report)


def _check_shape(path: Path, index: int | None, shape: tuple[int, ...], expect: Expectations, report: Report) -> None:
    """Compare one sample shape ``[X, Y(, Z), T, C]`` with the expectations."""
    spatial, steps, channels = shape[:-2], shape[-2], shape[-1]
    if expect.n_channels is not None and channels != expect.n_channels:
        report.problems.append(Problem(path, f"{channels} channels, the catalogue says n_channels = "
                                             f"{expect.n_channels}", index))
    if expect.min_steps is not None and steps < expect.min_steps:
        report.problems.append(Problem(path, f"{steps} time steps, fewer than t_in + t_test = "
                                             f"{expect.min_steps}", index))
    elif expect.t_total is not None and steps != expect.t_total:
        report.warnings.append(Problem(path, f"{steps} time steps, the catalogue says t_total = "
                                             f"{expect.t_total}", index))
    if expect.in_size is not None and tuple(spatial) != tuple(expect.in_size):
        report.warnings.append(Problem(path, f"grid {list(spatial)}, the catalogue says in_size = "
                                             f"{list(expect.in_size)}", index))


def _strip_path(message: str, path: Path) -> str:
    """Drop a leading ``<path>: `` from a DataError message (the Problem names the path)."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
