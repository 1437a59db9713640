"""Exceptions that carry a message meant for the user.

Every error a user can cause (a bad file, key, option, checkpoint) is raised as a subclass of
:class:`MoepotError` with a message that names the file, key, sample or option and what was
expected. The CLI prints such errors as one line and exits with status 2, never a traceback.
"""

from __future__ import annotations


class MoepotError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(MoepotError, ValueError):
    """An invalid configuration key, value or combination."""


class DataError(MoepotError, ValueError):
    """A dataset file, catalogue entry or sample that does not follow the protocol."""


class CheckpointError(MoepotError, ValueError):
    """A checkpoint that cannot be loaded safely or does not match the model."""


class OutputError(MoepotError, OSError):
    """An output path that cannot be written: a file where a directory is needed (or the
    reverse), no permission, a full disk. Also an ``OSError``, so writers that turn write
    failures into their own errors (``CheckpointError``) still catch it; ``strerror`` is the
    reason alone."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(reason)
        self.strerror = reason
        self.filename = str(path)

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"
