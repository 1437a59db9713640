"""Autoregressive rollout: predict ``T_bundle`` frames, slide the input window, repeat.

The model sees the last ``T_in`` frames ``x: [B, X, Y, T_in, C]`` and returns
``T_bundle`` new frames; the window then drops its oldest ``T_bundle`` frames and appends the
prediction, exactly as the original's training and evaluation loops do. Rollouts can be saved
to HDF5 (with their input windows and attributes) for plotting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from moepot.io import atomic_path


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The prediction of one model call, ``[B, X, Y, T_bundle, C]``.

    Accepts a ``ModelOutput`` (``.pred``), a tuple whose first item is the prediction (the
    original's models) or a bare tensor.
    """
    out = model(x)
    if isinstance(out, torch.Tensor):
        return out
    return out.pred if hasattr(out, "pred") else out[0]


def slide_window(x: torch.Tensor, new_frames: torch.Tensor) -> torch.Tensor:
    """Append ``new_frames: [B, X, Y, k, C]`` to ``x: [B, X, Y, T_in, C]`` and keep the last
    ``T_in`` frames (the oldest ``k`` dropped; when ``k > T_in``, the last ``T_in`` predicted)."""
    t_in = x.shape[-2]
    return torch.cat((x, new_frames), dim=-2)[..., -t_in:, :]


def rollout(
    model: nn.Module,
    x: torch.Tensor,
    steps: int,
    *,
    resize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Roll the model out for ``steps`` frames from the window ``x``.

    Args:
        model: maps ``[B, X, Y, T_in, C]`` to ``T_bundle`` frames (``ModelOutput`` or tuple).
        x: ``[B, X, Y, T_in, C]`` initial window, on the model's grid.
        steps: number of frames to predict; the last bundle is cut when ``steps`` is not a
            multiple of ``T_bundle``.
        resize: optional map applied to every predicted bundle before it is returned (e.g. back
            to the data grid); the window itself always stays on the model's grid.

    Returns:
        ``[B, X', Y', steps, C]`` predicted frames (gradients flow unless called under
        ``torch.no_grad``).
    """
    if steps < 1:
        raise ValueError(f"rollout: steps must be >= 1, got {steps}")
    bundles: list[torch.Tensor] = []
    produced = 0
    while produced < steps:
        frames = predict(model, x)
        x = slide_window(x, frames)
        bundles.append(frames if resize is None else resize(frames))
        produced += frames.shape[-2]
    return torch.cat(bundles, dim=-2)[..., :steps, :]


def save_rollouts(
    path: str | os.PathLike,
    rollouts: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    attrs: Mapping[str, Any] | None = None,
    group_attrs: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write rollouts to one HDF5 file (atomically), one group per dataset.

    Args:
        path: output ``.hdf5`` file.
        rollouts: ``{dataset: {"input": [N, X, Y, T_in, C], "pred": [N, X, Y, T, C],
            "target": [N, X, Y, T, C], "mask": [N, X, Y, 1, C], ...}}``; every tensor becomes a
            float32 dataset.
        attrs: attributes of the file (``None`` values are left out).
        group_attrs: ``{dataset: attributes}`` of each group (``None`` values left out).
    """
    import h5py

    def set_attrs(target: Any, values: Mapping[str, Any] | None) -> None:
        for key, value in (values or {}).items():
            if value is not None:
                target.attrs[key] = value

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        set_attrs(handle, attrs)
        for name, arrays in rollouts.items():
            group = handle.create_group(name)
            set_attrs(group, (group_attrs or {}).get(name))
            for key, value in arrays.items():
                group.create_dataset(key, data=value.detach().float().cpu().numpy())
