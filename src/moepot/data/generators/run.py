"""``moepot data generate``: run the built-in generators, convert their output, record the sizes.

For each dataset id: build a :class:`GenerateRequest` (the spec's defaults, then the suite's
overrides, then explicit options), let the generator write the raw public layout under
``<data_root>/raw/<id>/``, convert it with :func:`moepot.data.converters.convert` into the
catalogue entry's protocol files, and record what was written (sizes, grid, frames, channels,
measured from the files) in ``<data_root>/catalog.yaml`` so every command given that data root
uses the generated data at once.

Finished output is reused: after a successful conversion a small JSON stamp (the request and
the package version) is written atomically to ``<data_root>/raw/<id>/generate.json``; a later
call with the same request finds the stamp and the protocol files and skips the work.

Seeding rule shared by every generator: trajectory ``index`` of ``split`` draws from
:func:`trajectory_rng` (a function of seed, dataset id, split and index only), so changing
``n_train`` never changes the test trajectories, and adding trajectories never changes the
earlier ones.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

import moepot
from moepot.data.catalog import (
    PRETRAIN_DATASETS,
    DatasetEntry,
    load_catalog,
    record_entries,
    resolve_data_root,
)
from moepot.data.generators import GenerateRequest, GeneratorSpec, all_generators
from moepot.errors import ConfigError, DataError
from moepot.io import atomic_path, check_directory_possible

logger = logging.getLogger(__name__)

# The paper's six pre-training sets, at a size that pre-trains a small model on 2 CPU cores.
SUITES: dict[str, list[str]] = {"quick": list(PRETRAIN_DATASETS)}
RAW_DIR = "raw"
STAMP_FILE = "generate.json"
SPLIT_CODES = {"train": 0, "test": 1}
MIN_SIZE = 8


# ---------------------------------------------------------------------------------------
# Seeding and trajectory order (used by every generator)


def trajectory_rng(seed: int, name: str, split: str, index: int) -> np.random.Generator:
    """The random generator of one trajectory: a function of (seed, dataset id, split, index) only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), SPLIT_CODES[split], index])


def trajectory_batches(n_train: int, n_test: int, batch_size: int) -> Iterator[list[tuple[str, int]]]:
    """``(split, index)`` lists in raw-file order: the n_train training, then the n_test test trajectories."""
    order = [("train", i) for i in range(n_train)] + [("test", i) for i in range(n_test)]
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


# ---------------------------------------------------------------------------------------
# Requests


def resolve_names(names: Sequence[str], suite: str | None) -> list[str]:
    """The suite's ids followed by ``names``, without repeats, checked against the generators."""
    if suite is not None and suite not in SUITES:
        raise ConfigError(f"unknown --suite {suite!r}; expected one of {', '.join(SUITES)}")
    wanted = list(dict.fromkeys([*(SUITES[suite] if suite else []), *names]))
    if not wanted:
        raise ConfigError(
            f"name at least one dataset id or --suite; generators exist for: {', '.join(all_generators())}"
        )
    available = all_generators()
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise ConfigError(
            f"no generator for dataset id(s) {', '.join(unknown)}; generators exist for: {', '.join(available)}"
        )
    return wanted


def _upstream_side(name: str) -> int | None:
    """The built-in catalogue's stored grid side of ``name`` (the upstream stored size)."""
    # A data root that cannot hold a catalog.yaml: the generators' own layer is left out.
    entry = load_catalog(data_root=os.devnull).get(name)
    return int(entry.in_size[0]) if entry is not None else None


def build_request(
    spec: GeneratorSpec,
    raw_dir: Path,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    size: int | None = None,
    stored_size: int | None = None,
    seed: int = 0,
    suite: str | None = None,
    progress: bool = True,
) -> GenerateRequest:
    """Spec defaults, then the suite's overrides, then explicit options; checked.

    A ``size`` given without ``stored_size`` stores at the upstream stored size when ``size`` is a
    multiple of it (FNO: simulate 256, store 64), otherwise at ``size``.
    """
    base = GenerateRequest(
        raw_dir=raw_dir,
        n_train=spec.n_train,
        n_test=spec.n_test,
        size=spec.size,
        stored_size=spec.stored_size,
        seed=seed,
        progress=progress,
    )
    if suite is not None:
        unknown = set(spec.quick) - {"n_train", "n_test", "size", "stored_size"}
        if unknown:
            raise ConfigError(
                f"generator {spec.name}: suite overrides {sorted(unknown)} are not request fields"
            )
        base = replace(base, **spec.quick)
    if size is not None:
        upstream = _upstream_side(spec.name) or base.stored_size
        stored_default = min(size, upstream) if size % min(size, upstream) == 0 else size
        if spec.stores_simulation_grid:
            stored_default = size
        base = replace(base, size=size, stored_size=stored_default)
    explicit = {"n_train": n_train, "n_test": n_test, "stored_size": stored_size}
    request = replace(base, **{key: value for key, value in explicit.items() if value is not None})
    _check_request(spec.name, request)
    if spec.max_size is not None and request.size > spec.max_size:
        raise ConfigError(f"{spec.name}: --size {request.size} is beyond this solver's limit of {spec.max_size}")
    if spec.stores_simulation_grid and request.stored_size != request.size:
        raise ConfigError(
            f"{spec.name}: --stored-size {request.stored_size} must equal --size {request.size} "
            "(this raw layout stores the simulation grid)"
        )
    return request


def _check_request(name: str, request: GenerateRequest) -> None:
    if request.n_train < 1:
        raise ConfigError(f"{name}: --n-train must be at least 1, got {request.n_train}")
    if request.n_test < 0:
        raise ConfigError(f"{name}: --n-test must be at least 0, got {request.n_test}")
    if request.size < MIN_SIZE:
        raise ConfigError(f"{name}: --size must be at least {MIN_SIZE}, got {request.size}")
    if request.stored_size < 1 or request.stored_size > request.size or request.size % request.stored_size:
        raise ConfigError(
            f"{name}: --stored-size {request.stored_size} must divide --size {request.size} "
            "(the stored grid is the simulation grid subsampled by an integer factor)"
        )
    if request.seed < 0:
        raise ConfigError(f"{name}: --seed must be >= 0, got {request.seed}")


# ---------------------------------------------------------------------------------------
# Stamps and outputs


def _stamp(spec: GeneratorSpec, request: GenerateRequest) -> dict:
    fields = {key: value for key, value in asdict(request).items() if key not in ("raw_dir", "progress")}
    return {"name": spec.name, "source": spec.source, **fields, "moepot_version": moepot.__version__}


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _output_paths(entry: DatasetEntry, data_root: Path) -> list[Path]:
    return [Path(entry.path(split, data_root)) for split in ("train", "test")]


def _outputs_present(paths: list[Path]) -> bool:
    return all(path.exists() for path in paths)


def _write_stamp(path: Path, stamp: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def measured_facts(entry: DatasetEntry, data_root: Path) -> dict:
    """Catalogue fields of the protocol files as written: sizes, grid, frames, channels.

    ``t_test`` is shortened when the stored frames cannot hold ``t_in + t_test``.
    """
    from moepot.data.protocol import SampleReader

    infos = {}
    for split in ("train", "test"):
        infos[split] = SampleReader(
            entry.path(split, data_root), entry.scatter, spatial_dims=entry.spatial_dims
        ).info()
    shape = infos["train"].sample_shape  # [X, Y(, Z), T, C]
    facts = {
        "train_size": infos["train"].n_samples,
        "test_size": infos["test"].n_samples,
        "in_size": list(shape[:-2]),
        "t_total": int(shape[-2]),
        "n_channels": int(shape[-1]),
    }
    if entry.t_in + entry.t_test > facts["t_total"]:
        if facts["t_total"] <= entry.t_in:
            raise DataError(
                f"{entry.name}: generated {facts['t_total']} frames but t_in = {entry.t_in} needs more"
            )
        facts["t_test"] = facts["t_total"] - entry.t_in
    return facts


# ---------------------------------------------------------------------------------------
# Orchestration


def generate(
    names: Sequence[str],
    *,
    data_root: str | os.PathLike | None,
    n_train: int | None = None,
    n_test: int | None = None,
    size: int | None = None,
    stored_size: int | None = None,
    seed: int = 0,
    suite: str | None = None,
    progress: bool = True,
    keep_raw: bool = False,
    workers: int | None = None,
    catalog_file: str | os.PathLike | None = None,
) -> dict[str, DatasetEntry]:
    """Generate, convert and catalogue each dataset id; return ``{id: DatasetEntry}``.

    Args:
        names: dataset ids with a generator (``moepot data generate --help`` lists them).
        data_root: root of the protocol files, the raw files (``raw/<id>/``) and ``catalog.yaml``
            (None: ``$MOEPOT_DATA_ROOT`` or the current directory).
        n_train, n_test, size, stored_size: override the spec's (or suite's) defaults.
        seed: base seed; the output is a deterministic function of the request.
        suite: a name of :data:`SUITES` whose ids come first.
        progress: show progress bars.
        keep_raw: keep the raw files after conversion (default: delete them, keep the stamp).
        workers: datasets generated at once, each in its own single-threaded process (None: one
            per CPU core, at most one per dataset; 1: in this process). The solvers are small
            and latency-bound, so one thread per dataset uses the cores better than sharing
            every core across one dataset at a time.
        catalog_file: your own catalogue layered over the built-in one and DATA_ROOT/catalog.yaml
            (None: ``$MOEPOT_CATALOG`` if set), as for the other ``data`` commands.

    Raises:
        ConfigError: an unknown id or suite, or an invalid size/count.
        DataError: the entry's output paths hold data that ``generate`` did not write.
    """
    wanted = resolve_names(names, suite)
    specs = all_generators()
    root = check_directory_possible(resolve_data_root(data_root))
    requests = {
        name: build_request(
            specs[name],
            root / RAW_DIR / name,
            n_train=n_train,
            n_test=n_test,
            size=size,
            stored_size=stored_size,
            seed=seed,
            suite=suite,
            progress=progress,
        )
        for name in wanted  # all checked before any work starts
    }
    if workers is None:
        workers = min(len(wanted), os.cpu_count() or 1)
    if workers <= 1 or len(wanted) == 1:
        for name in wanted:
            _generate_one(specs[name], requests[name], root, keep_raw=keep_raw, catalog_file=catalog_file)
    else:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch threads
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_thread) as pool:
            futures = [pool.submit(_generate_one, specs[name], requests[name], root, keep_raw=keep_raw,
                                   catalog_file=catalog_file)
                       for name in wanted]  # fmt: skip
            for future in futures:
                future.result()  # re-raises a worker's error here, with its message
    catalog = load_catalog(catalog_file, data_root=root)
    return {name: catalog[name] for name in wanted}


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _generate_one(spec: GeneratorSpec, request: GenerateRequest, root: Path, *, keep_raw: bool,
                  catalog_file: str | os.PathLike | None = None) -> None:
    from moepot.data.converters import convert

    entry = load_catalog(catalog_file, data_root=root)[spec.name]
    outputs = _output_paths(entry, root)
    stamp_path = Path(request.raw_dir) / STAMP_FILE
    stamp = _stamp(spec, request)
    previous = _read_stamp(stamp_path)
    if previous == stamp and _outputs_present(outputs):
        logger.info(
            "%s: reusing the data generated earlier with the same options (%s)", spec.name, stamp_path
        )
        record_entries(root, {spec.name: measured_facts(entry, root)})
        return
    existing = [path for path in outputs if path.exists()]
    if existing and previous is None:
        raise DataError(
            f"{spec.name}: {', '.join(map(str, existing))} already exist(s) and were not written by "
            f"`moepot data generate` (no stamp {stamp_path}); remove them or choose another --data-root"
        )
    for path in existing:
        _remove(path)
    # raw/<id>/ is generate's own: raw files kept (--keep-raw) from other options must not join
    # this request's (a converter reads every file in the folder)
    _remove(Path(request.raw_dir))
    Path(request.raw_dir).mkdir(parents=True, exist_ok=True)
    # a stamp that says "in progress" marks the outputs as ours should this run be killed: the
    # rerun then replaces them (it never equals a finished request's stamp)
    _write_stamp(stamp_path, {**stamp, "status": "in progress"})
    side = request.stored_size
    if tuple(entry.in_size) != (side, side):  # converters that resample (CFDBench) read in_size
        record_entries(root, {spec.name: {"in_size": [side, side]}})

    logger.info(
        "%s: generating %d train + %d test trajectories at %d (stored %d) into %s",
        spec.name,
        request.n_train,
        request.n_test,
        request.size,
        side,
        request.raw_dir,
    )
    raw_path = spec.write_raw(request)
    convert(
        spec.source,
        raw_path,
        name=spec.name,
        data_root=root,
        n_train=request.n_train,
        n_test=request.n_test,
        progress=request.progress,
        catalog_file=catalog_file,
    )
    entry = load_catalog(catalog_file, data_root=root)[spec.name]
    record_entries(root, {spec.name: measured_facts(entry, root)})
    _write_stamp(stamp_path, stamp)
    if not keep_raw:
        for path in Path(request.raw_dir).iterdir():
            if path.name != STAMP_FILE:
                _remove(path)
