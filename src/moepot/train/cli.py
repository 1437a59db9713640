"""``moepot pretrain``, ``moepot finetune`` and ``moepot evaluate``.

pretrain / finetune read a YAML config (ours or the original's, ``tasks:`` block included),
apply ``--set key=value`` overrides and run every task (one run directory each; concurrently
on several GPUs, one after another on CPU). Under ``torchrun --nproc_per_node N -m moepot
pretrain ...`` every process runs the same command and the loop joins the process group.
evaluate loads a checkpoint (ours or official) and prints the per-dataset errors.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

from moepot.argtypes import output_dir, output_file, positive_float, positive_int
from moepot.errors import ConfigError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    for command, helptext in (
        ("pretrain", "pre-train a model on a mixture of datasets"),
        ("finetune", "fine-tune a pre-trained checkpoint"),
    ):
        parser = subparsers.add_parser(command, help=helptext, description=helptext)
        parser.add_argument("--config", required=True, help="YAML config file or shipped preset name")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config key (YAML value), repeatable")
        parser.add_argument("--data-root", metavar="DIR", help="root of the dataset files")
        parser.add_argument("--catalog", metavar="FILE", help="extra dataset catalogue (YAML)")
        parser.add_argument("--run-dir", type=output_dir, metavar="DIR", help="run directory (default runs/<name>-<time>)")
        parser.add_argument("--resume", metavar="auto|PATH",
                            help="continue exactly from the run directory's last checkpoint or PATH")
        parser.add_argument("--max-minutes", type=positive_float, help="wall-clock budget per task")
        parser.add_argument("--dry-run", action="store_true", help="list the tasks and exit")
        if command == "finetune":
            parser.add_argument("--checkpoint", help="pre-trained checkpoint, or a run directory for its last one "
                                "(default: the config's resume_path)")
        parser.set_defaults(func=functools.partial(run_training, command=command))

    parser = subparsers.add_parser("evaluate", help="evaluate a checkpoint on test datasets")
    parser.add_argument("--checkpoint", help="our checkpoint, a run directory (its last checkpoint) or an official .pth "
                        "(default: the config's resume_path)")
    parser.add_argument("--data", nargs="+", metavar="NAME", help="dataset names (default: the config's test_paths)")
    parser.add_argument("--config", help="YAML config or preset (e.g. evaluate) giving test_paths, res, n_test, "
                                         "batch_size, data_root, catalog; options given here win")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (YAML value), repeatable")
    parser.add_argument("--res", type=positive_int, help="evaluation grid (default: the model's)")
    parser.add_argument("--data-root", metavar="DIR", help="root of the dataset files")
    parser.add_argument("--catalog", metavar="FILE", help="extra dataset catalogue (YAML)")
    parser.add_argument("--n-test", type=positive_int, help="first N test trajectories of each dataset")
    parser.add_argument("--batch-size", type=positive_int, help="trajectories per batch (default 8)")
    parser.add_argument("--teacher-forced", action="store_true", help="also report the teacher-forced error")
    parser.add_argument("--save-rollouts", metavar="FILE", type=output_file,
                        help="write each dataset's input windows, predictions, targets and mask to HDF5, "
                             "with the settings and metrics as attributes")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run_evaluate)


def _warn_if_written_for_another(source: str, configs: list, command: str) -> None:
    """Name the command a config file was written for (its ``file`` key) when it is not ``command``."""
    others = {c.file for c in configs if "file" in c.model_fields_set} - {command}
    if others:
        hint = " (moepot evaluate --checkpoint FILE --config ...)" if "evaluate" in others else ""
        log.warning("%s: written for %s%s; running it as %s", source, " / ".join(sorted(others)), hint, command)


def prepare_configs(args: argparse.Namespace, command: str) -> list:
    """The validated tasks with the command-line options folded in."""
    from moepot.train.config import TIME_PLACEHOLDER, load_config

    configs = load_config(args.config, args.overrides)
    if args.resume == "auto" and (
        TIME_PLACEHOLDER in (args.run_dir or "")
        or (not args.run_dir and any(c.run_dir is None or TIME_PLACEHOLDER in c.run_dir for c in configs))
    ):
        raise ConfigError(
            "--resume auto continues the run in --run-dir (or the config's run_dir); without one every "
            "run gets a new timestamped directory with nothing to resume: give --run-dir DIR"
        )
    _warn_if_written_for_another(args.config, configs, command)
    # tasks that would share one directory (the config's run_dir, not varied by the tasks grid)
    # each get a subdirectory, as with --run-dir
    run_dirs = [c.run_dir for c in configs]
    shared_dirs = {d for d in run_dirs if d is not None and run_dirs.count(d) > 1}
    prepared = []
    for i, config in enumerate(configs):
        update: dict[str, Any] = {"file": command}
        if args.data_root:
            update["data_root"] = args.data_root
        if args.catalog:
            update["catalog"] = args.catalog
        if command == "finetune" and getattr(args, "checkpoint", None):
            update["resume_path"] = args.checkpoint
        start = update.get("resume_path", config.resume_path)
        if start and Path(start).is_dir():  # a run directory: its last checkpoint, recorded as that file
            from moepot.train.checkpoint import CheckpointManager

            update["resume_path"] = str(CheckpointManager.checkpoint_of(start))
        if args.run_dir:
            run_dir = Path(args.run_dir)
            update["run_dir"] = str(run_dir if len(configs) == 1 else run_dir / f"task{i}-{config.run_label()}")
        elif config.run_dir in shared_dirs:
            update["run_dir"] = str(Path(config.run_dir) / f"task{i}-{config.run_label()}")
        elif config.run_dir is None:
            # the time is filled in when the run starts (train() agrees on it across processes)
            suffix = "" if len(configs) == 1 else f"-task{i}"
            update["run_dir"] = str(config.default_run_dir(TIME_PLACEHOLDER + suffix))
        prepared.append(config.model_copy(update=update))
    if command == "finetune":
        missing = [i for i, c in enumerate(prepared) if not c.resume_path]
        if missing:
            raise ConfigError("finetune: give --checkpoint (or resume_path in the config) for every task")
    if args.resume and len(prepared) > 1 and args.resume != "auto":
        raise ConfigError("--resume PATH needs a config with a single task; use --resume auto for several")
    return prepared


def run_training(args: argparse.Namespace, command: str) -> int:
    from moepot.train.config import parse_overrides, resolve_config_path
    from moepot.train.tasks import check_dataset_ids, describe_tasks, run_tasks

    configs = prepare_configs(args, command)
    # every task's dataset ids, before the first one trains (and in --dry-run); the file named as
    # load_config's errors name it (a preset by its path)
    check_dataset_ids(configs, str(resolve_config_path(args.config)), frozenset(parse_overrides(args.overrides)))
    if args.dry_run:
        for line in describe_tasks(configs):
            print(line)
        for config in configs:
            if command == "finetune":  # the pre-trained start, which finetune requires
                print(f"  fine-tunes: {config.resume_path}")
            print(f"  run directory: {config.run_dir}")
        return 0
    run_one = functools.partial(
        run_task, finetune=command == "finetune", resume=args.resume, max_minutes=args.max_minutes
    )
    return run_tasks(configs, run_one)


def run_task(config, device: str | None, *, finetune: bool, resume: str | None = None,
             max_minutes: float | None = None) -> int:
    """One task (module level, so the task scheduler can run it in a spawned process)."""
    from moepot.train.loop import train

    if finetune:
        result = train(config.model_copy(update={"resume_path": None}), finetune_from=config.resume_path,
                       resume=resume, device=device, max_minutes=max_minutes)
    else:
        result = train(config, resume=resume, device=device, max_minutes=max_minutes)
    log.info("finished %s: step %d, checkpoint %s", result.run_dir, result.step, result.checkpoint)
    return 0


# keys of an evaluate config that the checkpoint's model decides (config key -> model field)
EVALUATE_MODEL_KEYS = {"T_in": "in_timesteps", "T_bundle": "out_timesteps", "n_channels": "in_channels"}


def _warn_model_keys_overruled(config_path: str, given: dict[str, Any], model: Any) -> None:
    """An evaluate config's ``T_in``/``T_bundle``/``n_channels`` that differ from the checkpoint's
    model are not applied (the model cannot take them): say so instead of ignoring them silently."""
    model_config = getattr(model, "config", None)
    for key, value in given.items():
        actual = getattr(model_config, EVALUATE_MODEL_KEYS[key], None)
        if value is not None and actual is not None and value != actual:
            log.warning("%s: %s = %s is not used: the checkpoint's model has %s = %s, and evaluate runs it as it is",
                        config_path, key, value, EVALUATE_MODEL_KEYS[key], actual)


def evaluation_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate``'s settings: the command-line options, else the config's (``--config``), else
    the defaults (the model's grid, every test trajectory, batch 8)."""
    settings: dict[str, Any] = {"data": None, "res": None, "n_test": None, "batch_size": 8, "data_root": None,
                                "catalog": None, "checkpoint": None}  # fmt: skip
    if args.config:
        from moepot.train.config import load_config

        configs = load_config(args.config, args.overrides)
        if len(configs) != 1:
            raise ConfigError(f"evaluate --config {args.config}: expected one task, the file has {len(configs)}")
        config = configs[0]
        given = config.model_fields_set  # keys the file (or --set) gave: the others keep evaluate's defaults
        settings.update({key: getattr(config, key) for key in ("res", "n_test", "batch_size", "data_root", "catalog")
                         if key in given and getattr(config, key) is not None})  # fmt: skip
        _warn_if_written_for_another(args.config, [config], "evaluate")
        if "file" in given and config.file == "evaluate":  # the original's evaluate.py reads the checkpoint
            settings["checkpoint"] = config.resume_path  # there (elsewhere it is a starting point)
        settings["data"] = list(config.test_paths or config.train_paths)
        settings["model_keys"] = {key: getattr(config, key) for key in EVALUATE_MODEL_KEYS if key in given}
    elif args.overrides:
        raise ConfigError("evaluate: --set needs --config")
    given = {"data": args.data, "res": args.res, "n_test": args.n_test, "batch_size": args.batch_size,
             "data_root": args.data_root, "catalog": args.catalog, "checkpoint": args.checkpoint}  # fmt: skip
    settings.update({key: value for key, value in given.items() if value is not None})
    if not settings["data"]:
        raise ConfigError("evaluate: name the datasets with --data NAME ... (or give a --config with test_paths)")
    if not settings["checkpoint"]:
        raise ConfigError("evaluate: give --checkpoint FILE (or a --config with resume_path)")
    return settings


def run_evaluate(args: argparse.Namespace) -> int:
    from moepot.eval.evaluate import evaluate_model
    from moepot.eval.metrics import format_error
    from moepot.train.checkpoint import CheckpointManager
    from moepot.train.loop import load_model_for_eval

    settings = evaluation_settings(args)
    checkpoint = CheckpointManager.checkpoint_of(settings["checkpoint"])  # the file read, for a run directory too
    model = load_model_for_eval(checkpoint, device=args.device)
    _warn_model_keys_overruled(args.config, settings.get("model_keys", {}), model)
    results = evaluate_model(
        model,
        settings["data"],
        res=settings["res"],
        data_root=settings["data_root"],
        catalog=settings["catalog"],
        n_test=settings["n_test"],
        batch_size=settings["batch_size"],
        teacher_forced=args.teacher_forced,
        save_path=args.save_rollouts,
        save_attrs={"checkpoint": str(checkpoint)},
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, values in results.items():
            print(f"{name}: " + "  ".join(f"{k} {format_error(v)}" for k, v in values.items()))
    if args.save_rollouts:  # on stderr under --json, whose stdout is the results alone
        print(f"rollouts: {args.save_rollouts}", file=sys.stderr if args.json else sys.stdout)
    return 0
