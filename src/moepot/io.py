"""Small filesystem helpers shared by every writer (converters, generators, checkpoints)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from moepot.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory (same filesystem), so the final
    ``os.replace`` is atomic: readers see either the old file or the complete new one, never a
    half-written file, even if the process is killed mid-write. On any exception the temporary
    file is removed and the previous ``path`` (if any) is left untouched.

    Example::

        with atomic_path("out.hdf5") as tmp:
            with h5py.File(tmp, "w") as f:
                f["data"] = array
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, "it is a directory; expected a file name")
    try:
        make_dirs(path.parent)
    except OutputError as exc:
        raise OutputError(path, exc.strerror) from exc
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(path, why_unwritable(path.parent, exc)) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def make_dirs(directory: str | os.PathLike) -> Path:
    """``mkdir -p directory``; an ``OutputError`` naming it (and the file in the way, if any)
    when it cannot be created."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(directory, why_unwritable(directory, exc)) from exc
    return directory


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The nearest existing one of ``path`` and its ancestors when it is a file (so no directory
    ``path`` can be created), else None."""
    path = Path(path)
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_directory_possible(directory: str | os.PathLike) -> Path:
    """Raise an ``OutputError`` if ``directory`` cannot exist because a file is in the way (it or
    its nearest existing ancestor is a file); create nothing."""
    directory = Path(directory)
    blocker = file_in_the_way(directory)
    if blocker is not None:
        raise OutputError(directory, f"{blocker} is a file, not a directory")
    return directory


def why_unwritable(directory: Path, exc: OSError) -> str:
    """Why nothing can be written in ``directory``: the file in the way, else ``exc``'s reason."""
    blocker = file_in_the_way(directory)
    if blocker is not None:
        return f"{blocker} is a file, not a directory"
    return exc.strerror or str(exc)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
