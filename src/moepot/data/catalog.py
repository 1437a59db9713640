"""The dataset catalogue: which dataset ids exist, where their files are, and their facts.

The catalogue is data, not code. It is built from YAML layers, each a mapping from dataset id
to fields (see :class:`DatasetEntry`), applied in this order, later layers overriding earlier
ones field by field:

1. the built-in catalogue shipped with the package (``moepot/data/catalog.yaml``: the 22 ids
   of the original code);
2. ``<data_root>/catalog.yaml`` if present (written by the generators via
   :func:`record_entries`);
3. the user's catalogue: ``--catalog FILE``, else ``$MOEPOT_CATALOG``.

An id that is new in a layer must give every required field; an id that already exists may
give only the fields it changes (e.g. ``train_size``). Paths are relative to the data root
(``--data-root``, else ``$MOEPOT_DATA_ROOT``, else the current directory). A relative path may
not escape the data root (``..``). Absolute paths are refused, except in the user's own
catalogue (layer 3), where writing one is an explicit choice. Symbolic links inside the data
root are followed without checks (a common way to place large data on another disk).
"""

from __future__ import annotations

import difflib
import fcntl
import functools
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import pydantic
import yaml

from moepot import yamlio
from moepot.errors import ConfigError, DataError
from moepot.io import atomic_path

ENV_DATA_ROOT = "MOEPOT_DATA_ROOT"
ENV_CATALOG = "MOEPOT_CATALOG"
CATALOG_FILENAME = "catalog.yaml"  # the generators' layer, at the data root
BUILTIN_ORIGIN = "built-in catalogue (moepot/data/catalog.yaml)"
SPLITS = ("train", "test")

#: The six pre-training datasets of the published MoE-POT runs (the training default, and the
#: generators' quick suite).
PRETRAIN_DATASETS: tuple[str, ...] = (
    "ns2d_fno_1e-5",
    "ns2d_fno_1e-3",
    "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2",
    "swe_pdb",
    "dr_pdb",
    "cfdbench",
)

# A dataset id: used in file names and on the command line, so kept to a safe alphabet.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# The original's name for `scatter`, accepted so its DATASET_DICT converts to YAML unchanged.
_ALIASES = {"scatter_storage": "scatter"}
_REQUIRED = ("train_path", "test_path", "train_size", "test_size", "scatter", "t_test", "t_total",
             "in_size", "n_channels")
_DEFAULT_T_IN = 10
_YAML_LOADER = yamlio.FAST_LOADER  # the C loader when libyaml is there; a repeated id or field is an error


_Count = Annotated[int, pydantic.Field(strict=True, ge=0)]
_Positive = Annotated[int, pydantic.Field(strict=True, gt=0)]


class _LayerFields(pydantic.BaseModel):
    """The fields one catalogue layer may give for one dataset id (all optional: overrides)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    train_path: pydantic.StrictStr | None = None
    test_path: pydantic.StrictStr | None = None
    train_size: _Count | None = None
    test_size: _Count | None = None
    scatter: pydantic.StrictBool | None = None
    t_in: _Positive | None = None
    t_test: _Positive | None = None
    t_total: _Positive | None = None
    in_size: tuple[_Positive, ...] | None = None
    n_channels: _Positive | None = None
    downsample: tuple[_Positive, ...] | None = None
    pred_channels: _Positive | None = None


FIELDS = tuple(_LayerFields.model_fields)


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset id and its facts (the original's ``DATASET_DICT`` row).

    Attributes:
        name: dataset id, e.g. ``ns2d_fno_1e-5``.
        train_path, test_path: the split's file (single storage) or directory of
            ``data_{i}.hdf5`` files (scatter storage), relative to the data root (or absolute,
            from a user catalogue only).
        train_size, test_size: how many samples the loader reads (the first ones of the split;
            the files may hold more, never fewer).
        scatter: one HDF5 file per trajectory (True) or one file per split (False).
        t_in: input steps the original used for this dataset (the model's T_in is the loader's).
        t_test: steps rolled out and scored in evaluation (frames [t_in, t_in + t_test)).
        t_total: stored time steps per trajectory.
        in_size: stored spatial size, (X, Y) or (X, Y, Z).
        n_channels: stored channels (1 for files without a channel axis).
        downsample: spatial stride per axis applied to the stored grid before resizing.
        pred_channels: channels scored in evaluation (the first ones); None = all.
        origins: field -> the catalogue file (or built-in) that set it, for error messages.
    """

    name: str
    train_path: str
    test_path: str
    train_size: int
    test_size: int
    scatter: bool
    t_in: int
    t_test: int
    t_total: int
    in_size: tuple[int, ...]
    n_channels: int
    downsample: tuple[int, ...]
    pred_channels: int | None = None
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    allow_absolute: frozenset[str] = field(default_factory=frozenset, compare=False, repr=False)

    @property
    def spatial_dims(self) -> int:
        """2 for (X, Y) data, 3 for (X, Y, Z)."""
        return len(self.in_size)

    def size(self, split: str) -> int:
        """Number of samples the loader reads from ``split``."""
        return self.train_size if _check_split(split) == "train" else self.test_size

    def path(self, split: str, data_root: str | os.PathLike) -> Path:
        """The file or scatter directory of ``split`` ("train" or "test") under ``data_root``."""
        key = f"{_check_split(split)}_path"
        raw = getattr(self, key)
        if posixpath.isabs(raw) or os.path.isabs(raw):
            return Path(raw)
        return Path(data_root) / posixpath.normpath(raw)

    def fields(self) -> dict[str, Any]:
        """The catalogue fields as YAML-ready plain values (tuples become lists)."""
        out: dict[str, Any] = {}
        for key in FIELDS:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def origin(self, key: str = "train_path") -> str:
        """The catalogue file that set ``key`` (for messages)."""
        return self.origins.get(key, BUILTIN_ORIGIN)


class Catalog(Mapping[str, DatasetEntry]):
    """Dataset id -> :class:`DatasetEntry`, plus the data root the paths resolve against.

    ``catalog[name]`` raises :class:`DataError` listing close matches for an unknown id.
    """

    def __init__(self, entries: Mapping[str, DatasetEntry], data_root: Path, sources: tuple[str, ...]):
        self._entries = dict(entries)
        self.data_root = data_root
        self.sources = sources

    def __getitem__(self, name: str) -> DatasetEntry:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._entries), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise DataError(
                f"unknown dataset id {name!r} (catalogues read: {', '.join(self.sources)}){hint} "
                "`moepot data list` shows every id; add your own with --catalog FILE."
            ) from None

    def get(self, name: str, default: DatasetEntry | None = None) -> DatasetEntry | None:
        return self._entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def path(self, name: str, split: str) -> Path:
        """Resolved file or directory of ``name``'s ``split`` under this catalogue's data root."""
        return self[name].path(split, self.data_root)


def resolve_data_root(arg: str | os.PathLike | None = None) -> Path:
    """The data root: ``arg`` (``--data-root``), else ``$MOEPOT_DATA_ROOT``, else the current directory."""
    if arg is not None and str(arg) != "":
        return Path(arg).expanduser()
    env = os.environ.get(ENV_DATA_ROOT)
    if env:
        return Path(env).expanduser()
    return Path.cwd()


def load_catalog(catalog_file: str | os.PathLike | None = None,
                 data_root: str | os.PathLike | None = None) -> Catalog:
    """Built-in entries, then ``<data_root>/catalog.yaml``, then ``catalog_file`` (or ``$MOEPOT_CATALOG``).

    Raises:
        DataError: a catalogue file that is missing, not YAML, or has an invalid entry (the
            message names the file, the dataset id and the field).
    """
    root = resolve_data_root(data_root)
    layers = [_builtin_layer()]
    root_file = root / CATALOG_FILENAME
    if root_file.is_file():
        layers.append((str(root_file), _read_layer(root_file), False))
    if catalog_file is None and os.environ.get(ENV_CATALOG):
        catalog_file = os.environ[ENV_CATALOG]
    if catalog_file is not None:
        user_file = Path(catalog_file).expanduser()
        if not user_file.is_file():
            raise DataError(f"catalogue file {user_file} does not exist (from --catalog or ${ENV_CATALOG})")
        layers.append((str(user_file), _read_layer(user_file), True))

    return Catalog(_merge(layers), root, tuple(origin for origin, _, _ in layers))


def record_entries(data_root: str | os.PathLike, entries: Mapping[str, Mapping[str, Any]]) -> Path:
    """Merge ``{name: {field: value}}`` into ``<data_root>/catalog.yaml`` (atomically) and return its path.

    Fields of an existing id are updated one by one; other ids are kept. Values may be numpy
    scalars, tuples or paths (stored as plain YAML). Paths must be relative to the data root.

    Raises:
        DataError: an unknown field, a value of the wrong type, or an entry that would be
            invalid once merged with the built-in catalogue.
    """
    root = Path(data_root)
    target = root / CATALOG_FILENAME
    update = _validate_layer({str(k): {str(f): _plain(v) for f, v in dict(fields).items()}
                              for k, fields in entries.items()}, f"record_entries({target})")
    root.mkdir(parents=True, exist_ok=True)
    # Read-modify-write under an exclusive lock: generators running in parallel processes record
    # their entries into the same file.
    with open(root / f".{CATALOG_FILENAME}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _read_layer(target) if target.is_file() else {}
        for name, fields in update.items():
            current.setdefault(name, {}).update(fields)
        _merge([_builtin_layer(), (str(target), current, False)])  # refuse an update that breaks an entry
        text = "# Written by moepot (generators): catalogue entries for the data under this root.\n"
        text += yaml.safe_dump({name: _yaml_ready(f) for name, f in current.items()}, sort_keys=False)
        with atomic_path(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return target


# ----------------------------------------------------------------------------------------------
# Parsing and validation


def _merge(layers: list[tuple[str, dict[str, dict[str, Any]], bool]]) -> dict[str, DatasetEntry]:
    """Apply (origin, layer, is_user_layer) layers in order, field by field; build checked entries."""
    merged: dict[str, dict[str, Any]] = {}
    origins: dict[str, dict[str, str]] = {}
    absolute_ok: dict[str, set[str]] = {}
    for origin, layer, is_user_layer in layers:
        for name, fields in layer.items():
            merged.setdefault(name, {}).update(fields)
            origins.setdefault(name, {}).update(dict.fromkeys(fields, origin))
            allowed = absolute_ok.setdefault(name, set())
            for key in ("train_path", "test_path"):
                if key in fields and is_user_layer:
                    allowed.add(key)
                elif key in fields:
                    allowed.discard(key)
    return {name: _build_entry(name, merged[name], origins[name], frozenset(absolute_ok[name]))
            for name in merged}


@functools.lru_cache(maxsize=1)
def _builtin_text() -> str:
    return resources.files("moepot.data").joinpath("catalog.yaml").read_text(encoding="utf-8")


def _builtin_layer() -> tuple[str, dict[str, dict[str, Any]], bool]:
    return BUILTIN_ORIGIN, _parse_layer(_builtin_text(), BUILTIN_ORIGIN), False


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _read_layer(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read catalogue file {path}: {exc}") from None
    return _parse_layer(text, str(path))


def _parse_layer(text: str, origin: str) -> dict[str, dict[str, Any]]:
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise DataError(f"{origin}: not valid YAML {yamlio.describe_error(exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(f"{origin}: expected a mapping from dataset id to fields, got {type(raw).__name__}")
    return _validate_layer(raw, origin)


def _validate_layer(raw: Mapping[Any, Any], origin: str) -> dict[str, dict[str, Any]]:
    """Check one layer's ids and fields; return {name: {field: value}} with only the given fields."""
    layer: dict[str, dict[str, Any]] = {}
    for name, fields in raw.items():
        if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
            raise DataError(f"{origin}: dataset id {name!r} must be a string of letters, digits and _.+-")
        if not isinstance(fields, dict):
            raise DataError(f"{origin}: dataset {name!r}: expected a mapping of fields, got {fields!r}")
        fields = dict(fields)
        for alias, key in _ALIASES.items():
            if alias in fields:
                if key in fields:
                    raise DataError(f"{origin}: dataset {name!r}: give {key!r} or its alias {alias!r}, not both")
                fields[key] = fields.pop(alias)
        nulls = [key for key, value in fields.items() if value is None and key != "pred_channels"]
        if nulls:  # (pred_channels: null means "every channel", its default)
            raise DataError(f"{origin}: dataset {name!r}: field(s) {nulls} are null; give a value or leave "
                            "the field out (an override layer then keeps the value below it)")
        try:
            parsed = _LayerFields.model_validate(fields)
        except pydantic.ValidationError as exc:
            raise DataError(f"{origin}: dataset {name!r}: {_describe(exc)}") from None
        layer[name] = parsed.model_dump(exclude_unset=True)
    return layer


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(entry)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {loc!r} (known: {', '.join(FIELDS)}, or scatter_storage)")
        else:
            parts.append(f"field {loc!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def _build_entry(name: str, values: dict[str, Any], origins: dict[str, str],
                 allow_absolute: frozenset[str]) -> DatasetEntry:
    def fail(key: str, message: str) -> DataError:
        return DataError(f"{origins.get(key, BUILTIN_ORIGIN)}: dataset {name!r}, field {key!r}: {message}")

    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        where = sorted(set(origins.values()))
        raise DataError(f"{', '.join(where)}: dataset {name!r} is missing required field(s) "
                        f"{', '.join(missing)} (a new id needs all of: {', '.join(_REQUIRED)})")
    values = dict(values)
    values.setdefault("t_in", _DEFAULT_T_IN)
    values.setdefault("downsample", (1,) * len(values["in_size"]))
    values.setdefault("pred_channels", None)

    for key in ("train_path", "test_path"):
        _check_path(values[key], key in allow_absolute, fail, key)
    if len(values["in_size"]) not in (2, 3):
        raise fail("in_size", f"expected 2 or 3 spatial sizes, got {list(values['in_size'])}")
    if len(values["downsample"]) != len(values["in_size"]):
        raise fail("downsample", f"expected one stride per spatial axis of in_size "
                                 f"{list(values['in_size'])}, got {list(values['downsample'])}")
    if values["t_in"] + values["t_test"] > values["t_total"]:
        raise fail("t_test", f"t_in + t_test = {values['t_in']} + {values['t_test']} exceeds "
                             f"t_total = {values['t_total']}")
    if values["pred_channels"] is not None and values["pred_channels"] > values["n_channels"]:
        raise fail("pred_channels", f"{values['pred_channels']} exceeds n_channels = {values['n_channels']}")
    return DatasetEntry(name=name, origins=dict(origins), allow_absolute=allow_absolute,
                        **{key: values[key] for key in FIELDS})


def _check_path(raw: str, absolute_ok: bool, fail, key: str) -> None:
    if raw.strip() == "":
        raise fail(key, "empty path")
    if posixpath.isabs(raw) or os.path.isabs(raw) or re.match(r"^[A-Za-z]:[\\/]", raw):
        if not absolute_ok:
            raise fail(key, f"absolute path {raw!r} refused: paths here are relative to the data root; "
                            "an absolute path may be given only in your own catalogue (--catalog)")
        return
    normal = posixpath.normpath(raw.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise fail(key, f"path {raw!r} escapes the data root; use a path inside it "
                        "(or an absolute path in your own catalogue)")


def _plain(value: Any) -> Any:
    """numpy scalars/arrays, tuples and paths -> plain Python values pydantic and YAML accept."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _yaml_ready(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()}
