"""Sparse against dense expert dispatch of MoE-POT, on CPU.

The MoE-POT-Ti shape at resolution 64 (patch 8, so an 8 x 8 latent grid), batch 8,
``torch.set_num_threads(2)``. Three measurements, each the sparse time over the dense time
(lower is better; targets in brackets):

- ``moe_layer_ratio`` (<= 0.40): one MoE layer, forward + backward;
- ``train_step_ratio`` (<= 0.50): a full training step (forward, loss, backward, and the
  training loop's Adam step: ``moepot.train.optim.build_optimizer``, torch's fused kernel);
- ``inference_ratio`` (<= 0.45): a full eval-mode forward under ``torch.no_grad``.

Only the expert dispatch differs between those two sides: the dense path shares every other
fast building block of ours. Against the code users come from, two more ratios (no target)
time our sparse model against the same weights run in the original's formulation
(:mod:`benchmarks.original_formulation`: convolutions, the zero-filled AFNO, all 16 experts):

- ``vs_original_train_step_ratio`` and ``vs_original_inference_ratio`` (MoE-POT-Ti), and the
  same for DPOT-Ti (``vs_original_dpot_...``), whose trunk is the same as MoE-POT's.

Next to each time ratio the run counts the matmul FLOPs of both sides
(``torch.utils.flop_counter``: matmuls, convolutions, einsums; no elementwise work) and
reports their ratio (``*_flop_ratio``): the time ratio the sparse side would reach if every
FLOP on both sides ran at the same speed (the sparse side goes below it only by running its
FLOPs faster than the dense side runs its own).

The ``grouped`` dispatch (all chosen experts in one ``grouped_mm``, made for compiled GPU runs) is
timed against the sparse one on the same three measurements (``grouped_*_over_sparse``).

Like the ``moepot`` command line, the run first applies :func:`moepot.malloc.tune_malloc`
(freed tensor memory is reused instead of returned to the kernel). Both models hold the same weights and see the same inputs; sparse and dense runs alternate
(``repeats`` pairs) so machine noise hits both alike, and the medians are compared.

    python -m benchmarks.models_speed [--quick] [--one-thread]   # prints the markdown table
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.original_formulation import original_forward
from moepot.malloc import tune_malloc
from moepot.models.registry import build_model
from moepot.train.optim import build_optimizer

SHAPE = {"img_size": 64, "in_channels": 4, "in_timesteps": 10}
BATCH = 8


def median_pair(
    sparse: Callable[[], None], dense: Callable[[], None], repeats: int, warmup: int = 2
) -> tuple[float, float]:
    """Alternate the two callables (swapping which goes first every repeat, so drift hits both);
    return their median wall times in seconds."""
    for _ in range(warmup):
        sparse()
        dense()
    times: dict[str, list[float]] = {"sparse": [], "dense": []}
    for repeat in range(repeats):
        order = (("sparse", sparse), ("dense", dense))
        for name, call in order if repeat % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["sparse"]), statistics.median(times["dense"])


def _models(
    dispatches: tuple[str, str] = ("sparse", "dense"), preset: str = "moepot-ti"
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two ``preset`` models with the same weights and the two expert dispatches."""
    torch.manual_seed(0)
    first = build_model(preset, **SHAPE, expert_dispatch=dispatches[0])
    second = build_model(preset, **SHAPE, expert_dispatch=dispatches[1])
    second.load_state_dict(first.state_dict())
    return first, second


def _inputs(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch whose samples differ in scale, so they route to different experts."""
    scale = torch.logspace(-1, 1, BATCH).reshape(BATCH, 1, 1, 1, 1)
    x = torch.randn(BATCH, 64, 64, 10, 4, generator=generator) * scale
    y = torch.randn(BATCH, 64, 64, 1, 4, generator=generator) * scale
    return x, y


def matmul_flops(call: Callable[[], None]) -> int:
    """The matmul FLOPs (2 per multiply-add) of one ``call``, as ``FlopCounterMode`` counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return counter.get_total_flops()


def moe_layer_calls(dispatches: tuple[str, str] = ("sparse", "dense")) -> tuple[Callable[[], None], ...]:
    """One MoE layer's forward + backward under each of the two dispatches, as callables."""
    first_model, second_model = _models(dispatches)
    h = torch.randn(BATCH, 512, 8, 8, generator=torch.Generator().manual_seed(1))
    h = h * torch.logspace(-1, 1, BATCH).reshape(BATCH, 1, 1, 1)

    def step(layer: torch.nn.Module) -> Callable[[], None]:
        layer.train()

        def run() -> None:
            out, aux = layer(h)
            (out.square().mean() + aux).backward()
            layer.zero_grad(set_to_none=True)

        return run

    return step(first_model.moe_layers()[0]), step(second_model.moe_layers()[0])


def train_step(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, forward: Callable | None = None
) -> Callable[[], None]:
    """One training step of ``model`` on (x, y) as a callable: forward, loss with the balance
    term, backward, and the training loop's Adam step. ``forward(model, x)`` replaces the
    model's own forward if given."""
    optimizer = build_optimizer(model.parameters(), name="adam", lr=1e-6)

    def step() -> None:
        model.train()
        out = model(x) if forward is None else forward(model, x)
        loss = (out.pred - y).square().mean() + 0.1 * out.aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def inference(model: torch.nn.Module, x: torch.Tensor, forward: Callable | None = None) -> Callable[[], None]:
    """An eval-mode forward of ``model`` on x under ``torch.no_grad``, as a callable;
    ``forward(model, x)`` replaces the model's own forward if given."""

    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(x) if forward is None else forward(model, x)

    return run


def train_step_calls(dispatches: tuple[str, str] = ("sparse", "dense")) -> tuple[Callable[[], None], ...]:
    """A whole MoE-POT-Ti training step under each of the two dispatches, as callables."""
    first_model, second_model = _models(dispatches)
    x, y = _inputs(torch.Generator().manual_seed(2))
    return train_step(first_model, x, y), train_step(second_model, x, y)


def inference_calls(dispatches: tuple[str, str] = ("sparse", "dense")) -> tuple[Callable[[], None], ...]:
    """An eval-mode MoE-POT-Ti forward under each of the two dispatches, as callables."""
    first_model, second_model = _models(dispatches)
    x, _ = _inputs(torch.Generator().manual_seed(3))
    return inference(first_model, x), inference(second_model, x)


def bench_vs_original(preset: str, kind: str, repeats: int) -> tuple[float, float]:
    """Our ``preset`` (sparse dispatch) against the same weights run by :func:`original_forward`;
    ``kind`` is ``train_step`` or ``inference``."""
    ours, original = _models(("sparse", "sparse"), preset)  # original_forward ignores the dispatch
    x, y = _inputs(torch.Generator().manual_seed(2))
    if kind == "train_step":
        return median_pair(train_step(ours, x, y), train_step(original, x, y, original_forward), repeats)
    return median_pair(inference(ours, x), inference(original, x, original_forward), repeats)


def run(quick: bool = False, threads: int = 2) -> dict:
    """Measure the three ratios; ``quick`` uses fewer repeats (same shapes).

    ``threads`` is 2 by default (the reference setting); on a machine shared with other busy
    processes, OpenMP's thread synchronisation makes 2-thread timings erratic, and
    ``threads=1`` gives steadier numbers.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    repeats = 3 if quick else 15
    try:
        results: dict = {"shape": "moepot-ti, res 64, batch 8", "threads": threads, "repeats": repeats}
        for key, calls in MEASUREMENTS.items():
            sparse, dense = calls()
            sparse_flops, dense_flops = matmul_flops(sparse), matmul_flops(dense)
            sparse_s, dense_s = median_pair(sparse, dense, repeats)
            results[f"{key}_sparse_ms"] = round(1e3 * sparse_s, 2)
            results[f"{key}_dense_ms"] = round(1e3 * dense_s, 2)
            results[f"{key}_ratio"] = round(sparse_s / dense_s, 3)
            results[f"{key}_sparse_gflop"] = round(sparse_flops / 1e9, 2)
            results[f"{key}_dense_gflop"] = round(dense_flops / 1e9, 2)
            results[f"{key}_flop_ratio"] = round(sparse_flops / dense_flops, 3)
            grouped_s, sparse_again_s = median_pair(*calls(("grouped", "sparse")), repeats)
            results[f"grouped_{key}_ms"] = round(1e3 * grouped_s, 2)
            results[f"grouped_{key}_sparse_ms"] = round(1e3 * sparse_again_s, 2)
            results[f"grouped_{key}_over_sparse"] = round(grouped_s / sparse_again_s, 3)
        for key, preset, kind in VS_ORIGINAL:
            ours_s, original_s = bench_vs_original(preset, kind, repeats)
            results[f"{key}_ours_ms"] = round(1e3 * ours_s, 2)
            results[f"{key}_original_ms"] = round(1e3 * original_s, 2)
            results[f"{key}_ratio"] = round(ours_s / original_s, 3)
    finally:
        torch.set_num_threads(previous_threads)
    return results


VS_ORIGINAL = (  # result key, preset, measurement
    ("vs_original_train_step", "moepot-ti", "train_step"),
    ("vs_original_inference", "moepot-ti", "inference"),
    ("vs_original_dpot_train_step", "dpot-ti", "train_step"),
    ("vs_original_dpot_inference", "dpot-ti", "inference"),
)
MEASUREMENTS = {"moe_layer": moe_layer_calls, "train_step": train_step_calls, "inference": inference_calls}
TARGETS = {"moe_layer": 0.40, "train_step": 0.50, "inference": 0.45}


def markdown(results: dict) -> str:
    """The results as a markdown table."""
    rows = [
        "| measurement | sparse (ms) | dense (ms) | sparse / dense | target | matmul GFLOP sparse / dense | FLOP ratio (floor) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, target in TARGETS.items():
        rows.append(
            f"| {key.replace('_', ' ')} | {results[f'{key}_sparse_ms']} | {results[f'{key}_dense_ms']} "
            f"| {results[f'{key}_ratio']} | <= {target} "
            f"| {results[f'{key}_sparse_gflop']} / {results[f'{key}_dense_gflop']} | {results[f'{key}_flop_ratio']} |"
        )
    rows += [
        "",
        "| grouped dispatch (one grouped_mm) | grouped (ms) | sparse (ms) | grouped / sparse |",
        "|---|---|---|---|",
    ]
    for key in TARGETS:
        if f"grouped_{key}_over_sparse" in results:
            rows.append(
                f"| {key.replace('_', ' ')} | {results[f'grouped_{key}_ms']} | {results[f'grouped_{key}_sparse_ms']} "
                f"| {results[f'grouped_{key}_over_sparse']} |"
            )
    rows += [
        "",
        "| against the original's formulation, same weights | ours (ms) | original (ms) | ours / original |",
        "|---|---|---|---|",
    ]
    for k, preset, kind in VS_ORIGINAL:
        if f"{k}_ratio" in results:
            rows.append(
                f"| {preset} {kind.replace('_', ' ')} | {results[f'{k}_ours_ms']} | {results[f'{k}_original_ms']} "
                f"| {results[f'{k}_ratio']} |"
            )
    rows.append(
        f"\n{results['shape']}, {results['threads']} threads, median of {results['repeats']} alternating runs."
    )
    return "\n".join(rows)


if __name__ == "__main__":
    tune_malloc()
    print(markdown(run(quick="--quick" in sys.argv[1:], threads=1 if "--one-thread" in sys.argv[1:] else 2)))
