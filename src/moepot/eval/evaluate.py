"""Per-dataset rollout evaluation with the original's definitions.

For every test trajectory (resized to the evaluation grid and channel-padded like training
data): take the first ``T_in`` frames, roll the model out for the dataset's ``t_test`` frames
(``T_bundle`` at a time) and score only the predicted frames with the masked relative L2
(:func:`moepot.eval.metrics.relative_l2`; the mask keeps the real channels and the points of the
stored grid). Per dataset:

- ``rel_l2_step``: mean over trajectories and rollout steps (model calls) of the error of each
  predicted bundle (the original's ``test_l2_step``);
- ``rel_l2_rollout``: mean over trajectories of the error of the whole predicted trajectory
  (the original's ``test_l2_full``, the paper's number);
- ``rel_l2_teacher_forced`` (optional): mean error of one-bundle predictions from the true
  preceding frames.

Evaluating at another resolution than the model's: the data are read at ``res`` (masks on
that grid), every input window is resized bilinearly to the model grid, and every predicted
bundle back to ``res`` before scoring; the rollout itself stays on the model grid.
Under ``torchrun`` each rank scores a strided share of the trajectories and the sums are
all-reduced, so every rank returns the same numbers.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moepot.eval.metrics import relative_l2
from moepot.eval.rollout import predict, rollout, save_rollouts

log = logging.getLogger(__name__)


def resize_grid(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the grid axes (as the data loader does), ``[B, X, Y, T, C]`` ->
    ``[B, size[0], size[1], T, C]``; a no-op when the size already matches."""
    batch, nx, ny, steps, channels = x.shape
    if (nx, ny) == tuple(size):
        return x
    flat = x.permute(0, 3, 4, 1, 2).reshape(batch, steps * channels, nx, ny)
    flat = F.interpolate(flat, size=tuple(size), mode="bilinear")
    return flat.reshape(batch, steps, channels, *size).permute(0, 3, 4, 1, 2)


def _model_config(model: nn.Module) -> Any:
    from moepot.train.distributed import unwrap_model

    return getattr(unwrap_model(model), "config", None)


def model_grid(model: nn.Module) -> tuple[int, int] | None:
    """The (X, Y) grid the model runs on (``config.img_size``: a side or a pair), None if it has none."""
    img_size = getattr(_model_config(model), "img_size", None)
    if isinstance(img_size, int):
        return img_size, img_size
    return (int(img_size[0]), int(img_size[1])) if img_size else None


@torch.no_grad()
def evaluate_dataset(
    model: nn.Module,
    loader: Any,
    *,
    model_grid: tuple[int, int] | None = None,
    teacher_forced: bool = False,
    dist_info: Any = None,
    keep_rollouts: bool = False,
) -> tuple[dict[str, float], dict[str, torch.Tensor] | None]:
    """Score one dataset's test loader (items ``(x, y, mask, ...)``, ``y: [B, X, Y, t_test, C]``).

    Returns:
        The metrics, and (when ``keep_rollouts``) ``{"input", "pred", "target", "mask"}`` of this
        rank (``input``: the first ``T_in`` frames each rollout started from, on the data grid).
    """
    from moepot.train.distributed import DistInfo, all_reduce_sum

    info = dist_info or DistInfo()
    device = next(model.parameters()).device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # step, rollout, teacher, count
    kept: dict[str, list[torch.Tensor]] = {"input": [], "pred": [], "target": [], "mask": []}
    for batch in loader:
        x, y, mask = (t.to(device) for t in batch[:3])
        data_grid = tuple(x.shape[1:3])
        grid = model_grid or data_grid
        to_model = functools.partial(resize_grid, size=grid) if grid != data_grid else None
        to_data = functools.partial(resize_grid, size=data_grid) if grid != data_grid else None
        window = to_model(x) if to_model else x
        steps = y.shape[-2]
        pred = rollout(model, window, steps, resize=to_data)  # [B, X, Y, t_test, C]
        bundle = _bundle_size(model, window)
        starts = range(0, steps, bundle)
        step_err = sum(relative_l2(pred[..., t : t + bundle, :], y[..., t : t + bundle, :], mask) for t in starts)
        sums[0] += (step_err / len(starts)).double().sum()
        sums[1] += relative_l2(pred, y, mask).double().sum()
        if teacher_forced:
            sums[2] += _teacher_forced(model, x, y, mask, bundle, to_model, to_data).double().sum()
        sums[3] += x.shape[0]
        if keep_rollouts:
            kept["input"].append(x.cpu())
            kept["pred"].append(pred.cpu())
            kept["target"].append(y.cpu())
            kept["mask"].append(mask.cpu())
    sums = all_reduce_sum(sums, info)
    count = max(sums[3].item(), 1.0)
    metrics = {"rel_l2_step": sums[0].item() / count, "rel_l2_rollout": sums[1].item() / count}
    if teacher_forced:
        metrics["rel_l2_teacher_forced"] = sums[2].item() / count
    rollouts = {k: torch.cat(v) for k, v in kept.items()} if keep_rollouts and kept["pred"] else None
    return metrics, rollouts


def _bundle_size(model: nn.Module, window: torch.Tensor) -> int:
    config = _model_config(model)
    if config is not None and getattr(config, "out_timesteps", None):
        return int(config.out_timesteps)
    return int(predict(model, window[:1]).shape[-2])


def _teacher_forced(model, x, y, mask, bundle, to_model, to_data) -> torch.Tensor:
    """Mean over bundles of the error of predictions made from the true preceding frames. ``[B]``"""
    t_in, steps = x.shape[-2], y.shape[-2]
    truth = torch.cat((x, y), dim=-2)
    errors = []
    for t in range(0, steps, bundle):
        window = truth[..., t : t + t_in, :]
        frames = predict(model, to_model(window) if to_model else window)
        frames = to_data(frames) if to_data else frames
        target = y[..., t : t + bundle, :]
        errors.append(relative_l2(frames[..., : target.shape[-2], :], target, mask))
    return torch.stack(errors).mean(dim=0)


def open_test_set(
    name: str,
    *,
    res: int,
    t_in: int,
    catalog: Any,
    data_root: str | os.PathLike | None,
    n_channels: int | None,
    n_test: int | None,
) -> Any:
    """The test split of dataset ``name`` as :func:`evaluate_model` reads it (a one-dataset
    ``MixtureDataset``); opening it checks the id, the files, the channels and ``n_test``."""
    from moepot.data.mixture import MixtureDataset

    return MixtureDataset(
        [name],
        split="test",
        res=res,
        t_in=t_in,
        catalog=catalog,
        data_root=data_root,
        n_channels=n_channels,
        n_samples=None if n_test is None else [n_test],
        n_samples_option="n_test",
    )


def evaluate_model(
    model: nn.Module,
    names: Sequence[str],
    *,
    res: int | None = None,
    data_root: str | os.PathLike | None = None,
    catalog: Any = None,
    n_test: int | None = None,
    batch_size: int = 8,
    t_in: int | None = None,
    n_channels: int | None = None,
    teacher_forced: bool = False,
    save_path: str | os.PathLike | None = None,
    save_attrs: Mapping[str, Any] | None = None,
    num_workers: int = 0,
    dist_info: Any = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on the test split of each dataset in ``names``.

    Args:
        model: a moepot model (``model.config`` gives ``img_size``, ``in_timesteps`` and
            ``in_channels``) or any module returning ``[B, X, Y, T_bundle, C]`` first.
        names: catalogue dataset names.
        res: evaluation grid; default the model's ``img_size``.
        data_root, catalog: where the data and the catalogue are (a ``Catalog``, a file path or
            None for the default lookup).
        n_test: use only the first N test trajectories of each dataset.
        batch_size: trajectories per batch.
        t_in, n_channels: override what ``model.config`` says.
        teacher_forced: also report ``rel_l2_teacher_forced``.
        save_path: write the rollouts to this HDF5 file: one group per dataset holding
            ``input`` (the first ``T_in`` frames of each trajectory, ``[N, X, Y, T_in, C]``),
            ``pred`` and ``target`` (``[N, X, Y, t_test, C]``) and ``mask``, all on the ``res``
            grid, with the dataset's name, trajectory count and metrics as group attributes and
            ``t_in``, ``res``, ``model_grid``, ``n_test`` (plus ``save_attrs``) as file
            attributes. Under several processes, rank 0's share of the trajectories.
        save_attrs: more file attributes of ``save_path`` (e.g. ``{"checkpoint": path}``).

    Returns:
        ``{dataset: {"rel_l2_step": float, "rel_l2_rollout": float, ...}}``.
    """
    from moepot.data.catalog import load_catalog
    from moepot.train.distributed import DistInfo

    info = dist_info or DistInfo()
    config = _model_config(model)
    grid = model_grid(model)
    res = res or (grid[0] if grid else None)
    if res is None:
        raise ValueError("evaluate_model: give res (the model has no config.img_size)")
    t_in = t_in or getattr(config, "in_timesteps", None) or 10
    n_channels = n_channels or getattr(config, "in_channels", None)
    if catalog is None or isinstance(catalog, str | os.PathLike):
        catalog = load_catalog(catalog, data_root)

    was_training = model.training
    model.eval()
    results: dict[str, dict[str, float]] = {}
    rollouts: dict[str, dict[str, torch.Tensor]] = {}
    # MoE models evaluate at the inference temperature 0.5 (architecture.md), whatever their
    # training has reached; their own temperature is restored afterwards
    from moepot.train.distributed import unwrap_model

    inference_temperature = getattr(unwrap_model(model), "inference_temperature", contextlib.nullcontext)
    try:
        with inference_temperature():
            for name in names:
                dataset = open_test_set(name, res=res, t_in=t_in, catalog=catalog, data_root=data_root,
                                        n_channels=n_channels, n_test=n_test)  # fmt: skip
                indices = list(range(info.rank, len(dataset), info.world_size))
                loader = torch.utils.data.DataLoader(
                    torch.utils.data.Subset(dataset, indices),
                    batch_size=batch_size,
                    shuffle=False,
                    num_workers=num_workers,
                )
                metrics, kept = evaluate_dataset(
                    model,
                    loader,
                    model_grid=grid,
                    teacher_forced=teacher_forced,
                    dist_info=info,
                    keep_rollouts=save_path is not None,
                )
                results[name] = metrics
                if kept is not None:
                    rollouts[name] = kept
                log.debug("evaluated %s on %d trajectories: %s", name, len(dataset), metrics)
    finally:
        model.train(was_training)
    if save_path is not None and info.is_main:
        attrs = {"t_in": t_in, "res": res, "model_grid": list(grid) if grid else None, "n_test": n_test,
                 **(save_attrs or {})}
        group_attrs = {name: {"dataset": name, "n_trajectories": len(arrays["pred"]), **results[name]}
                       for name, arrays in rollouts.items()}
        save_rollouts(save_path, rollouts, attrs=attrs, group_attrs=group_attrs)
    return results
