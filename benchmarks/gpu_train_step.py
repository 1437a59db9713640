"""GPU training-step benchmark: MoE-POT-Ti and -S, res 128, batch 20, bf16, by expert dispatch.

    python -m benchmarks.gpu_train_step [--out DIR] [--update BENCHMARKS.md] [--budget-seconds 240]
    python -m benchmarks.gpu_train_step --out DIR --profile moepot-ti:grouped:compile moepot-ti:sparse:eager

For each model (Ti, S), expert dispatch (sparse: each chosen expert runs once on its own
samples; grouped: the same as one grouped matmul with static shapes; dense: the original's
every expert on every sample; eager mode only) and mode (eager, ``torch.compile``, and
``cudagraphs``: ``torch.compile(mode="reduce-overhead")``, which adds CUDA graphs) it times full
training steps (bf16 autocast forward, relative-L2 + 0.1 x balance loss, backward, fused AdamW)
with CUDA events, alternating the variants in rounds; in eager mode also the same model run in the
original's formulation (:mod:`benchmarks.original_formulation`). It reports the median step
time, samples/s and the model FLOPs utilisation (MFU):

    MFU = model FLOPs per step / step time / measured bf16 matmul peak.

Model FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one eager sparse step
(matmuls and convolutions, forward + backward; the FFTs of the AFNO mixer are not counted, so
the MFU is a lower bound). The dense path does 4x the routed-expert work for the same result,
so its MFU (and the original formulation's) is computed with the same useful FLOPs. The peak is
measured on the card itself (8192^3 bf16 matmul on random data, median of 10). Every variant
decays the router temperature once per optimizer step (``temperature_decay="step"``: the same
arithmetic as the original's per-forward decay, without a graph break under compile).

Right after its timing, MoE-POT-S's sparse eager step and grouped compiled step (with and
without CUDA graphs) are profiled (``gpu_profile.txt``: GPU busy time against wall time, the top kernels); last, if the
budget allows, the grouped eager step of MoE-POT-S is timed at batch 20, 80 and 160 (a second
table: how the MFU grows once the batch fills the card).

Before timing, a check on the card itself: on one MoE layer of the S width, the grouped and
sparse dispatches (bf16 autocast, same weights and features, hence the same routing) must agree
in output and expert gradients, and experts no sample chose must get exactly zero gradient
(``grouped_check`` in the results; 4 samples fill at most 16 expert slots, so some experts
usually stay idle).

Needs only torch (no pydantic/h5py): run from the repository root with ``PYTHONPATH=src``.
A budget guard skips the remaining variants once ``--budget-seconds`` have passed; a variant
that fails (a compiler error, out of memory) is reported as a failed row and the others still
run; with ``--out`` the results are rewritten after every variant, so a run cut short by the
device's time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.original_formulation import original_forward
from moepot.eval.metrics import relative_l2
from moepot.models.moe import grouped_dispatch_available
from moepot.models.registry import build_model, count_parameters

T_IN, CHANNELS = 10, 4
MARK_BEGIN, MARK_END = "<!-- gpu-train-step:begin -->", "<!-- gpu-train-step:end -->"


def timed(fn, device: str) -> float:
    """Seconds one call of ``fn`` takes (CUDA events on the GPU, a host clock elsewhere)."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


def matmul_peak_tflops(device: str, n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = [timed(lambda: a @ b, device) for _ in range(reps)]
    return 2 * n**3 / statistics.median(times) / 1e12


def random_batch(batch: int, res: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [B, X, Y, T_in, C] and targets [B, X, Y, 1, C] drawn from N(0, 1)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, res, res, T_IN, CHANNELS, device=device, generator=gen)
    y = torch.randn(batch, res, res, 1, CHANNELS, device=device, generator=gen)
    return x, y


def training_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loop's loss without the balance term: the per-sample relative L2
    (:func:`moepot.eval.metrics.relative_l2`, in float32) summed over the batch."""
    return relative_l2(pred.float(), target.float()).sum()


class Variant:
    """One model + optimizer whose training step can be timed; ``dispatch`` is ``sparse``,
    ``grouped``, ``dense`` or ``original`` (the original's formulation, eager only)."""

    def __init__(self, preset: str, dispatch: str, mode: str, res: int, device: str) -> None:
        self.preset, self.dispatch, self.mode, self.device = preset, dispatch, mode, device
        experts = "sparse" if dispatch == "original" else dispatch
        model = build_model(preset, img_size=res, expert_dispatch=experts, temperature_decay="step")
        model = model.to(device).train()
        self.model = model
        if dispatch == "original":
            self.forward = functools.partial(original_forward, model)
        elif mode == "eager":
            self.forward = model
        else:
            self.forward = torch.compile(model, mode="reduce-overhead" if mode == "cudagraphs" else None)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
        self.times: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.mode == "cudagraphs":  # a new training iteration: the graphs' outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(self.device, dtype=torch.bfloat16):
            out = self.forward(x)
            loss = training_loss(out.pred, y) + 0.1 * out.aux_loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.step_temperature()

    def timed_steps(self, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
        for _ in range(n):
            self.times.append(timed(lambda: self.step(x, y), self.device))


def count_step_flops(preset: str, x: torch.Tensor, y: torch.Tensor, res: int) -> int:
    model = build_model(preset, img_size=res, expert_dispatch="sparse").to(x.device).train()
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(x.device.type, dtype=torch.bfloat16):
        out = model(x)
        loss = training_loss(out.pred, y) + 0.1 * out.aux_loss
        loss.backward()
    del model
    return counter.get_total_flops()


def grouped_check(dim: int, batch: int, grid: int, device: str) -> dict:
    """Grouped against sparse dispatch on this device, on one MoE layer (so both see the same
    routing): a bf16-autocast training forward + backward on the same weights and features;
    relative differences of the output and of the routed experts' weight gradients, and
    whether every unchosen expert's gradient is exactly zero."""
    from moepot.models.moe import MoELayer

    torch.manual_seed(0)
    layers = {d: MoELayer(dim, dim, dispatch=d).to(device).train() for d in ("sparse", "grouped")}
    layers["grouped"].load_state_dict(layers["sparse"].state_dict())
    gen = torch.Generator(device=device).manual_seed(1)
    scales = torch.logspace(-1, 1, batch, device=device).reshape(batch, 1, 1, 1)  # samples route apart
    h = torch.randn(batch, dim, grid, grid, device=device, generator=gen) * scales
    outs, grads = {}, {}
    for name, layer in layers.items():
        with torch.autocast(device, dtype=torch.bfloat16):
            out, aux = layer(h)
        (out.float().square().mean() + aux).backward()
        outs[name] = out.detach().float()
        grads[name] = torch.stack([e.conv[0].weight.grad for e in layer.experts]).float()
    chosen = set(layers["grouped"].last_topk_indices.flatten().tolist())
    unchosen = [e for e in range(len(layers["grouped"].experts)) if e not in chosen]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    return {
        "layer": f"D=Hm={dim}, batch {batch}, {grid}x{grid} latent",
        "same_routing": bool(torch.equal(layers["grouped"].last_topk_indices, layers["sparse"].last_topk_indices)),
        "out_rel_diff": round(rel(outs["grouped"], outs["sparse"]), 5),
        "expert_grad_rel_diff": round(rel(grads["grouped"], grads["sparse"]), 5),
        "unchosen_experts": len(unchosen),
        "unchosen_grads_exactly_zero": bool(all(grads["grouped"][e].abs().max() == 0 for e in unchosen)),
    }


def measure_preset(preset: str, mode: str, x: torch.Tensor, y: torch.Tensor, res: int, device: str,
                 peak: float, rounds: int, steps_per_round: int, failures: list[str],
                 profiles: dict[str, str] | None = None, profile_dispatches: tuple[str, ...] = ()) -> list[dict]:
    """The dispatches of ``preset`` (and in eager mode the original formulation) timed
    alternately; one result row each. A variant other than sparse that fails is appended to
    ``failures`` and left out. The variants in ``profile_dispatches`` are then profiled
    (:func:`profile_variant`, already compiled and warm) into ``profiles``."""
    flops = count_step_flops(preset, x, y, res)
    with torch.device("meta"):
        params = count_parameters(build_model(preset, img_size=res))
    # compiled: the two dispatches one would train with (a compiled dense model adds compile time, no answer)
    dispatches = ("sparse", "grouped", "dense", "original") if mode == "eager" else ("sparse", "grouped")
    if not grouped_dispatch_available():  # an older torch: measure the others
        dispatches = tuple(d for d in dispatches if d != "grouped")
    variants = []
    for dispatch in dispatches:  # build and warm up (compilation happens here); a failure drops one variant
        try:
            v = Variant(preset, dispatch, mode, res, device)
            for _ in range(3):
                v.step(x, y)
            variants.append(v)
        except Exception as exc:
            if dispatch == "sparse":
                raise
            traceback.print_exc()
            failures.append(f"{preset} {dispatch} {mode}: "
                            f"{type(exc).__name__}: {exc}"[:300])  # fmt: skip
    for _ in range(rounds):  # alternate the two sides so drift hits both
        for v in variants:
            v.timed_steps(x, y, steps_per_round)
    medians = {v.dispatch: statistics.median(v.times) for v in variants}
    for v in variants:
        if v.dispatch in profile_dispatches and profiles is not None:
            profiles[f"{preset} {v.dispatch} {mode}"] = profile_variant(v, x, y)
    batch = x.shape[0]
    return [{
        "model": preset, "dispatch": v.dispatch, "mode": mode,
        "step_ms": round(medians[v.dispatch] * 1e3, 2), "samples_per_s": round(batch / medians[v.dispatch], 1),
        "model_tflop_per_step": round(flops / 1e12, 3),
        "mfu_percent": round(100 * flops / medians[v.dispatch] / (peak * 1e12), 1),
        "sparse_over_this": round(medians["sparse"] / medians[v.dispatch], 3),
        "total_params": params["total_params"], "activated_params": params["activated_params"],
    } for v in variants]  # fmt: skip


def profile_variant(variant: Variant, x: torch.Tensor, y: torch.Tensor, steps: int = 5) -> str:
    """Where a warm variant's training step goes: ``torch.profiler`` over ``steps`` steps; the
    GPU's busy time (the kernels' own time) against the wall time, and the kernels taking the most."""
    from torch.profiler import ProfilerActivity, profile

    device = x.device.type
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            variant.step(x, y)
        sync()
        wall = (time.perf_counter() - started) / steps
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6 / steps
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=60)
    return (f"## {variant.preset} {variant.dispatch} {variant.mode}, batch {x.shape[0]}: wall {wall * 1e3:.2f} "
            f"ms/step, GPU busy {busy * 1e3:.2f} ms/step ({100 * busy / wall:.0f}%), "
            f"{sum(e.count for e in kernels) / steps:.0f} kernels/step\n\n{table}\n")  # fmt: skip


def profile_steps(preset: str, dispatch: str, mode: str, x: torch.Tensor, y: torch.Tensor, res: int,
                  steps: int = 5) -> str:
    """:func:`profile_variant` of a new variant, after 3 warm-up steps."""
    variant = Variant(preset, dispatch, mode, res, x.device.type)
    for _ in range(3):
        variant.step(x, y)
    return profile_variant(variant, x, y, steps)


def batch_scaling(preset: str, dispatch: str, mode: str, batches: tuple[int, ...], res: int, device: str,
                  peak: float, flops_per_sample: float, steps: int = 6) -> list[dict]:
    """Step time and MFU of one variant at growing batch sizes (a model too small to fill the
    card at batch 20 shows here how far the GPU work itself is from the peak); FLOPs scale
    with the batch (every sample runs the same number of experts)."""
    variant = Variant(preset, dispatch, mode, res, device)
    rows = []
    for batch in batches:
        x, y = random_batch(batch, res, device, seed=batch)
        try:
            for _ in range(2):
                variant.step(x, y)
            variant.times = []
            variant.timed_steps(x, y, steps)
        except torch.OutOfMemoryError:
            rows.append({"batch": batch, "failed": "out of memory"})
            break
        step_s = statistics.median(variant.times)
        rows.append({"model": preset, "dispatch": dispatch, "mode": mode, "batch": batch,
                     "step_ms": round(step_s * 1e3, 2), "samples_per_s": round(batch / step_s, 1),
                     "mfu_percent": round(100 * flops_per_sample * batch / step_s / (peak * 1e12), 1)})  # fmt: skip
    return rows


def run(
    budget_seconds: float = 240.0,
    *,
    device: str = "cuda",
    res: int = 128,
    batch: int = 20,
    presets: tuple[str, ...] = ("moepot-ti", "moepot-s"),
    modes: tuple[str, ...] = ("eager", "compile", "cudagraphs"),
    rounds: int = 3,
    steps_per_round: int = 4,
    peak_n: int = 8192,
    profile: tuple[tuple[str, str, str], ...] = (
        ("moepot-s", "sparse", "eager"),
        ("moepot-s", "grouped", "compile"),  # its kernels one by one (a profiler may see a CUDA graph as one)
        ("moepot-s", "grouped", "cudagraphs"),
    ),
    scaling: tuple[str, str, str, tuple[int, ...]] | None = ("moepot-s", "grouped", "eager", (20, 80, 160)),
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Time every (mode, preset) within ``budget_seconds``; ``on_row(results)`` after each
    (to save partial results: a run cut short by the device's time limit keeps what it measured).

    ``profile``: (preset, dispatch, mode) variants profiled right after their timing
    (``results["profiles"]``); ``scaling``: (preset, dispatch, mode, batches) timed at growing
    batch sizes last, if the budget allows (``results["batch_scaling"]``)."""
    started = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    peak = matmul_peak_tflops(device, n=peak_n)
    name = torch.cuda.get_device_name() if device == "cuda" else device
    results: dict = {"device": name, "torch": torch.__version__,
                     "peak_bf16_tflops": round(peak, 1), "res": res, "batch": batch, "rows": []}  # fmt: skip
    x, y = random_batch(batch, res, device, seed=0)
    try:
        results["grouped_check"] = grouped_check(1024, min(batch, 4), res // 8, device)
    except Exception as exc:
        results["grouped_check"] = {"failed": f"{type(exc).__name__}: {exc}"[:300]}
    if on_row is not None:
        on_row(results)
    for mode in modes:
        for preset in presets:
            if time.perf_counter() - started > budget_seconds:
                results.setdefault("skipped", []).append(f"{preset} {mode}")
                continue
            try:
                to_profile = tuple(d for p, d, m in profile if (p, m) == (preset, mode))
                results["rows"] += measure_preset(preset, mode, x, y, res, device, peak, rounds, steps_per_round,
                                                  results.setdefault("failed", []),
                                                  results.setdefault("profiles", {}), to_profile)  # fmt: skip
            except Exception as exc:  # a failure (compile, out of memory) costs this row, not the run
                traceback.print_exc()
                results.setdefault("failed", []).append(
                    f"{preset} {mode}: {type(exc).__name__}: {exc}"[:300])
            if on_row is not None:
                on_row(results)
            if device == "cuda":
                torch.cuda.empty_cache()
            print(f"[{time.perf_counter() - started:6.1f}s] {preset} {mode} done", flush=True)
    if scaling is not None:
        preset, dispatch, mode, batches = scaling
        flops = [r["model_tflop_per_step"] * 1e12 / batch for r in results["rows"] if r["model"] == preset]
        if time.perf_counter() - started > budget_seconds or not flops:
            results.setdefault("skipped", []).append(f"batch scaling of {preset}")
        else:
            try:
                results["batch_scaling"] = batch_scaling(preset, dispatch, mode, batches, res, device, peak, flops[0])
            except Exception as exc:
                traceback.print_exc()
                results.setdefault("failed", []).append(f"batch scaling: {type(exc).__name__}: {exc}"[:300])
            print(f"[{time.perf_counter() - started:6.1f}s] batch scaling done", flush=True)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    return results


def markdown(results: dict) -> str:
    lines = [
        f"Device: {results['device']}, torch {results['torch']}; measured bf16 matmul peak "
        f"{results['peak_bf16_tflops']} TFLOP/s; res {results['res']}, batch {results['batch']}, bf16 autocast, "
        "fused AdamW; median of alternating rounds.",
        "",
        "| model | experts | mode | step (ms) | samples/s | model TFLOP/step | MFU % | sparse time / this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['model']} | {r['dispatch']} | {r['mode']} | {r['step_ms']} | {r['samples_per_s']} | "
                     f"{r['model_tflop_per_step']} | {r['mfu_percent']} | {r['sparse_over_this']} |")  # fmt: skip
    if results.get("batch_scaling"):
        lines += ["", "| model | experts | mode | batch | step (ms) | samples/s | MFU % |", "|---|---|---|---|---|---|---|"]
        for r in results["batch_scaling"]:
            if "failed" in r:
                lines.append(f"| | | | {r['batch']} | {r['failed']} | | |")
            else:
                lines.append(f"| {r['model']} | {r['dispatch']} | {r['mode']} | {r['batch']} | {r['step_ms']} | "
                             f"{r['samples_per_s']} | {r['mfu_percent']} |")  # fmt: skip
    check = results.get("grouped_check")
    if check:
        lines.append(f"\nGrouped against sparse dispatch on this device (bf16, one training step): {check}")
    if results.get("skipped"):
        lines.append(f"\nSkipped (time budget): {', '.join(results['skipped'])}")
    for failure in results.get("failed", []):
        lines.append(f"\nFailed: {failure}")
    return "\n".join(lines)


def update_benchmarks_md(path: Path, table: str) -> None:
    """Replace the text between the gpu-train-step markers of ``path`` with ``table``."""
    text = path.read_text()
    block = f"{MARK_BEGIN}\n{table}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for gpu_train_step.json and .md")
    parser.add_argument("--update", type=Path, help="BENCHMARKS.md whose GPU section to replace")
    parser.add_argument("--budget-seconds", type=float, default=240.0)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run that checks the script itself")
    parser.add_argument("--profile", nargs="*", metavar="PRESET:DISPATCH:MODE",
                        help="only profile these variants (e.g. moepot-ti:grouped:compile) into OUT/gpu_profile.txt")  # fmt: skip
    args = parser.parse_args()

    def save(results: dict) -> None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_train_step.json").write_text(json.dumps(results, indent=2))
            (args.out / "gpu_train_step.md").write_text(markdown(results) + "\n")
            if results.get("profiles"):
                (args.out / "gpu_profile.txt").write_text("\n".join(results["profiles"].values()))

    if args.profile:
        device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a tiny check of the script
        batch, res = (20, 128) if device == "cuda" else (2, 32)
        x, y = random_batch(batch, res, device, seed=0)
        for spec in args.profile:
            preset, dispatch, mode = spec.split(":")
            try:
                text = profile_steps(preset, dispatch, mode, x, y, res)
            except Exception as exc:
                text = f"## {spec}: failed: {type(exc).__name__}: {exc}"[:400]
            print(text, flush=True)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                with open(args.out / "gpu_profile.txt", "a") as f:
                    f.write(text + "\n")
        return
    if args.smoke:
        results = run(args.budget_seconds, device="cpu", res=32, batch=2, presets=("moepot-ti",),
                      modes=("eager", "compile"), rounds=1, steps_per_round=1, peak_n=256,
                      profile=(("moepot-ti", "grouped", "eager"),), scaling=("moepot-ti", "grouped", "eager", (2, 4)),
                      on_row=save)  # fmt: skip
    else:
        results = run(args.budget_seconds, on_row=save)
    save(results)
    table = markdown(results)
    print(table)
    if args.update:
        update_benchmarks_md(args.update, table)


if __name__ == "__main__":
    main()
