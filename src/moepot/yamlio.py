"""YAML reading that refuses a key given twice in one mapping.

PyYAML keeps the last of two equal keys without a word, so a config with ``lr: 1e-3`` and, further
down, ``lr: 1e-4`` (or a catalogue entry repeated with other sizes) silently runs with whichever
came last. :func:`safe_load` raises a ``yaml.constructor.ConstructorError`` instead, marked at the
second occurrence, so every reader's existing "not valid YAML at line L, column C" message names
it. Merge keys (``<<: *base``) may still override what they merge in.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError


class _UniqueKeys:
    """Mixin for a PyYAML loader: a mapping with a repeated key is a ``ConstructorError``."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class reports unhashable keys
                if key in first_line:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r} (first given at line {first_line[key]})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)  # type: ignore[misc]


class UniqueKeySafeLoader(_UniqueKeys, yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing repeated keys."""


if hasattr(yaml, "CSafeLoader"):  # the C parser when libyaml is there

    class UniqueKeyCSafeLoader(_UniqueKeys, yaml.CSafeLoader):  # type: ignore[misc]
        """``yaml.CSafeLoader`` refusing repeated keys."""

    FAST_LOADER: type = UniqueKeyCSafeLoader
else:  # pragma: no cover
    FAST_LOADER = UniqueKeySafeLoader


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that raises ``ConstructorError`` on a key repeated in a mapping."""
    return yaml.load(text, Loader=UniqueKeySafeLoader)  # noqa: S506 (a SafeLoader subclass)


def describe_error(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: ``at line L, column C: problem`` (PyYAML's own text spans lines
    and quotes the source)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{where}{problem}"
