"""Tests of moepot.train.tasks: the original's tasks semantics and the task scheduler."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moepot.errors import ConfigError
from moepot.train import tasks as tasks_module
from moepot.train.config import TrainConfig
from moepot.train.tasks import available_devices, check_dataset_ids, describe_tasks, expand_tasks, run_tasks

# ---------------------------------------------------------------- expansion


def test_tasks_zip_their_lists_not_a_cartesian_product():
    raw = {"lr": 1.0, "opt": "adam", "tasks": {"lr": [0.001, 0.0001], "batch_size": [256, 32]}}
    assert expand_tasks(raw) == [
        {"lr": 0.001, "opt": "adam", "batch_size": 256},
        {"lr": 0.0001, "opt": "adam", "batch_size": 32},
    ]


def test_scalar_applies_to_every_task_and_nested_lists_stay_whole():
    raw = {
        "tasks": {
            "noise_scale": 0.0,
            "train_paths": [["ns2d_fno_1e-5", "swe_pdb"], ["dr_pdb"], ["cfdbench"]],
            "comment": ["a", "b", "c"],
        }
    }
    out = expand_tasks(raw)
    assert [t["train_paths"] for t in out] == [["ns2d_fno_1e-5", "swe_pdb"], ["dr_pdb"], ["cfdbench"]]
    assert [t["noise_scale"] for t in out] == [0.0, 0.0, 0.0]
    assert [t["comment"] for t in out] == ["a", "b", "c"]


def test_only_scalars_make_one_task():
    assert expand_tasks({"lr": 1, "tasks": {"lr": 2, "res": 64}}) == [{"lr": 2, "res": 64}]


@pytest.mark.parametrize("tasks", [None, {}, []])
def test_no_tasks_block_is_one_task(tasks):
    """As the original scheduler (``if task_params: ... else: one task``): an empty block too."""
    raw = {"lr": 0.1, "tasks": tasks} if tasks is not None else {"lr": 0.1}
    assert expand_tasks(raw) == [{"lr": 0.1}]


def test_unequal_lengths_name_the_keys():
    with pytest.raises(ConfigError) as info:
        expand_tasks({"tasks": {"lr": [1, 2], "batch_size": [1, 2, 3], "res": 64}})
    message = str(info.value)
    assert "'lr' has 2" in message and "'batch_size' has 3" in message and "same length" in message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"tasks": {"lr": []}}, "'lr'"),
        ({"tasks": [1, 2]}, "must map keys"),
        ({"tasks": {"tasks": [1]}}, "nested"),
        ({"tasks": {3: [1]}}, "strings"),
    ],
)
def test_malformed_tasks_are_config_errors(raw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        expand_tasks(raw)


def original_scheduler_expansion(config: dict) -> list[dict]:
    """A second implementation: the original scheduler's loop, with its argparse merge.

    The original wraps a scalar into a one-element list, requires equal lengths, takes the
    i-th element of every list, and passes the file's keys first and the task's keys after
    (argparse keeps the last), so a task value overrides the file's value.
    """
    grid = {k: (v if isinstance(v, list) else [v]) for k, v in config.get("tasks", {}).items()}
    n = len(next(iter(grid.values()))) if grid else 1
    runs = []
    for i in range(n):
        args = {k: v for k, v in config.items() if k != "tasks"}
        for key, values in grid.items():
            args[key] = values[i]
        runs.append(args)
    return runs


small_values = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2))


@settings(max_examples=150, deadline=None)
@given(
    base=st.dictionaries(st.sampled_from(["lr", "res", "comment", "x"]), small_values, max_size=3),
    n=st.integers(1, 4),
    columns=st.dictionaries(st.sampled_from(["lr", "batch_size", "comment", "y"]), st.just(None), max_size=3),
    data=st.data(),
)
def test_expansion_matches_the_original_scheduler(base, n, columns, data):
    # equal-length lists (what the original accepts without error), plus 1-long ones when n == 1
    grid = {key: data.draw(st.lists(small_values, min_size=n, max_size=n)) for key in columns}
    raw = {**base, "tasks": grid}
    assert expand_tasks(raw) == original_scheduler_expansion(raw)


# ---------------------------------------------------------------- dataset ids


def test_dataset_ids_of_every_task_are_checked_against_the_catalogue(tmp_path):
    good = TrainConfig(train_paths=["swe_pdb", "dr_pdb"], data_root=str(tmp_path))
    check_dataset_ids([good, good], "sweep.yaml")  # built-in ids: nothing to say
    late = good.model_copy(update={"test_paths": ["dr_pdb", "swe_pbd"]})
    with pytest.raises(ConfigError) as info:
        check_dataset_ids([good, good, late], "sweep.yaml")
    message = str(info.value)
    assert message.startswith("sweep.yaml (task 3 of 3): key 'test_paths': unknown dataset id 'swe_pbd'")
    assert "did you mean swe_pdb" in message
    with pytest.raises(ConfigError, match=r"^one.yaml: --set train_paths=\.\.\.: unknown dataset id 'x'"):
        check_dataset_ids([good.model_copy(update={"train_paths": ["x"]})], "one.yaml", frozenset({"train_paths"}))


# ---------------------------------------------------------------- describe (dry run)


def test_describe_lists_every_task_with_what_varies():
    configs = [
        TrainConfig.from_dict({"lr": lr, "batch_size": b, "comment": c})
        for lr, b, c in [(0.001, 256, "a"), (0.0001, 32, "b")]
    ]
    lines = describe_tasks(configs)
    assert len(lines) == 2
    assert "task 1/2" in lines[0] and "lr=0.001" in lines[0] and "batch_size=256" in lines[0]
    assert "task 2/2" in lines[1] and "lr=0.0001" in lines[1] and "batch_size=32" in lines[1]
    assert "epochs=" not in lines[0]  # the same in both tasks


# ---------------------------------------------------------------- scheduling


def make_configs(n: int, run_dir: Path | None = None) -> list[TrainConfig]:
    return [
        TrainConfig.from_dict({"comment": f"t{i}", "run_dir": str(run_dir) if run_dir else None})
        for i in range(n)
    ]


def test_sequential_runs_in_order_on_the_cpu():
    calls: list[tuple[str, str | None]] = []

    def run_one(cfg: TrainConfig, device: str | None) -> int:
        calls.append((cfg.comment, device))
        return 0

    assert run_tasks(make_configs(3), run_one, devices=[]) == 0
    assert calls == [("t0", None), ("t1", None), ("t2", None)]


def test_without_cuda_the_default_is_sequential_on_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []
    assert run_tasks(make_configs(2), lambda cfg, device: calls.append(device) or 0) == 0
    assert calls == [None, None]


def test_one_device_runs_every_task_there_in_this_process():
    calls = []
    run_tasks(
        make_configs(3), lambda cfg, device: calls.append((cfg.comment, device)) or 0, devices=["cuda:1"]
    )
    assert calls == [("t0", "cuda:1"), ("t1", "cuda:1"), ("t2", "cuda:1")]


@pytest.mark.parametrize("devices", [["cuda:1"], ["cuda:2", "cuda:0"]])
def test_a_single_task_runs_in_this_process_on_the_first_device(devices):
    calls = []
    assert run_tasks(make_configs(1), lambda cfg, device: calls.append(device) or 0, devices=devices) == 0
    assert calls == [devices[0]]


def test_a_failing_task_does_not_stop_the_others_and_sets_the_status():
    from moepot.errors import DataError

    seen = []

    def run_one(cfg: TrainConfig, device: str | None) -> int:
        seen.append(cfg.comment)
        if cfg.comment == "t0":
            raise DataError("dataset 'x' missing")
        return 5 if cfg.comment == "t1" else 0

    assert run_tasks(make_configs(3), run_one, devices=[]) == 2  # the first failure: a user error
    assert seen == ["t0", "t1", "t2"]


def test_a_single_task_propagates_its_error():
    def run_one(cfg: TrainConfig, device: str | None) -> int:
        raise ConfigError("bad option")

    with pytest.raises(ConfigError, match="bad option"):
        run_tasks(make_configs(1), run_one, devices=[])


def test_available_devices_honours_the_device_key(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert available_devices(None) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert available_devices("0,2") == ["cuda:0", "cuda:2"]
    assert available_devices("1,7") == ["cuda:1"]  # 7 is not visible
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available_devices("0,1") == []


def record_run(cfg: TrainConfig, device: str | None) -> int:
    """A fake task for the spawned processes: record where and when it ran.

    Task t0 holds its device until t2 has finished, so t1 and t2 can only complete if the
    scheduler runs them at the same time as t0, on the other device.
    """
    folder = Path(cfg.run_dir)
    started = time.time()
    if cfg.comment == "t0":
        deadline = started + 120
        while not (folder / "t2.json").exists() and time.time() < deadline:
            time.sleep(0.05)
    record = {"task": cfg.comment, "device": device, "start": started, "end": time.time()}
    (folder / f"{cfg.comment}.json.tmp").write_text(json.dumps(record))
    (folder / f"{cfg.comment}.json.tmp").rename(folder / f"{cfg.comment}.json")
    return 3 if cfg.comment == "t1" else 0


@pytest.mark.slow
def test_several_devices_run_one_task_per_free_device(tmp_path):
    configs = make_configs(3, run_dir=tmp_path)
    status = run_tasks(configs, record_run, devices=["cuda:0", "cuda:1"])
    records = {r["task"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("*.json"))}
    assert sorted(records) == ["t0", "t1", "t2"]
    assert status == 3  # the failing task's status
    # the first tasks take the devices in order; t0 holds cuda:0, so t2 goes where t1 ran
    assert [records[t]["device"] for t in ("t0", "t1", "t2")] == ["cuda:0", "cuda:1", "cuda:1"]
    assert records["t1"]["end"] <= records["t2"]["start"]  # one task at a time per device
    assert records["t2"]["end"] <= records["t0"]["end"]  # t0 waited for t2: they overlapped


def test_module_exposes_the_contract_signature():
    import inspect

    params = list(inspect.signature(tasks_module.run_tasks).parameters)
    assert params == ["configs", "run_one", "devices"]
