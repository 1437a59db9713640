"""How MoE-POT time grows with batch size, resolution and number of experts, sparse against dense.

Starting from the MoE-POT-Ti shape at res 64, batch 8, 16 routed experts (top 4, 2 shared),
one axis is varied at a time:

- batch size 2, 4, 8, 16 (res 64);
- resolution 32, 64, 128 (batch 8; patch 8, so the latent grid grows from 4 x 4 to 16 x 16);
- routed experts 4, 8, 16, 32 (top 4 of them; res 64, batch 8).

At each point both dispatches (``expert_dispatch="sparse"`` and the original's ``"dense"``, same
weights) time a training step (forward, loss with the balance term, backward, Adam step) and an
eval-mode forward under ``torch.no_grad``, alternating sparse and dense, medians. The res 128
point gives the whole-model ratios at res 128 that ``models_speed`` measures at res 64.
``torch.set_num_threads(2)``.

    python -m benchmarks --only models_scaling [--quick] [--json]

``--quick`` runs a reduced grid (batch 4 and 8 at res 32 and 64, experts 8 and 16) once each.
"""

from __future__ import annotations

import torch

from benchmarks.models_speed import inference, median_pair, train_step
from moepot.models.registry import build_model

BASE = {"res": 64, "batch": 8, "experts": 16}
FULL_GRID = {"batch": (2, 4, 8, 16), "res": (32, 64, 128), "experts": (4, 8, 16, 32)}
QUICK_GRID = {"batch": (4, 8), "res": (32, 64), "experts": (8, 16)}
QUICK_BASE = {"res": 32, "batch": 8, "experts": 16}
CHANNELS, T_IN = 4, 10


def _pair(res: int, experts: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Sparse and dense MoE-POT-Ti with the same weights."""
    torch.manual_seed(0)
    shape = {"img_size": res, "in_channels": CHANNELS, "in_timesteps": T_IN, "num_experts": experts}
    sparse = build_model("moepot-ti", **shape, expert_dispatch="sparse")
    dense = build_model("moepot-ti", **shape, expert_dispatch="dense")
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


def measure_point(res: int, batch: int, experts: int, repeats: int) -> dict:
    """Training-step and inference times (ms) of both dispatches at one shape, and their ratios."""
    sparse, dense = _pair(res, experts)
    generator = torch.Generator().manual_seed(1)
    scale = torch.logspace(-1, 1, batch).reshape(batch, 1, 1, 1, 1)  # samples differ, so routes differ
    x = torch.randn(batch, res, res, T_IN, CHANNELS, generator=generator) * scale
    y = torch.randn(batch, res, res, 1, CHANNELS, generator=generator) * scale
    train_s = median_pair(train_step(sparse, x, y), train_step(dense, x, y), repeats)
    infer_s = median_pair(inference(sparse, x), inference(dense, x), repeats)
    return {"res": res, "batch": batch, "experts": experts,
            "train_sparse_ms": round(train_s[0] * 1e3, 1), "train_dense_ms": round(train_s[1] * 1e3, 1),
            "train_ratio": round(train_s[0] / train_s[1], 3),
            "inference_sparse_ms": round(infer_s[0] * 1e3, 1), "inference_dense_ms": round(infer_s[1] * 1e3, 1),
            "inference_ratio": round(infer_s[0] / infer_s[1], 3)}


def run(quick: bool) -> dict:
    """Vary batch, resolution and experts one at a time around the base shape."""
    grid, base = (QUICK_GRID, QUICK_BASE) if quick else (FULL_GRID, BASE)
    repeats = 1 if quick else 3
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    measured: dict[tuple[int, int, int], dict] = {}
    results: dict = {"base": base, "grid": {k: list(v) for k, v in grid.items()}, "repeats": repeats,
                     "threads": 2, "axes": {}}
    try:
        for axis, values in grid.items():
            rows = []
            for value in values:
                point = {**base, axis: value}
                key = (point["res"], point["batch"], point["experts"])
                if key not in measured:
                    measured[key] = measure_point(*key, repeats=repeats)
                rows.append(measured[key])
            results["axes"][axis] = rows
    finally:
        torch.set_num_threads(threads)
    return results


def markdown(results: dict) -> str:
    """One table per axis: times of both dispatches and sparse / dense."""
    base = results["base"]
    lines = [f"MoE-POT-Ti, base res {base['res']}, batch {base['batch']}, {base['experts']} routed experts "
             f"(top 4, 2 shared); one axis varied at a time; {results['threads']} threads; median of "
             f"{results['repeats']} alternating runs after a warm-up."]
    for axis, rows in results["axes"].items():
        lines += ["", f"| {axis} | train sparse (ms) | train dense (ms) | train ratio | inference sparse (ms) | "
                      "inference dense (ms) | inference ratio |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(f"| {row[axis]} | {row['train_sparse_ms']} | {row['train_dense_ms']} | {row['train_ratio']} | "
                         f"{row['inference_sparse_ms']} | {row['inference_dense_ms']} | {row['inference_ratio']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from moepot.malloc import tune_malloc

    tune_malloc()
    print(markdown(run(quick="--quick" in sys.argv)))
