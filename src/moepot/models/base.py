"""The contract every model of the package meets: its output and its MoE controls.

``model(x)`` with ``x: [B, X, Y, T_in, C]`` returns :class:`ModelOutput`; ``model.config`` is
the resolved :class:`~moepot.models.config.ModelConfig`; ``moe_layers()``,
``step_temperature()`` and ``set_finetune()`` work on every model and are no-ops for dense ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from moepot.errors import ConfigError
from moepot.models.config import ModelConfig
from moepot.models.moe import TEMPERATURE_FLOOR, MoELayer


class ModelOutput(NamedTuple):
    """The result of ``model(x)`` for ``x: [B, X, Y, T_in, C]``.

    Attributes:
        pred: [B, X, Y, T_out, C_out], the next ``out_timesteps`` frames.
        cls_logits: [B, n_cls], the dataset-classification head.
        aux_loss: scalar, the summed MoE balance loss (0 for dense models and in eval mode).
    """

    pred: torch.Tensor
    cls_logits: torch.Tensor
    aux_loss: torch.Tensor


class NeuralOperator(nn.Module):
    """Base class of DPOT, MoE-POT and FNO: holds the config and the MoE controls."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.finetuning = False

    def moe_layers(self) -> list[MoELayer]:
        """The MoE layers in depth order (empty for dense models)."""
        return [m for m in self.modules() if isinstance(m, MoELayer)]

    def step_temperature(self) -> None:
        """Decay every MoE temperature once; a no-op unless ``temperature_decay == "step"``."""
        if self.config.temperature_decay == "step":
            for layer in self.moe_layers():
                layer.step_temperature()

    @contextlib.contextmanager
    def inference_temperature(self) -> Iterator[None]:
        """Every MoE layer at the inference temperature 0.5 inside the block (architecture.md:
        evaluation uses 0.5), its own temperature restored after; a no-op for dense models."""
        saved = [layer.temperature.clone() for layer in self.moe_layers()]
        try:
            with torch.no_grad():
                for layer in self.moe_layers():
                    layer.temperature.fill_(TEMPERATURE_FLOOR)
            yield
        finally:
            with torch.no_grad():
                for layer, temperature in zip(self.moe_layers(), saved):
                    layer.temperature.copy_(temperature)

    def set_finetune(self, enabled: bool = True) -> NeuralOperator:
        """Fine-tune mode: feature extractors and routers frozen and in eval mode, temperature
        0.5, no balance loss (see :meth:`MoELayer.set_finetune`)."""
        self.finetuning = enabled
        for layer in self.moe_layers():
            layer.set_finetune(enabled)
        return self

    def check_input(self, x: torch.Tensor, grid: tuple[int, int] | None) -> None:
        """Raise a clear error unless x is [B, X, Y, T_in, C_in] for this model.

        ``grid=None`` accepts any X, Y (resolution-free models).
        """
        cfg = self.config
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"model input must be a torch.Tensor [B, X, Y, T, C]; got a {type(x).__name__} "
                              "(convert it with torch.as_tensor(x, dtype=torch.float32))")
        weight = next(self.parameters(), None)
        if weight is not None and x.device != weight.device:
            raise ConfigError(f"model {cfg.name!r} is on {weight.device}, its input on {x.device}; "
                              f"move the input with x.to({str(weight.device)!r})")
        # (under autocast the layers cast their inputs themselves)
        if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ConfigError(f"model {cfg.name!r} has {weight.dtype} weights, its input is {x.dtype}; convert "
                              f"the input with x.to({weight.dtype}) (numpy and HDF5 data are often float64)")
        if x.ndim != 5:
            raise ConfigError(f"model input must be [B, X, Y, T, C] (5 axes); got shape {tuple(x.shape)}")
        _, nx, ny, nt, nc = x.shape
        wrong = (
            (grid is not None and (nx, ny) != tuple(grid)) or nt != cfg.in_timesteps or nc != cfg.in_channels
        )
        if wrong:
            want_grid = f"{grid[0]}, {grid[1]}" if grid is not None else "X, Y"
            raise ConfigError(
                f"model {cfg.name!r} expects input [B, {want_grid}, T_in={cfg.in_timesteps}, "
                f"C={cfg.in_channels}]; got shape {tuple(x.shape)}"
            )
