"""FNO incompressible Navier-Stokes vorticity files (``NavierStokes_V*_N*_T*.mat``) -> single split files.

Raw: variable ``u`` = vorticity at t = 1..T (t = 0, variable ``a``, is not used). MATLAB sees
``u`` as (N, S, S, T); a v7.3 file is HDF5 and h5py shows it reversed, ``[T, S2, S1, N]``. The
original permutes the h5py array with (3, 1, 2, 0) -- not a full reversal, so MATLAB
``u(n, i, j, t)`` lands at ``data[n, j, i, t]``. Old v5 files (read with scipy, natural
``[N, S1, S2, T]``) get (0, 2, 1, 3) to land the same way. Output ``data: [N, X, Y, T]`` float32
(no channel axis), train = the first ``n_train`` samples, test = the last ``n_test``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from moepot.data.converters.outputs import (
    OutputTarget,
    block_ranges,
    check_channels,
    dataset_keys,
    raw_identity,
    require_samples,
    write_single_streamed,
)
from moepot.errors import DataError

VORTICITY_KEY = "u"


@dataclass(frozen=True)
class VorticitySource:
    """Sample-major access to the vorticity of an open ``.mat`` file.

    Attributes:
        n_samples: N.
        sample_shape: ``(X, Y, T)`` of one output sample.
        read_block: ``(start, stop) -> [stop - start, X, Y, T]`` in output orientation.
    """

    n_samples: int
    sample_shape: tuple[int, int, int]
    read_block: Callable[[int, int], np.ndarray]


def _check_rank(raw_file: Path, shape: tuple[int, ...]) -> None:
    if len(shape) != 4:
        raise DataError(
            f"{raw_file}: variable '{VORTICITY_KEY}' has shape {shape}; expected 4 axes "
            "(N, X, Y, T in MATLAB order) as in the FNO NavierStokes_V*.mat files"
        )


def _no_vorticity(raw_file: Path, found: list[str]) -> DataError:
    return DataError(f"{raw_file}: no variable '{VORTICITY_KEY}' (found {found}); expected an FNO "
                     "NavierStokes_V*.mat file holding the vorticity 'u'")


@contextlib.contextmanager
def open_vorticity(raw_file: Path) -> Iterator[VorticitySource]:
    """Open an FNO ``.mat`` file (v7.3 through h5py, v5 through scipy) for block reads of ``u``."""
    if h5py.is_hdf5(raw_file):
        with h5py.File(raw_file, "r") as f:
            if not isinstance(f.get(VORTICITY_KEY), h5py.Dataset):
                raise _no_vorticity(raw_file, dataset_keys(f))
            u = f[VORTICITY_KEY]  # [T, S2, S1, N]
            _check_rank(raw_file, u.shape)
            n_time, s2, s1, n_samples = u.shape
            yield VorticitySource(
                n_samples=n_samples,
                sample_shape=(s2, s1, n_time),
                read_block=lambda lo, hi: np.asarray(u[:, :, :, lo:hi]).transpose(3, 1, 2, 0),
            )
        return

    import scipy.io

    try:  # a v5 file is read whole: these are the old, small releases
        variables = scipy.io.loadmat(raw_file, variable_names=[VORTICITY_KEY])
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, NotImplementedError, IndexError) as exc:
        raise DataError(
            f"{raw_file}: not a MATLAB .mat file readable by h5py (v7.3) or scipy (v5): {exc}"
        ) from exc
    if VORTICITY_KEY not in variables:
        raise _no_vorticity(raw_file, sorted(k for k in variables if not k.startswith("__")))
    u = variables[VORTICITY_KEY]  # [N, S1, S2, T]
    _check_rank(raw_file, u.shape)
    n_samples, s1, s2, n_time = u.shape
    yield VorticitySource(
        n_samples=n_samples,
        sample_shape=(s2, s1, n_time),
        read_block=lambda lo, hi: u[lo:hi].transpose(0, 2, 1, 3),
    )


def convert_fno(
    raw_path: Path, target: OutputTarget, n_train: int | None, n_test: int | None, progress: bool
) -> list[Path]:
    """Write ``target``'s train/test files ``data: [N, X, Y, T]`` from an FNO ``.mat`` file.

    Split: train = first ``n_train`` samples, test = last ``n_test`` (defaults: the catalogue's
    train_size / test_size, the original's 1000/200, 9800/200, 4800/200).
    """
    if raw_path.is_dir():
        raise DataError(f"{raw_path} is a directory; source 'fno' expects one NavierStokes_V*.mat file")
    check_channels(target, 1, raw_path, VORTICITY_KEY)
    with open_vorticity(raw_path) as source:
        n = source.n_samples
        n_train = target.train_size if n_train is None else n_train
        n_test = target.test_size if n_test is None else n_test
        require_samples(raw_path, VORTICITY_KEY, n, n_train, n_test, "first n_train train, last n_test test")
        bytes_per_sample = int(np.prod(source.sample_shape)) * 8
        splits = {"train": (0, n_train), "test": (n - n_test, n)}
        written = []
        for split, (lo, hi) in splits.items():
            blocks = (
                (start - lo, source.read_block(start, stop))
                for start, stop in block_ranges(lo, hi, bytes_per_sample)
            )
            path = target.path(split)
            shape = (hi - lo, *source.sample_shape)
            origin = f"{raw_identity(raw_path)} samples {lo}..{hi - 1} of {n}"
            written.append(
                write_single_streamed(
                    path, shape, blocks, origin, desc=f"{target.name} {split}", progress=progress
                )
            )
    return written
