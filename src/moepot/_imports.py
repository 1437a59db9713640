"""Optional modules: parts of the package that contribute commands or generators when present."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_if_present(module_name: str) -> ModuleType | None:
    """Import ``module_name``; None if that module itself does not exist.

    An import error *inside* an existing module (a missing dependency, a bug) still raises, so
    a broken part is never silently skipped.
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
