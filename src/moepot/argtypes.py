"""Argument types shared by the subcommands' parsers: argparse reports a bad value as a one-line
usage error naming the option."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def fold_count(text: str) -> int:
    """Cross-validation folds: an integer >= 2 (one fold would leave nothing to train on)."""
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 cross-validation folds, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def output_dir(text: str) -> str:
    """A directory to write into: missing is fine (it is created), a file there is not."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: a file is there; give a directory (created if missing)")
    _check_directory_possible(text, text)
    return text


def output_file(text: str) -> str:
    """A file to write (replaced if it exists): not a directory, and not under a file."""
    path = Path(text)
    if path.is_dir() or text.endswith((os.sep, "/")):
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    _check_directory_possible(path.parent, text)
    return text


def _check_directory_possible(directory: str | Path, text: str) -> None:
    """:func:`moepot.io.check_directory_possible` as an argument error naming the option's value."""
    from moepot.errors import OutputError
    from moepot.io import check_directory_possible

    try:
        check_directory_possible(directory)
    except OutputError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc.strerror}") from None
