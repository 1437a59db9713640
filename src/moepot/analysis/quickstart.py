"""``moepot quickstart``: from nothing to a report in a few minutes.

Read top to bottom, :func:`run_quickstart` does:

1. **data**: generate the quick suite of the six pre-training datasets with the built-in
   generators into a cache (reused when already there; ``generate`` keeps stamps);
2. **models**: a small MoE-POT, and a DPOT of the same width and depth whose MLP hidden width is
   chosen so that its parameter count equals the MoE-POT's *activated* count (4 of 16 routed
   experts) within a few percent;
3. **budget**: time one training step and one evaluation forward of each model on this machine,
   and give both models the same number of optimizer steps, as many as fit in the time left
   (each run's full one-cycle schedule is planned for that many steps);
4. **training**: :func:`moepot.train.loop.train` for each model (same data, seed, steps);
5. **evaluation**: zero-shot ``rel_l2_step`` / ``rel_l2_rollout`` per dataset (the loop's final
   evaluation on ``n_test`` test trajectories) and one rollout per dataset for the figures;
6. **router analysis** of the MoE-POT on the test sets;
7. **report**: ``report.md`` and ``report.html`` (figures inline) plus ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch

import moepot
from moepot.analysis import figures, sections
from moepot.analysis.report import Report
from moepot.analysis.routing import analyze_routing, collect_test_routing
from moepot.data.catalog import PRETRAIN_DATASETS, load_catalog
from moepot.data.generators import all_generators
from moepot.data.generators.run import SUITES, generate
from moepot.errors import ConfigError
from moepot.eval.evaluate import evaluate_model
from moepot.io import atomic_path, make_dirs
from moepot.models.registry import describe, resolve_config
from moepot.train.config import TrainConfig
from moepot.train.loop import load_model_for_eval, train

if TYPE_CHECKING:
    from moepot.analysis.routing import RoutingAnalysis
    from moepot.data.catalog import Catalog

logger = logging.getLogger(__name__)

MODEL_LABELS = ("MoE-POT", "DPOT")
REPORT_RESERVE_S = 25.0  # figures, routing and the report, after training
MIN_STEPS = 10  # trained even when the budget is spent
EVALUATIONS = 2  # by the training loop: one in the middle of training, one at the end
DATA_OVERHEAD = 1.8  # loading, resizing, evaluation and bookkeeping around each timed step (measured ~1.7)
WARMUP_DIVISOR = 5  # one-cycle warm-up over the first 1/5 of the steps


@dataclass
class QuickstartOptions:
    """What the quickstart runs. ``None`` sizes take the per-device defaults of :data:`DEVICE_DEFAULTS`.

    Attributes:
        out: report directory (its ``train/`` sub-directory is replaced on every run).
        minutes: total wall-clock budget, data generation included.
        device: ``cpu`` or ``cuda`` (``cuda:N``).
        seed: seed of the data generation, the models and the training order.
        data_root: cache of the generated data.
        datasets: dataset ids; those with a built-in generator are generated (the quick suite),
            others must already be in ``data_root``'s catalogue.
        res, patch_size, width, depth, n_blocks, modes, out_layer_dim, batch_size: model and
            training sizes.
        t_in: input frames.
        n_test: test trajectories per dataset in the evaluation table.
        n_route: test trajectories per dataset in the router analysis (None: all).
        max_steps: cap on the optimizer steps per model (None: what the budget allows).
        progress: progress bars.
    """

    out: Path = Path("runs/quickstart")
    minutes: float = 8.0
    device: str = "cpu"
    seed: int = 0
    data_root: Path = Path("quickstart-data")
    datasets: Sequence[str] = PRETRAIN_DATASETS  # the paper's six
    res: int | None = None
    patch_size: int | None = None
    width: int | None = None
    depth: int | None = None
    n_blocks: int = 4
    modes: int | None = None
    out_layer_dim: int = 32
    batch_size: int | None = None
    t_in: int = 10
    n_test: int = 8
    n_route: int | None = None
    max_steps: int | None = None
    progress: bool = True


# Small enough for 2 CPU cores; a GPU affords the next size up.
DEVICE_DEFAULTS: dict[str, dict[str, int]] = {
    "cpu": {"res": 32, "patch_size": 4, "width": 64, "depth": 2, "modes": 5, "batch_size": 8},
    "cuda": {"res": 64, "patch_size": 4, "width": 128, "depth": 4, "modes": 9, "batch_size": 16},
}


@dataclass
class ModelRun:
    """One trained model of the comparison."""

    label: str
    family: str
    total_params: int
    activated_params: int
    mlp_ratio: float
    steps: int = 0
    train_seconds: float = 0.0
    checkpoint: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    run_dir: str = ""


@dataclass
class QuickstartSummary:
    """What the quickstart did and found; printed by the CLI and saved as ``summary.json``."""

    report: Path
    datasets: list[str]
    runs: list[ModelRun]
    routing_accuracy: float | None  # weighted routing vectors
    routing_chance: float | None
    routing_selection_accuracy: float | None  # which experts were chosen, weights dropped
    seconds: float

    def mean(self, run: ModelRun, metric: str = "rel_l2_rollout") -> float:
        return float(np.mean([run.metrics[d][metric] for d in self.datasets if d in run.metrics]))

    def text(self) -> str:
        lines = [f"quickstart finished in {self.seconds / 60:.1f} min on {len(self.datasets)} datasets"]
        for run in self.runs:
            lines.append(
                f"  {run.label:8s} {run.activated_params:>9,d} activated params, {run.steps} steps: "
                f"mean rel_l2_step {self.mean(run, 'rel_l2_step'):.4f}, "
                f"mean rel_l2_rollout {self.mean(run):.4f}"
            )
        if self.routing_accuracy is not None:
            lines.append(f"  dataset from MoE-POT routing: accuracy {self.routing_selection_accuracy:.2f} from the "
                         f"chosen experts, {self.routing_accuracy:.2f} weighted (chance {self.routing_chance:.2f})")
        lines.append(f"report: {self.report}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        runs = [{k: v for k, v in asdict(run).items() if k != "losses"} for run in self.runs]
        return {"report": str(self.report), "datasets": self.datasets, "runs": runs,
                "routing_accuracy": self.routing_accuracy, "routing_chance": self.routing_chance,
                "routing_selection_accuracy": self.routing_selection_accuracy,
                "seconds": self.seconds}


# --------------------------------------------------------------------------- the pipeline


def run_quickstart(options: QuickstartOptions) -> QuickstartSummary:
    """Generate data, pre-train MoE-POT and DPOT, evaluate them, analyse the router, write the report."""
    started = time.monotonic()
    sizes = resolve_sizes(options)
    out = make_dirs(options.out)  # an OutputError naming the file in the way, if there is one
    names = list(options.datasets)

    logger.info("1/5 data: quick suite in %s", options.data_root)
    catalog = ensure_data(names, options.data_root, seed=options.seed, progress=options.progress)
    n_channels = max(catalog[name].n_channels for name in names)

    moe_config = base_config(options, sizes, names, n_channels, family="moepot", mlp_ratio=1.0)
    dense_ratio = matched_mlp_ratio(moe_config)
    dense_config = base_config(options, sizes, names, n_channels, family="dpot", mlp_ratio=dense_ratio)
    runs = [describe_run(label, config) for label, config in zip(MODEL_LABELS, (moe_config, dense_config))]
    logger.info("2/5 models: %s", "; ".join(
        f"{r.label} {r.activated_params:,} activated of {r.total_params:,} params (mlp_ratio {r.mlp_ratio:.3g})"
        for r in runs))

    left_s = options.minutes * 60.0 - (time.monotonic() - started) - REPORT_RESERVE_S
    steps, plan = plan_steps([moe_config, dense_config], catalog, names, left_s, options)
    logger.info("3/5 budget: %d optimizer steps per model (%s)", steps, plan)

    train_dir = out / "train"
    shutil.rmtree(train_dir, ignore_errors=True)
    for run, config in zip(runs, (moe_config, dense_config)):
        logger.info("4/5 training %s for %d steps", run.label, steps)
        train_run(run, config, steps, train_dir / run.family, options, catalog, cap_s=plan["cap_s"])
        if run.steps < steps:  # stopped by the time cap: the next model gets the same step budget
            steps = run.steps

    logger.info("5/5 rollouts, router analysis and report")
    report_path, routing = write_quickstart_report(out, runs, names, sizes, options)
    weighted, selections = routing.classification, routing.selection_classification
    summary = QuickstartSummary(
        report=report_path, datasets=names, runs=runs,
        routing_accuracy=None if weighted is None else weighted.accuracy,
        routing_chance=None if weighted is None else weighted.chance,
        routing_selection_accuracy=None if selections is None else selections.accuracy,
        seconds=time.monotonic() - started,
    )
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary.to_dict(), indent=1))
    return summary


def resolve_sizes(options: QuickstartOptions) -> dict[str, int]:
    """Model and batch sizes: the options where given, else the device's defaults."""
    kind = "cuda" if options.device.startswith("cuda") else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {options.device}: CUDA is not available on this machine; use --device cpu")
    if kind == "cpu" and options.device != "cpu":
        raise ConfigError(f"--device {options.device!r}: expected cpu or cuda")
    sizes = dict(DEVICE_DEFAULTS[kind])
    for key in sizes:
        value = getattr(options, key)
        if value is not None:
            sizes[key] = value
    if sizes["res"] % sizes["patch_size"]:
        raise ConfigError(f"quickstart: res {sizes['res']} is not a multiple of patch_size {sizes['patch_size']}")
    return sizes


def ensure_data(names: Sequence[str], data_root: Path, *, seed: int, progress: bool) -> Catalog:
    """Generate the datasets that have a built-in generator, at their quick-suite sizes.

    ``generate`` reuses finished output (its stamps), so a second call costs nothing.

    Returns the catalogue of ``data_root``. Datasets without a generator must already be there.
    """
    specs = all_generators()
    to_generate = [name for name in names if name in specs]
    if set(to_generate) == set(SUITES["quick"]):  # the whole suite: generated in parallel processes
        generate([], data_root=data_root, seed=seed, progress=progress, suite="quick")
    else:
        for name in to_generate:  # the spec's quick-suite sizes, for this id only
            generate([name], data_root=data_root, seed=seed, progress=progress, **specs[name].quick)
    return load_catalog(data_root=data_root)


def base_config(options: QuickstartOptions, sizes: dict[str, int], names: Sequence[str], n_channels: int,
                *, family: str, mlp_ratio: float) -> TrainConfig:
    """The training configuration of one model (steps and epochs are set by :func:`train_run`)."""
    return TrainConfig.from_dict({
        "name": f"quickstart-{family}",
        "model": family,
        "width": sizes["width"],
        "n_layers": sizes["depth"],
        "n_blocks": options.n_blocks,
        "mlp_ratio": mlp_ratio,
        "patch_size": sizes["patch_size"],
        "modes": sizes["modes"],
        "out_layer_dim": options.out_layer_dim,
        "res": sizes["res"],
        "T_in": options.t_in,
        "n_channels": n_channels,
        "n_class": len(names),
        "normalize": False,
        "train_paths": list(names),
        "test_paths": list(names),
        "batch_size": sizes["batch_size"],
        "n_test": options.n_test,
        "data_root": str(options.data_root),
        "seed": options.seed,
        "use_writer": False,
        "keep_last": 1,
    })


def matched_mlp_ratio(moe_config: TrainConfig) -> float:
    """The DPOT ``mlp_ratio`` whose parameter count is closest to the MoE-POT's activated count.

    Same width, depth and everything else; the DPOT's hidden width ``Hm = int(D * ratio)`` is
    searched over whole numbers (counts on the meta device, no memory used).
    """
    overrides = moe_config.model_config_overrides()
    target = describe(resolve_config("moepot", **overrides))["activated_params"]
    width = overrides["embed_dim"]

    def dense_params(hidden: int) -> int:
        config = resolve_config("dpot", **{**overrides, "mlp_ratio": hidden / width})
        return describe(config)["total_params"]

    low, high = 1, width
    while dense_params(high) < target:  # grow the bracket
        low, high = high, high * 2
    while high - low > 1:  # the count grows with the hidden width: bisect
        middle = (low + high) // 2
        low, high = (middle, high) if dense_params(middle) < target else (low, middle)
    best = min((low, high), key=lambda h: abs(dense_params(h) - target))
    return best / width


def describe_run(label: str, config: TrainConfig) -> ModelRun:
    counts = describe(resolve_config(config.model_family, **config.model_config_overrides()))
    return ModelRun(label=label, family=config.model_family, total_params=counts["total_params"],
                    activated_params=counts["activated_params"], mlp_ratio=float(config.mlp_ratio))


# --------------------------------------------------------------------------- the budget


def plan_steps(
    configs: Sequence[TrainConfig], catalog: Catalog, names: Sequence[str], seconds: float,
    options: QuickstartOptions,
) -> tuple[int, dict[str, float]]:
    """Optimizer steps per model such that training and evaluating both fits in ``seconds``.

    Time per step and per evaluation forward are measured here on random batches; the
    evaluation cost is the loop's evaluations (``EVALUATIONS`` of ``n_test`` trajectories of
    ``t_test`` steps per dataset) plus the one-trajectory rollouts of the figures.
    """
    device = torch.device(options.device)
    rollout_frames = sum(catalog[name].t_test for name in names)
    eval_batches = math.ceil(options.n_test / configs[0].batch_size)
    step_s = forward_s = 0.0
    for config in configs:
        train_time, eval_time = time_model(config, device)
        step_s += train_time
        forward_s += eval_time
    eval_s = forward_s * rollout_frames * (EVALUATIONS * eval_batches + 1)
    affordable = int((seconds - eval_s) / (step_s * DATA_OVERHEAD))
    if affordable < MIN_STEPS and (options.max_steps or MIN_STEPS) >= MIN_STEPS:
        logger.warning("the budget of %.1f min is too small for this machine; training only %d steps "
                       "(raise --minutes)", options.minutes, MIN_STEPS)
    steps = max(MIN_STEPS, affordable)
    if options.max_steps is not None:
        steps = min(steps, options.max_steps)
    # Each run may take up to 1.5 times its planned share before the loop stops it (a busy
    # machine); the next run then trains as many steps as the capped one did.
    cap_s = max(seconds, 60.0) / len(configs) * 1.5
    plan = {"train_step_s": round(step_s, 4), "eval_forward_s": round(forward_s, 4),
            "evaluation_s": round(eval_s, 1), "cap_s": cap_s}
    return steps, plan


def time_model(config: TrainConfig, device: torch.device, repeats: int = 3) -> tuple[float, float]:
    """Seconds per training step (forward, backward, Adam) and per evaluation forward of ``config``'s model."""
    torch.manual_seed(0)
    model = moepot.build_model(config.model_family, **config.model_config_overrides()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    shape = (config.batch_size, config.res, config.res, config.T_in, config.n_channels)
    x = torch.randn(shape, device=device)
    target = torch.randn((*shape[:3], config.T_bundle, shape[4]), device=device)

    def train_step() -> None:
        out = model(x)
        loss = (out.pred - target).square().mean() + out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def eval_forward() -> None:
        with torch.no_grad():
            model(x)

    model.train()
    train_s = _seconds_per_call(train_step, repeats, device)
    model.eval()
    return train_s, _seconds_per_call(eval_forward, repeats, device)


def _seconds_per_call(function, repeats: int, device: torch.device) -> float:
    function()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


# --------------------------------------------------------------------------- training


def train_run(run: ModelRun, config: TrainConfig, steps: int, run_dir: Path, options: QuickstartOptions,
              catalog: Catalog, *, cap_s: float) -> None:
    """Train ``config`` for ``steps`` optimizer steps (one-cycle schedule over them); fill ``run``."""
    n_train = sum(catalog[name].train_size for name in config.train_paths)
    steps_per_epoch = max(n_train // config.batch_size, 1)
    epochs_run = max(math.ceil(steps / steps_per_epoch), 1)
    # max_steps ends the run; "epochs" only sets the one-cycle warm-up fraction
    # (warmup_epochs / epochs = 1/5), so it may exceed the epochs actually run.
    config = TrainConfig.from_dict({
        **config.to_yaml_dict(),
        "max_steps": steps,
        "epochs": WARMUP_DIVISOR * epochs_run,
        "warmup_epochs": epochs_run,
        "eval_every_epochs": max(math.ceil(epochs_run / EVALUATIONS), 1),
    }, source=f"quickstart {run.label} config")
    started = time.monotonic()
    result = train(config, run_dir=run_dir, device=options.device, max_minutes=cap_s / 60.0,
                   progress=options.progress)
    run.train_seconds = time.monotonic() - started
    run.steps = result.step
    run.metrics = result.metrics
    run.losses = list(result.losses)
    run.checkpoint = str(result.checkpoint) if result.checkpoint else ""
    run.run_dir = str(result.run_dir)
    if result.stopped_early:
        logger.warning("%s stopped by the time cap after %d of %d steps", run.label, result.step, steps)


# --------------------------------------------------------------------------- the report


def trained_for(runs: list[ModelRun]) -> str:
    """How long the models trained, for the report: the same steps, or (when the time cap stopped a
    later run short of the steps an earlier one took) each run's steps and a warning."""
    if len({run.steps for run in runs}) == 1:
        return f"for the same {runs[0].steps} optimizer steps"
    return (f"for {' and '.join(f'{run.steps} ({run.label})' for run in runs)} optimizer steps: NOT the same "
            "number (the time cap stopped a run early), so the comparison below is not at equal training")


def write_quickstart_report(out: Path, runs: list[ModelRun], names: list[str], sizes: dict[str, int],
                            options: QuickstartOptions) -> tuple[Path, RoutingAnalysis]:
    """Rollouts, router analysis, figures and the report; returns ``(report.html path, router analysis)``."""
    models = {run.label: load_model_for_eval(run.checkpoint, device=options.device) for run in runs}

    report = Report("moepot quickstart: MoE-POT vs DPOT", out)
    trained = trained_for(runs)
    report.text(
        f"Both models were pre-trained from scratch on the mixture of {len(names)} generated datasets "
        f"({', '.join(names)}) {trained} on a {sizes['res']}x{sizes['res']} grid "
        f"(batch {sizes['batch_size']}, same seed and schedule), then evaluated zero-shot on each dataset's test "
        f"split ({options.n_test} trajectories, autoregressive rollout). The DPOT's MLP width is chosen so that "
        f"its parameter count matches the MoE-POT's activated parameters (4 of 16 routed experts per layer)."
    )
    report.heading("Models")
    report.table(
        ["model", "activated params", "total params", "mlp_ratio", "steps", "train time (s)"],
        [[r.label, r.activated_params, r.total_params, round(r.mlp_ratio, 3), r.steps, round(r.train_seconds, 1)]
         for r in runs],
    )
    report.heading("Zero-shot error per dataset")
    report.text("rel_l2_step: mean relative L2 of each predicted step; rel_l2_rollout: relative L2 of the "
                "whole predicted trajectory (the paper's number). Lower is better.")
    sections.results_table(report, {r.label: r.metrics for r in runs})

    report.heading("Training curves")
    curves = figures.training_curves(
        {r.label: Path(r.run_dir) / "metrics.jsonl" for r in runs}, out / "training_curves.png",
        losses={r.label: r.losses for r in runs},
    )
    report.figure(curves, "Training loss per step (smoothed) and mean test error over the datasets at each evaluation.")

    report.heading("Rollouts")
    truths: dict[str, np.ndarray] = {}
    rollouts: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
    for run in runs:
        saved = out / f"rollouts_{run.label.lower().replace('-', '')}.hdf5"
        evaluate_model(models[run.label], names, data_root=options.data_root, n_test=1, save_path=saved,
                       save_attrs={"checkpoint": str(run.checkpoint)})
        for name, arrays in read_first_rollouts(saved).items():
            rollouts[name][run.label] = arrays["pred"]
            truths[name] = arrays["target"]
    sections.rollout_figures(report, rollouts, truths)

    moe = models[runs[0].label]
    record = collect_test_routing(moe, names, n_samples=options.n_route, data_root=options.data_root,
                                  progress=options.progress)
    analysis = analyze_routing(record)
    sections.routing_section(report, analysis, top_k=record.top_k)
    html_path = report.write()[1]
    return html_path, analysis


def read_first_rollouts(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{dataset: {"pred", "target"}}``: the first trajectory ``[X, Y, T, C]`` of each group of a rollout file."""
    with h5py.File(path, "r") as handle:
        return {name: {key: np.asarray(group[key][0]) for key in ("pred", "target")}
                for name, group in handle.items()}
