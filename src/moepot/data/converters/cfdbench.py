"""CFDBench interpolated release (``<problem>/<subset>/caseNNNN/{u.npy, v.npy, case.json}``) -> single files.

The original's conversion, step by step:

1. Problems cavity, cylinder, tube (dam is not used). Per problem, the case folders of subsets
   prop, bc, geo (in that order, each sorted by case number) are shuffled with Python's
   ``random`` seeded 0; cavity keeps ``round(0.8 n)`` train and ``round(0.1 n)`` dev cases,
   cylinder and tube ``int(0.8 n)`` / ``int(0.1 n)``; test is the rest; dev is dropped.
2. Per case, ``[T, 3, h, w]`` = stack(u, v, mask): cavity ``mask = 1``, no padding; tube and
   cylinder get one column on the left (u = ``vel_in``, v = mask = 0) and one row at top and
   bottom (all 0), so mask is 0 on that border; cylinder also zeroes the mask inside the circle
   ``(x_min + j dx - 0.5)^2 + (y_min + i dy - 0.5)^2 <= radius^2`` (the original centres it at
   physical (0.5, 0.5)).
3. Time is padded to a multiple of 20 by repeating the last frame, every frame is resized
   bilinearly (``align_corners=True``) to the catalogue grid (64 x 64), and the case is cut
   into ``ceil(T / 20)`` segments of 20 frames.
4. Segments are concatenated cavity -> cylinder -> tube (cases in shuffled order) and written
   as ``data: [N_seg, H, W, 20, 3]`` (channels u, v, mask). The original stores float64; we
   write float32 like every protocol file (the loader casts to float32 anyway).

``n_train`` / ``n_test`` cap the number of segments written per split (default: all).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moepot.data.converters.outputs import (
    OutputTarget,
    check_channels,
    raw_identity,
    require_samples,
    write_single_streamed,
)
from moepot.errors import DataError

logger = logging.getLogger(__name__)

PROBLEMS = ("cavity", "cylinder", "tube")  # output order
SUBSETS = ("prop", "bc", "geo")  # case collection order before shuffling
SEGMENT_FRAMES = 20
SHUFFLE_SEED = 0
CASE_KEYS = {
    "cavity": (),
    "tube": ("vel_in",),
    "cylinder": ("vel_in", "radius", "x_min", "x_max", "y_min", "y_max"),
}


@dataclass(frozen=True)
class Case:
    """One CFDBench case folder.

    Attributes:
        problem: cavity, cylinder or tube.
        folder: the ``caseNNNN`` directory.
        n_frames: T_case (frames in u.npy / v.npy).
        params: the case.json values the padding needs (``CASE_KEYS[problem]``).
    """

    problem: str
    folder: Path
    n_frames: int
    params: dict[str, float]

    @property
    def n_segments(self) -> int:
        return math.ceil(self.n_frames / SEGMENT_FRAMES)


def _case_number(folder: Path) -> int:
    try:
        return int(folder.name[4:])
    except ValueError as exc:
        raise DataError(f"{folder}: case folder name must be 'case' followed by its number") from exc


def _frame_count(folder: Path) -> int:
    """T_case from the headers of u.npy / v.npy (memory-mapped, nothing read), checking both agree."""
    shapes = {}
    for key in ("u", "v"):
        file = folder / f"{key}.npy"
        if not file.is_file():
            raise DataError(
                f"{folder}: missing {key}.npy; expected u.npy, v.npy and case.json in a CFDBench case"
            )
        try:
            shapes[key] = np.load(file, mmap_mode="r").shape
        except (ValueError, EOFError, OSError) as exc:  # EOFError: an empty (truncated) file
            raise DataError(f"{file}: not a readable .npy array ({exc})") from exc
    if len(shapes["u"]) != 3 or shapes["u"] != shapes["v"] or shapes["u"][0] == 0:
        raise DataError(
            f"{folder}: u.npy has shape {shapes['u']}, v.npy {shapes['v']}; expected the same "
            "(T, H, W) with T >= 1 for both"
        )
    return shapes["u"][0]


def split_cases(raw_root: Path, problem: str) -> tuple[list[Case], list[Case]]:
    """The original's per-problem case split: (train cases, test cases), both in shuffled order."""
    folders: list[Path] = []
    for subset in SUBSETS:
        subset_dir = raw_root / problem / subset
        if subset_dir.is_dir():
            cases = [p for p in subset_dir.iterdir() if p.is_dir() and p.name.startswith("case")]
            folders.extend(sorted(cases, key=_case_number))
    random.Random(SHUFFLE_SEED).shuffle(folders)
    n = len(folders)
    rounding = round if problem == "cavity" else int
    n_train, n_dev = rounding(0.8 * n), rounding(0.1 * n)
    cases = [
        Case(problem, folder, _frame_count(folder), _read_parameters(folder, problem)) for folder in folders
    ]
    return cases[:n_train], cases[n_train + n_dev :]


def _read_parameters(folder: Path, problem: str) -> dict[str, float]:
    """The case.json values ``problem`` needs (none for cavity), checked."""
    if not CASE_KEYS[problem]:
        return {}
    file = folder / "case.json"
    try:
        params = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{folder}: missing case.json (needed for {problem}: {CASE_KEYS[problem]})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(params, dict):
        raise DataError(f"{file}: holds a JSON {type(params).__name__}; expected an object with keys "
                        f"{list(CASE_KEYS[problem])}")
    missing = [key for key in CASE_KEYS[problem] if key not in params]
    if missing:
        raise DataError(f"{file}: missing key(s) {missing}; {problem} cases need {list(CASE_KEYS[problem])}")
    try:
        return {key: float(params[key]) for key in CASE_KEYS[problem]}
    except (TypeError, ValueError) as exc:
        raise DataError(f"{file}: {list(CASE_KEYS[problem])} must be numbers ({exc})") from exc


def case_features(case: Case) -> np.ndarray:
    """Fields of one case, padded as the original does: ``[T, 3, h, w]`` float64 (u, v, mask).

    cavity: ``h, w = H, W``; tube/cylinder: ``h, w = H + 2, W + 1`` (inlet column left, wall rows).
    """
    u = np.load(case.folder / "u.npy").astype(np.float64)  # [T, H, W]
    v = np.load(case.folder / "v.npy").astype(np.float64)
    mask = np.ones_like(u)
    if case.problem == "cavity":
        return np.stack([u, v, mask], axis=1)
    params = case.params
    n_frames, height, width = u.shape
    if case.problem == "cylinder":
        dx = (params["x_max"] - params["x_min"]) / width
        dy = (params["y_max"] - params["y_min"]) / height
        x = params["x_min"] + np.arange(width) * dx  # column j
        y = params["y_min"] + np.arange(height) * dy  # row i
        inside = (x[None, :] - 0.5) ** 2 + (y[:, None] - 0.5) ** 2 <= params["radius"] ** 2
        mask[:, inside] = 0.0
    features = np.zeros((n_frames, 3, height + 2, width + 1), dtype=np.float64)
    features[:, 0, 1:-1, 1:] = u
    features[:, 0, 1:-1, 0] = params["vel_in"]  # inlet column (u only)
    features[:, 1, 1:-1, 1:] = v
    features[:, 2, 1:-1, 1:] = mask
    return features


def resize_bilinear(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with ``align_corners=True`` (torch's convention): ``[..., h, w] -> [..., *size]``.

    Output pixel r samples input position ``r (h - 1) / (size - 1)``, so the corner pixels are
    kept exactly and a same-size resize is the identity.
    """
    for axis, n_out in ((-2, size[0]), (-1, size[1])):
        n_in = frames.shape[axis]
        position = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lower = np.minimum(np.floor(position).astype(np.int64), max(n_in - 2, 0))
        upper = np.minimum(lower + 1, n_in - 1)
        weight = position - lower
        shape = [1] * frames.ndim
        shape[axis] = n_out
        weight = weight.reshape(shape)
        frames = (1.0 - weight) * np.take(frames, lower, axis=axis) + weight * np.take(
            frames, upper, axis=axis
        )
    return frames


def case_segments(case: Case, size: tuple[int, int]) -> np.ndarray:
    """Segments of one case: ``[ceil(T / 20), H_out, W_out, 20, 3]`` float64.

    Time is padded by repeating the last frame, frames are resized bilinearly with
    ``align_corners=True`` to ``size``, then cut into 20-frame segments.
    """
    features = case_features(case)  # [T, 3, h, w]
    n_padded = case.n_segments * SEGMENT_FRAMES
    padding = np.repeat(features[-1:], n_padded - len(features), axis=0)
    resized = resize_bilinear(np.concatenate([features, padding], axis=0), size)
    segments = resized.reshape(case.n_segments, SEGMENT_FRAMES, 3, *size)
    return segments.transpose(0, 3, 4, 1, 2)


def _segment_blocks(cases: list[Case], size: tuple[int, int], limit: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, segments) blocks covering the first ``limit`` segments of ``cases``, one case at a time."""
    start = 0
    for case in cases:
        if start >= limit:
            return
        segments = case_segments(case, size)[: limit - start]
        yield start, segments
        start += len(segments)


def convert_cfdbench(
    raw_path: Path, target: OutputTarget, n_train: int | None, n_test: int | None, progress: bool
) -> list[Path]:
    """Write ``target``'s ``data: [N_seg, H, W, 20, 3]`` train/test files from a CFDBench folder."""
    if not raw_path.is_dir():
        raise DataError(
            f"{raw_path} is not a directory; source 'cfdbench' expects the folder holding cavity/, tube/, cylinder/"
        )
    check_channels(target, 3, raw_path, "u, v, mask")
    if len(target.in_size) != 2:
        raise DataError(
            f"catalogue entry '{target.name}' has in_size {target.in_size}; cfdbench needs a 2-D grid"
        )
    size = (int(target.in_size[0]), int(target.in_size[1]))
    train_cases: list[Case] = []
    test_cases: list[Case] = []
    for problem in PROBLEMS:
        if not (raw_path / problem).is_dir():
            logger.warning("%s: no %s/ folder, converting without %s cases", raw_path, problem, problem)
        train, test = split_cases(raw_path, problem)
        train_cases += train
        test_cases += test
    if not train_cases and not test_cases:
        raise DataError(
            f"{raw_path}: no case folders found under {{{', '.join(PROBLEMS)}}}/{{{', '.join(SUBSETS)}}}/caseNNNN"
        )
    written = []
    raw = raw_identity(raw_path)  # (a digest of every case file: computed once)
    for split, cases, cap in (("train", train_cases, n_train), ("test", test_cases, n_test)):
        available = sum(case.n_segments for case in cases)
        count = available if cap is None else cap
        require_samples(raw_path, f"{split} cases", available, count, 0, f"{split} segments of 20 frames")
        shape = (count, *size, SEGMENT_FRAMES, 3)
        blocks = _segment_blocks(cases, size, count)
        written.append(
            write_single_streamed(
                target.path(split),
                shape,
                blocks,
                f"{raw} {split} segments 0..{count - 1} of {available}",
                desc=f"{target.name} {split}",
                progress=progress,
            )
        )
    return written
