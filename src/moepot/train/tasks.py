"""The original's ``tasks:`` sweeps: expansion into runs, and running them on the free devices.

A config file may end with a ``tasks:`` block. It is **not** a cartesian product: every key
lists one value per task, all lists have the same length n, and task i takes the i-th value
of every key (on top of the file's other keys, which it overrides). A scalar applies to every
task; a value that is itself a list (``train_paths`` of one task) stays whole::

    lr: 0.001            # base value
    tasks:
      lr: [0.001, 0.0001]          # task 1: lr 0.001, batch 256; task 2: lr 0.0001, batch 32
      batch_size: [256, 32]
      train_paths: [[a, b], [c]]   # task 1 trains on a and b, task 2 on c
      noise_scale: 0.0             # both tasks

:func:`run_tasks` runs the expanded configs one after another in this process (CPU, or a
single device), or, given several GPUs, one task per free GPU in its own process, starting
the next task on whichever GPU finishes first (the original's scheduler, without its
memory-usage probe: a GPU counts as free when none of our tasks runs on it).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from moepot.errors import ConfigError, MoepotError

if TYPE_CHECKING:
    from moepot.train.config import TrainConfig

logger = logging.getLogger(__name__)

#: run_one(config, device) -> exit status; device is None (CPU / this process's default) or "cuda:<i>".
RunOne = Callable[["TrainConfig", "str | None"], int]


def expand_tasks(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Split a raw config mapping into one flat mapping per task (the original's semantics).

    Args:
        raw: the YAML mapping; its optional ``tasks`` key maps keys to a list of per-task
            values or to one scalar for all tasks.

    Returns:
        One dict per task: ``raw`` without ``tasks``, updated with the task's values. Without
        a ``tasks`` block, or with an empty one (``tasks:``, ``tasks: {}``, ``tasks: []``), a
        single task, as the original's scheduler does (``load_config`` warns about the empty block).

    Raises:
        ConfigError: ``tasks`` is not a mapping, a list is empty, or the lists differ in length
            (the message names the keys and their lengths).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping of keys to values, got {type(raw).__name__}")
    base = {key: value for key, value in raw.items() if key != "tasks"}
    grid = raw.get("tasks")
    if grid is None or (isinstance(grid, Mapping | list) and not grid):
        return [base]  # the original's scheduler: an empty block runs the file's keys as one task
    if not isinstance(grid, Mapping):
        raise ConfigError(f"'tasks' must map keys to lists of per-task values, got {type(grid).__name__}")
    for key in grid:
        if not isinstance(key, str):
            raise ConfigError(f"tasks: keys must be strings, got {key!r}")
        if key == "tasks":
            raise ConfigError("tasks: a 'tasks' block cannot be nested inside 'tasks'")

    lengths = {key: len(values) for key, values in grid.items() if isinstance(values, list)}
    empty = [key for key, n in lengths.items() if n == 0]
    if empty:
        raise ConfigError(
            f"tasks: {', '.join(repr(k) for k in empty)} list no value (one value per task expected)"
        )
    if len(set(lengths.values())) > 1:
        by_length = ", ".join(f"{key!r} has {n}" for key, n in lengths.items())
        raise ConfigError(
            f"tasks: every list must have the same length (one value per task), but {by_length} values"
        )
    n_tasks = next(iter(lengths.values()), 1)
    return [
        {**base, **{key: values[i] if isinstance(values, list) else values for key, values in grid.items()}}
        for i in range(n_tasks)
    ]


DATASET_KEYS = ("train_paths", "test_paths")  # config keys that hold catalogue dataset ids


def check_dataset_ids(configs: Sequence[TrainConfig], source: str, set_keys: frozenset[str] = frozenset()) -> None:
    """Check every task's ``train_paths`` and ``test_paths`` against its catalogue (the built-in
    entries, ``<data_root>/catalog.yaml`` and the task's ``catalog``), before any task trains.

    Raises:
        ConfigError: the first unknown id, naming ``source``, the task (when there are several),
            the key (``--set key=...`` when it is in ``set_keys``, the keys given with ``--set``)
            and the id, with the catalogue's close matches.
    """
    from moepot.data.catalog import load_catalog

    catalogs: dict[tuple[Any, Any], Any] = {}
    for i, config in enumerate(configs):
        where = source if len(configs) == 1 else f"{source} (task {i + 1} of {len(configs)})"
        place = (config.catalog, config.data_root)
        if place not in catalogs:
            catalogs[place] = load_catalog(*place)
        catalog = catalogs[place]
        for key in DATASET_KEYS:
            for name in getattr(config, key) or ():
                try:
                    catalog[name]  # its message names the id, the catalogues and the close matches
                except MoepotError as exc:
                    given = f"--set {key}=..." if key in set_keys else f"key {key!r}"
                    raise ConfigError(f"{where}: {given}: {exc}") from None


def describe_tasks(configs: Sequence[TrainConfig]) -> list[str]:
    """One line per task for ``--dry-run``: the command, model, datasets and the keys that vary."""
    dumps = [cfg.to_yaml_dict() for cfg in configs]
    varying = [key for key in dumps[0] if any(d[key] != dumps[0][key] for d in dumps)] if dumps else []
    lines = []
    for i, (cfg, dump) in enumerate(zip(configs, dumps, strict=True)):
        shown = {"model": cfg.model, "train_paths": cfg.train_paths}
        shown.update({key: dump[key] for key in varying})
        settings = ", ".join(f"{key}={value}" for key, value in shown.items())
        lines.append(f"task {i + 1}/{len(configs)} [{cfg.file}] {cfg.run_label()}: {settings}")
    return lines


def available_devices(restrict: str | None = None) -> list[str]:
    """The visible CUDA devices as ``"cuda:<i>"``, limited to the indices in ``restrict`` ("0,1").

    Returns an empty list without CUDA.
    """
    import torch

    if not torch.cuda.is_available():
        return []
    indices = list(range(torch.cuda.device_count()))
    if restrict:
        wanted = {int(part) for part in restrict.split(",") if part.strip()}
        missing = sorted(wanted - set(indices))
        if missing:
            logger.warning("device %s: GPU(s) %s are not visible and are skipped", restrict, missing)
        indices = [i for i in indices if i in wanted]
    return [f"cuda:{i}" for i in indices]


def run_tasks(
    configs: Sequence[TrainConfig],
    run_one: RunOne,
    devices: Sequence[str] | None = None,
) -> int:
    """Run every config; return 0 if all succeeded, else the first failing task's status.

    Args:
        configs: the expanded tasks (from :func:`moepot.train.config.load_config`).
        run_one: runs one task on one device and returns its exit status. With several
            devices it runs in a fresh (spawned) process, so it must be a module-level function.
        devices: device strings to spread the tasks over; ``None`` means the visible GPUs,
            restricted by the first config's ``device`` key. With fewer than two devices (or
            one task) the tasks run one after another in this process, on ``devices[0]`` or
            on ``None`` (CPU / the default device).

    A task that fails (non-zero status, or a :class:`~moepot.errors.MoepotError` when there
    are several tasks) is logged and the remaining tasks still run. With a single task its
    errors propagate unchanged, so the CLI reports them as usual.
    """
    configs = list(configs)
    if not configs:
        return 0
    if devices is None:
        devices = available_devices(configs[0].device)
    devices = list(devices)
    if len(configs) == 1:
        return int(run_one(configs[0], devices[0] if devices else None) or 0)
    if len(devices) < 2:
        return _run_sequential(configs, run_one, devices[0] if devices else None)
    return _run_concurrent(configs, run_one, devices)


def _run_sequential(configs: list[TrainConfig], run_one: RunOne, device: str | None) -> int:
    status = 0
    for i, cfg in enumerate(configs):
        logger.info("task %d/%d (%s) on %s", i + 1, len(configs), cfg.run_label(), device or "default device")
        try:
            code = int(run_one(cfg, device) or 0)
        except MoepotError as exc:
            logger.error("task %d/%d (%s) failed: %s", i + 1, len(configs), cfg.run_label(), exc)
            code = 2
        if code:
            logger.error("task %d/%d (%s) exited with status %d", i + 1, len(configs), cfg.run_label(), code)
            status = status or code
    return status


def _run_concurrent(configs: list[TrainConfig], run_one: RunOne, devices: list[str]) -> int:
    """One spawned process per task, at most one per device; a finished device takes the next task."""
    context = multiprocessing.get_context("spawn")
    free = list(devices)
    pending = list(enumerate(configs))
    running: dict[Any, tuple[int, str, multiprocessing.process.BaseProcess]] = {}
    codes: dict[int, int] = {}
    while pending or running:
        while pending and free:
            index, cfg = pending.pop(0)
            device = free.pop(0)
            process = context.Process(
                target=_task_process, args=(run_one, cfg, device), name=f"moepot-task-{index + 1}"
            )
            process.start()
            logger.info("task %d/%d (%s) started on %s", index + 1, len(configs), cfg.run_label(), device)
            running[process.sentinel] = (index, device, process)
        finished = multiprocessing.connection.wait(list(running))
        for sentinel in finished:
            index, device, process = running.pop(sentinel)
            process.join()
            codes[index] = process.exitcode if process.exitcode is not None else 1
            level = logging.INFO if codes[index] == 0 else logging.ERROR
            logger.log(
                level,
                "task %d/%d on %s finished with status %d",
                index + 1,
                len(configs),
                device,
                codes[index],
            )
            free.append(device)
    return next((codes[i] for i in sorted(codes) if codes[i]), 0)


def _task_process(run_one: RunOne, cfg: TrainConfig, device: str) -> None:
    """Body of a spawned task process: exit with run_one's status (2 for a user error)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = int(run_one(cfg, device) or 0)
    except MoepotError as exc:
        logging.getLogger(__name__).error("%s: %s", cfg.run_label(), exc)
        code = 2
    sys.exit(code)
