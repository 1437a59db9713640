"""The training loop on tiny generated mixtures: learning, exact resume, NaN handling, locking."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_run import tiny_config

from moepot.errors import CheckpointError, ConfigError
from moepot.models.base import ModelOutput
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


# ---------------------------------------------------------------------------------------------
# One training step against its closed form: a one-parameter model on geometric-decay data


class ScaledLastFrame(torch.nn.Module):
    """Predicts ``a**k * (last input frame)`` for the k-th of its ``out_timesteps`` frames, class
    logits ``[c, 0]`` and balance loss ``b``; records its training inputs.

    On ``u_t = r**t * u0`` (decay_a: r = 0.8) the relative L2 of every sample is a function of
    ``a`` and ``r`` alone, so a step's loss and gradient are known in closed form.
    """

    def __init__(self, res: int, t_in: int, channels: int, bundle: int, a: float) -> None:
        super().__init__()
        self.config = SimpleNamespace(img_size=res, in_timesteps=t_in, in_channels=channels,
                                      out_timesteps=bundle)  # fmt: skip
        self.a = torch.nn.Parameter(torch.tensor(a))
        self.b = torch.nn.Parameter(torch.tensor(0.0))
        self.c = torch.nn.Parameter(torch.tensor(0.0))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> ModelOutput:
        if self.training:
            self.inputs.append(x.detach().clone())
        frames = torch.arange(1, self.config.out_timesteps + 1, dtype=x.dtype).reshape(1, 1, 1, -1, 1)
        powers = self.a**frames
        logits = torch.stack([self.c.expand(x.shape[0]), x.new_zeros(x.shape[0])], dim=-1)
        return ModelOutput(powers * x[..., -1:, :], logits, self.b * 1.0)


@pytest.fixture
def scaled_last_frame(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[ScaledLastFrame]]:
    """``scaled_last_frame(a)``: ``moepot.build_model`` builds :class:`ScaledLastFrame` from then
    on; returns the list that receives the models built."""
    import moepot

    def install(a: float = 0.5) -> list[ScaledLastFrame]:
        built: list[ScaledLastFrame] = []

        def build(name: str, **overrides: object) -> ScaledLastFrame:
            sizes = (overrides[key] for key in ("img_size", "in_timesteps", "in_channels", "out_timesteps"))
            built.append(ScaledLastFrame(*sizes, a))
            return built[-1]

        monkeypatch.setattr(moepot, "build_model", build)
        return built

    return install


def closed_form_step(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *, r: float, t_ar: int, bundle: int,
                     batch: int, real_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective, mean loss per sample and model call) of one step of :class:`ScaledLastFrame`
    on decay data of rate ``r`` with one real channel padded with ones to two.

    Call k predicts frames ``a**m * u`` (m = (k - 1) * bundle + 1, ..., k * bundle; the window
    rolls on the predictions) for targets ``r**m * u``; on the padding channel of ones it
    predicts ``a**m`` for 1. The
    relative L2 of a call is per channel over its frames, averaged over the scored channels;
    the objective sums it over the batch and the calls and adds 0.1 x b and 0.3 x the
    cross-entropy of logits [c, 0] for class 0 per sample, once per call.
    """
    calls = t_ar // bundle
    loss = a.new_zeros(())
    for k in range(calls):
        m = torch.arange(k * bundle + 1, (k + 1) * bundle + 1, dtype=torch.float64)
        real = torch.linalg.vector_norm(a**m - r**m) / torch.linalg.vector_norm(r**m)
        pad = torch.linalg.vector_norm(a**m - 1) / torch.linalg.vector_norm(torch.ones_like(m))
        loss = loss + (real if real_only else (real + pad) / 2)
    cross_entropy = torch.log1p(torch.exp(-c))
    objective = batch * loss + calls * (0.1 * b + 0.3 * batch * cross_entropy)
    return objective, loss / calls


@pytest.mark.parametrize(
    ("bundle", "mask_padded_channels", "grad_clip"),
    [(1, False, 1e4), (1, True, 1e4), (1, False, 1.0), (2, False, 1e4)],
)
def test_one_step_loss_and_gradient_match_the_closed_form(
    data_root: Path, tmp_path: Path, scaled_last_frame: Callable[..., list[ScaledLastFrame]], bundle: int,
    mask_padded_channels: bool, grad_clip: float,
) -> None:  # fmt: skip
    """architecture.md's training objective for a one-step run with T_ar = 2 (see
    :func:`closed_form_step`): the logged loss (mean per sample and model call) and the gradient,
    clipped to ``grad_clip``, which Adam's first moment holds after one step as (1 - beta1) x the
    gradient (weight decay 0). The gradient flows through the rollout (a**2 in call 2)."""
    scaled_last_frame(a=0.5)
    cfg = tiny_config(data_root, model="dpot", train_paths=["decay_a"], n_channels=2, n_class=2, T_ar=2,
                      T_bundle=bundle, lr_method="step", epochs=1, warmup_epochs=0, max_steps=1,
                      noise_scale=0.0, weight_decay=0.0, moe_loss_weight=0.1, n_cls_loss_weight=0.3,
                      grad_clip=grad_clip, mask_padded_channels=mask_padded_channels,
                      eval_every_epochs=5)  # fmt: skip
    params = [torch.tensor(value, dtype=torch.float64, requires_grad=True) for value in (0.5, 0.0, 0.0)]
    objective, per_call = closed_form_step(*params, r=0.8, t_ar=2, bundle=bundle, batch=4,
                                           real_only=mask_padded_channels)  # fmt: skip
    grad = torch.stack(torch.autograd.grad(objective, params))
    grad *= min(1.0, grad_clip / grad.norm().item())

    result = train(cfg, run_dir=tmp_path / "run", progress=False)
    assert result.losses == [pytest.approx(per_call.item(), rel=1e-5)]
    state = load_checkpoint(result.checkpoint)["optimizer"]
    beta1 = state["param_groups"][0]["betas"][0]
    first_moment = torch.stack([state["state"][i]["exp_avg"] for i in range(3)]).double()
    torch.testing.assert_close(first_moment, (1 - beta1) * grad, rtol=1e-5, atol=1e-7)


def test_the_loop_feeds_each_epochs_windows_in_the_samplers_order(
    data_root: Path, tmp_path: Path, scaled_last_frame: Callable[..., list[ScaledLastFrame]]
) -> None:
    """The model's inputs are the mixture items of each epoch (its random windows) in the order of
    the weighted sampler of that epoch, batch after batch, built here from the data API."""
    from moepot.data.catalog import load_catalog
    from moepot.data.mixture import MixtureDataset, WeightedMixtureSampler

    built = scaled_last_frame()
    cfg = tiny_config(data_root, model="dpot", train_paths=["decay_a", "decay_b"], data_weights=[1.0, 0.5],
                      lr_method="step", epochs=2, warmup_epochs=0, noise_scale=0.0, seed=3,
                      eval_every_epochs=5)  # fmt: skip
    train(cfg, run_dir=tmp_path / "run", progress=False)
    dataset = MixtureDataset(["decay_a", "decay_b"], split="train", res=16, t_in=4, t_ar=1,
                             catalog=load_catalog(data_root=data_root), seed=3)  # fmt: skip
    sampler = WeightedMixtureSampler(dataset, [1.0, 0.5], seed=3)
    expected = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches = [order[k : k + 4] for k in range(0, len(order) - 3, 4)]  # the last, short one dropped
        expected += [torch.stack([dataset[i].x for i in batch]) for batch in batches]
    got = built[0].inputs
    assert len(got) == len(expected) == 2 * (18 // 4)
    for step, (x, want) in enumerate(zip(got, expected)):
        torch.testing.assert_close(x, want, rtol=0, atol=0, msg=f"step {step + 1}")


def test_input_noise_is_scaled_per_sample_and_channel_and_spares_the_targets(
    tmp_path: Path, scaled_last_frame: Callable[..., list[ScaledLastFrame]]
) -> None:
    """architecture.md: x <- x + noise_scale * ||x|| * N(0, 1), ||x|| per sample and channel over
    X, Y, T. On spatially constant fields the clean input is known: each frame's spatial mean
    (the padding channel: ones), so the noise of every (sample, channel) is read off the model's
    input; its spread must be noise_scale x that channel's clean norm. With a = r the model
    predicts the clean target r * u exactly from a clean input, so the loss (real channel only:
    mask_padded_channels) is the input noise alone, ||a * noise of the last frame|| / ||r * u||;
    noise on the targets would add to it.
    """
    from tiny_data import write_decay_dataset

    write_decay_dataset(tmp_path, "flat", n_train=8, t_in=4, rate=0.8, constant=True, seed=5)
    a = r = 0.8
    built = scaled_last_frame(a=a)
    noise_scale = 1e-3
    cfg = tiny_config(tmp_path, model="dpot", train_paths=["flat"], n_channels=2, lr_method="step", epochs=1,
                      warmup_epochs=0, noise_scale=noise_scale, mask_padded_channels=True)  # fmt: skip
    result = train(cfg, run_dir=tmp_path / "run", progress=False, stop_after_steps=1)
    x = built[0].inputs[0].double()  # [4, 16, 16, 4, 2], noisy
    real = x[..., :1].mean(dim=(1, 2), keepdim=True).expand_as(x[..., :1])
    clean = torch.cat([real, torch.ones_like(x[..., 1:])], dim=-1)
    spread = (x - clean).pow(2).mean(dim=(1, 2, 3)).sqrt()  # [B, C]
    expected = noise_scale * torch.linalg.vector_norm(clean, dim=(1, 2, 3))
    torch.testing.assert_close(spread, expected, rtol=0.1, atol=0)  # 1024 draws each: ~2% sampling error

    last, clean_last = x[..., -1:, 0], clean[..., -1:, 0]
    error = torch.linalg.vector_norm(a * last - r * clean_last, dim=(1, 2, 3)) / torch.linalg.vector_norm(
        r * clean_last, dim=(1, 2, 3))  # fmt: skip
    assert result.losses == [pytest.approx(error.mean().item(), rel=0.02)]
