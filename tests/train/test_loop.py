"""The training loop on tiny generated mixtures: learning, exact resume, NaN handling, locking."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from tiny_run import tiny_config

from moepot.errors import CheckpointError, ConfigError
from moepot.train import checkpoint as ckpt
from moepot.train.checkpoint import RunLock, load_checkpoint
from moepot.train.config import TrainConfig
from moepot.train.loop import train


def test_loss_falls_and_run_directory_is_complete(data_root, tmp_path):
    cfg = tiny_config(data_root, model="dpot", epochs=6, warmup_epochs=1, lr=0.01, noise_scale=0.0)
    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert result.step == 36  # 24 samples / batch 4 x 6 epochs
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.6 * first, result.losses
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [6, 12, 18, 24, 30, 36]
    assert set(records[-1]["metrics"]) == {"decay_a", "decay_b"}
    assert set(records[-1]["metrics"]["decay_a"]) == {"rel_l2_step", "rel_l2_rollout"}
    assert TrainConfig.from_dict(__import__("yaml").safe_load((tmp_path / "run" / "config.yaml").read_text())) == cfg
    state = load_checkpoint(result.checkpoint)
    assert state["step"] == 36 and state["epoch"] == 6
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_resume_after_interruption_reproduces_the_uninterrupted_losses(data_root, tmp_path):
    cfg = tiny_config(data_root, model="moepot", epochs=2, warmup_epochs=1, max_steps=9, noise_scale=0.01,
                 checkpoint_every_steps=3, eval_every_epochs=5)
    whole = train(cfg, run_dir=tmp_path / "whole", progress=False)
    cut = train(cfg, run_dir=tmp_path / "cut", stop_after_steps=5, progress=False)  # "killed" after step 5
    assert cut.losses == whole.losses[:5]
    resumed = train(cfg, run_dir=tmp_path / "cut", resume="auto", progress=False)  # from step 3
    assert resumed.losses == whole.losses[3:]
    a = load_checkpoint(whole.checkpoint)["model"]
    b = load_checkpoint(resumed.checkpoint)["model"]
    for key in a:  # MoE temperatures (buffers) included
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_from_the_last_steps_checkpoint_ends_like_the_uninterrupted_run(data_root, tmp_path):
    """Killed right after the checkpoint of the very last step (before the epoch's end and the
    final evaluation): the resumed run closes the epoch and evaluates as the whole run did."""
    cfg = tiny_config(data_root, model="dpot", epochs=2, warmup_epochs=1, checkpoint_every_steps=1, eval_every_epochs=1)
    whole = train(cfg, run_dir=tmp_path / "whole", progress=False)
    train(cfg, run_dir=tmp_path / "cut", stop_after_steps=12, progress=False)  # 2 epochs of 6 steps
    resumed = train(cfg, run_dir=tmp_path / "cut", resume="auto", progress=False)
    expected, got = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("step", "epoch", "batch_in_epoch", "evaluations"):
        assert got[key] == expected[key], key
    assert resumed.metrics == whole.metrics


def test_persistent_workers_and_a_mid_epoch_resume_give_the_in_process_losses(data_root, tmp_path):
    """Two DataLoader workers, kept across epochs (they must see every epoch's windows), and a
    resume in the middle of an epoch: the losses equal those of loading in the main process."""
    cfg = tiny_config(data_root, model="dpot", epochs=3, warmup_epochs=1, noise_scale=0.0, checkpoint_every_steps=4,
                 eval_every_epochs=5)
    in_process = train(cfg, run_dir=tmp_path / "main", progress=False).losses
    with_workers = cfg.model_copy(update={"num_workers": 2})
    train(with_workers, run_dir=tmp_path / "workers", stop_after_steps=9, progress=False)
    resumed = train(with_workers, run_dir=tmp_path / "workers", resume="auto", progress=False)  # from step 8
    assert len(in_process) == 18
    assert resumed.losses == in_process[8:]


def test_non_finite_steps_are_skipped_then_the_last_checkpoint_is_restored(data_root, tmp_path, poison_forwards,
                                                                          caplog):
    poison_forwards({4, 5, 6}, how="prediction")
    cfg = tiny_config(data_root, model="dpot", epochs=2, warmup_epochs=1, max_steps=8, nan_tolerance=2,
                 nan_lr_factor=0.5, checkpoint_every_steps=2, eval_every_epochs=5)
    with caplog.at_level("WARNING", logger="moepot.train"):
        result = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert result.skipped_steps == 3
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert "restored the last good checkpoint" in caplog.text
    assert "learning rate lowered by x0.5" in caplog.text
    state = load_checkpoint(result.checkpoint)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_a_second_run_in_the_same_directory_is_refused(data_root, tmp_path):
    cfg = tiny_config(data_root, model="dpot", epochs=1, warmup_epochs=0, lr_method="step", max_steps=1)
    with RunLock(tmp_path / "run"), pytest.raises(CheckpointError, match="in use by another run"):
        train(cfg, run_dir=tmp_path / "run", progress=False)


def test_full_disk_during_a_checkpoint_stops_with_a_clear_message(data_root, tmp_path, monkeypatch):
    cfg = tiny_config(data_root, model="dpot", epochs=2, warmup_epochs=1, max_steps=6, checkpoint_every_steps=2,
                 eval_every_epochs=5)
    real_save = torch.save
    saves = {"n": 0}

    def second_save_fails(obj, path):
        saves["n"] += 1
        if saves["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(ckpt.torch, "save", second_save_fails)
    with pytest.raises(CheckpointError, match="No space left on device"):
        train(cfg, run_dir=tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert not (tmp_path / "run" / ".lock").exists()


def test_bf16_autocast_trains_close_to_float32(data_root, tmp_path):
    base = dict(model="moepot", epochs=1, warmup_epochs=0, lr_method="step", max_steps=2, eval_every_epochs=5)
    fp32 = train(tiny_config(data_root, **base), run_dir=tmp_path / "fp32", progress=False)
    bf16 = train(tiny_config(data_root, amp="bf16", **base), run_dir=tmp_path / "bf16", progress=False)
    assert bf16.losses == pytest.approx(fp32.losses, rel=0.05)
    assert bf16.losses != fp32.losses  # autocast really changed the arithmetic


def test_wall_clock_budget_stops_after_the_current_step_with_eval_and_checkpoint(data_root, tmp_path):
    cfg = tiny_config(data_root, model="dpot", epochs=3, warmup_epochs=1, eval_every_epochs=5)
    result = train(cfg, run_dir=tmp_path / "run", max_minutes=0.0, progress=False)
    assert result.stopped_early and result.step == 1
    assert set(result.metrics) == {"decay_a", "decay_b"}
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 1


def test_tensorboard_gets_the_losses_and_the_throughput(data_root, tmp_path):
    """The scalars in the run's TensorBoard file are the run's own losses, and a positive
    samples/s per step (read back with TensorBoard's own event reader)."""
    pytest.importorskip("tensorboard")  # the ``train`` extra
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(data_root, model="dpot", epochs=2, warmup_epochs=1, max_steps=4, use_writer=True)
    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    assert [e.value for e in losses] == pytest.approx(result.losses, rel=1e-6)
    throughput = events.Scalars("train/samples_per_s")
    assert len(throughput) == 4 and all(0 < e.value < float("inf") for e in throughput)
    # the rate each step used: one-cycle starts at lr / 1e4 and ends near lr / 1e8, not past it
    rates = [e.value for e in events.Scalars("train/lr")]
    assert rates[0] == pytest.approx(cfg.lr / 1e4) and rates[-1] < rates[1]


def test_a_compiled_run_trains_like_an_eager_one(data_root, tmp_path, monkeypatch):
    """``compile: true`` with its ``compile_mode`` reaches ``torch.compile``, and the compiled
    run gives the eager run's losses and weights (compiled with the ``aot_eager`` backend: graph
    capture and AOTAutograd without a C++ build; the mode's CUDA graphs exist only on GPUs)."""
    modes, compile_for_real = [], torch.compile

    def compile_with_aot_eager(model, mode=None):
        modes.append(mode)
        return compile_for_real(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_with_aot_eager)
    runs = {}
    for compiled in (False, True):
        cfg = tiny_config(data_root, model="moepot", epochs=2, warmup_epochs=1, max_steps=3, noise_scale=0.0,
                          expert_dispatch="grouped", temperature_decay="step", compile=compiled,
                          compile_mode="reduce-overhead" if compiled else "default")  # fmt: skip
        runs[compiled] = train(cfg, run_dir=tmp_path / str(compiled), progress=False)
    assert modes == ["reduce-overhead"]
    assert runs[True].losses == pytest.approx(runs[False].losses, rel=1e-4)
    eager, compiled = (load_checkpoint(runs[c].checkpoint)["model"] for c in (False, True))
    # The router's conv biases feed a BatchNorm, so their true gradient is zero and Adam turns
    # rounding noise into lr-sized steps of either sign: they are the one thing left to compare.
    before_batchnorm = ("gating.gate.0.bias", "gating.gate.4.bias")
    for key, value in eager.items():
        if key.endswith(before_batchnorm):
            continue
        torch.testing.assert_close(compiled[key], value, rtol=1e-3, atol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


def test_a_model_that_does_not_compile_is_a_config_error(data_root, tmp_path, monkeypatch):
    """A compiler failure (here a backend that refuses every graph, as Inductor's C++ code
    generator does for MoE-POT under CPU bf16) names the option instead of a compiler traceback."""
    compile_for_real = torch.compile

    def refuse(graph, example_inputs):
        raise RuntimeError("no kernel for this graph")

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: compile_for_real(model, backend=refuse))
    cfg = tiny_config(data_root, model="moepot", epochs=2, warmup_epochs=1, max_steps=2, compile=True)
    with pytest.raises(ConfigError, match=r"compile: true .*could not compile the model on cpu.*no kernel for this"):
        train(cfg, run_dir=tmp_path / "run", progress=False)


def test_the_grouped_dispatch_trains_like_the_sparse_one(data_root, tmp_path):
    """``expert_dispatch`` reaches the model; the grouped matmul and the per-expert matmuls give
    the same training run (losses and weights) to float rounding."""
    runs = {}
    for dispatch in ("sparse", "grouped"):
        cfg = tiny_config(data_root, model="moepot", epochs=2, warmup_epochs=1, max_steps=4, noise_scale=0.0,
                          expert_dispatch=dispatch)  # fmt: skip
        runs[dispatch] = train(cfg, run_dir=tmp_path / dispatch, progress=False)
        assert load_checkpoint(runs[dispatch].checkpoint)["model_config"]["expert_dispatch"] == dispatch
    assert runs["grouped"].losses == pytest.approx(runs["sparse"].losses, rel=1e-4)
    sparse, grouped = (load_checkpoint(runs[d].checkpoint)["model"] for d in ("sparse", "grouped"))
    for key, value in sparse.items():
        torch.testing.assert_close(grouped[key], value, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize(
    ("test_paths", "n_test", "message"),
    [
        (["decay_a", "decay_c"], 2, "decay_c.*3 channels"),  # more channels than the model's 1
        (["decay_a", "decay_x"], 2, "decay_x"),  # not in the catalogue
        (["decay_a"], 99, "n_test asks for 99"),  # more test trajectories than the split has: the key named
    ],
)
def test_problems_of_the_test_sets_stop_the_run_before_the_first_step(tmp_path, test_paths, n_test, message):
    from tiny_data import write_decay_dataset, write_decay_mixture

    from moepot.errors import MoepotError

    write_decay_mixture(tmp_path)
    write_decay_dataset(tmp_path, "decay_c", channels=3, seed=3)
    cfg = tiny_config(tmp_path, model="dpot", train_paths=["decay_a"], test_paths=test_paths, n_test=n_test,
                      epochs=3, warmup_epochs=1, use_writer=True)  # fmt: skip
    with pytest.raises(MoepotError, match=message):
        train(cfg, run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()  # no step trained, nothing to lose
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))  # nor an empty TensorBoard log


def test_more_training_trajectories_than_stored_names_ntrain_list(tmp_path):
    """The key to change is the config's ``ntrain_list`` (e.g. the fine-tuning preset's 1000
    on a smaller dataset), not an internal argument name."""
    from tiny_data import write_decay_mixture

    from moepot.errors import DataError

    write_decay_mixture(tmp_path, n_train=12)
    cfg = tiny_config(tmp_path, model="dpot", train_paths=["decay_a"], ntrain_list=[1000])
    with pytest.raises(DataError, match=r"'decay_a'.*holds 12 samples but ntrain_list asks for 1000"):
        train(cfg, run_dir=tmp_path / "run", progress=False)


def test_resuming_a_finished_run_changes_nothing(data_root, tmp_path):
    cfg = tiny_config(data_root, model="dpot", epochs=2, warmup_epochs=0, lr_method="step", eval_every_epochs=1)
    first = train(cfg, run_dir=tmp_path / "run", progress=False)
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "checkpoints").iterdir()}
    again = train(cfg, run_dir=tmp_path / "run", resume="auto", progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == records  # no second final evaluation
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "checkpoints").iterdir()} == files
    assert (again.step, again.metrics, again.losses) == (first.step, first.metrics, [])
    # a longer schedule continues the finished run
    longer = train(cfg.model_copy(update={"epochs": 3}), run_dir=tmp_path / "run", resume="auto", progress=False)
    assert longer.step == first.step + 6 and len(longer.losses) == 6
    # its final checkpoint resumed into a new directory is evaluated there (on the new test sets)
    elsewhere = train(cfg.model_copy(update={"test_paths": ["decay_b"]}), run_dir=tmp_path / "new",
                      resume=first.checkpoint, progress=False)  # fmt: skip
    assert set(elsewhere.metrics) == {"decay_b"} and (tmp_path / "new" / "checkpoints" / "last.pt").is_file()


def test_a_budget_stop_on_the_last_step_completes_the_run(data_root, tmp_path):
    cfg = tiny_config(data_root, model="dpot", epochs=1, warmup_epochs=0, lr_method="step", max_steps=1)
    first = train(cfg, run_dir=tmp_path / "run", max_minutes=1e-9, progress=False)
    assert first.stopped_early and first.step == 1
    assert load_checkpoint(first.checkpoint)["complete"]
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    train(cfg, run_dir=tmp_path / "run", resume="auto", progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == records


def test_a_fresh_run_into_a_directory_with_checkpoints_is_refused(data_root, tmp_path):
    cfg = tiny_config(data_root, model="dpot", epochs=1, warmup_epochs=0, lr_method="step", max_steps=2,
                      keep_last=1, use_writer=True)  # fmt: skip
    train(cfg, run_dir=tmp_path / "run", progress=False)
    train(cfg, run_dir=tmp_path / "other", progress=False)

    def files() -> list[str]:
        return sorted(str(p.relative_to(tmp_path / "run")) for p in (tmp_path / "run").rglob("*"))

    before = files()
    with pytest.raises(CheckpointError, match=r"earlier run.*--resume auto"):
        train(cfg.model_copy(update={"max_steps": 1}), run_dir=tmp_path / "run", progress=False)
    # nor can another run's checkpoint be resumed into it (their files would mix)
    with pytest.raises(CheckpointError, match=r"earlier run"):
        train(cfg, run_dir=tmp_path / "run", resume=tmp_path / "other", progress=False)
    assert files() == before  # not even a TensorBoard event file


def test_resume_under_another_architecture_or_optimizer_is_a_clear_error(data_root, tmp_path):
    cfg = tiny_config(data_root, model="dpot", epochs=2, warmup_epochs=1, max_steps=3, checkpoint_every_steps=1)
    train(cfg, run_dir=tmp_path / "run", stop_after_steps=1, progress=False)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match=r"model differs.*mis-shaped keys: .*\(model: "):
        train(cfg.model_copy(update={"width": 32}), run_dir=tmp_path / "run", resume="auto", progress=False)
    with pytest.raises(CheckpointError, match=r"opt = 'adam', this config says 'lamb'"):
        train(cfg.model_copy(update={"opt": "lamb"}), run_dir=tmp_path / "run", resume="auto", progress=False)
    with pytest.raises(CheckpointError, match=r"'cycle' schedule spans 4 steps, this config's 6"):
        train(cfg.model_copy(update={"max_steps": 6}), run_dir=tmp_path / "run", resume="auto", progress=False)
    assert (tmp_path / "run" / "config.yaml").read_text() == saved  # the run's own config kept


def test_a_time_placeholder_in_the_run_directory_is_the_start_time(data_root, tmp_path):
    """Runs without --run-dir get `runs/<label>-{time}`, filled in by train() (which agrees on the
    time across torchrun processes), so every process writes to the same directory."""
    import re

    from moepot.cli import build_parser
    from moepot.train.cli import prepare_configs

    args = build_parser().parse_args(["pretrain", "--config", "tiny_cpu_dpot"])
    assert prepare_configs(args, "pretrain")[0].run_dir.endswith("-{time}")
    cfg = tiny_config(data_root, model="dpot", epochs=1, warmup_epochs=0, lr_method="step", max_steps=1)
    result = train(cfg, run_dir=tmp_path / "r-{time}", progress=False)
    assert re.fullmatch(r"r-\d{8}-\d{6}", result.run_dir.name) and (result.run_dir / "checkpoints").is_dir()
    # a {time} in the config's run_dir is saved resolved: the run's config.yaml resumes it
    placed = cfg.model_copy(update={"run_dir": str(tmp_path / "s-{time}")})
    result = train(placed, progress=False)
    saved = __import__("yaml").safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["run_dir"] == str(result.run_dir)
