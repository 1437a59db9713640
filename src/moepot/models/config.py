"""The resolved model configuration: one dataclass that rebuilds any model of the package.

Field names follow the constructor arguments of the original DPOT / MoE-POT code
(``img_size``, ``patch_size``, ``embed_dim``, ...) so published hyper-parameters read the same;
the last fields are ours (expert dispatch, temperature schedule). The ``name`` says which
network family builds it: a preset name (``moepot-ti``) or a bare family (``moepot``,
``dpot``, ``fno``). ``build_model(config.name, **config.to_dict())`` rebuilds the model.

The FNO baseline reuses the same fields where they mean the same thing (``embed_dim`` is the
FNO width, ``depth`` its number of Fourier layers, ``modes`` the kept modes per axis) and
ignores the patch/AFNO/MoE ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from moepot.errors import ConfigError

FAMILIES = ("moepot", "dpot", "fno")
ACTIVATIONS = ("gelu", "tanh", "sigmoid", "relu", "leaky_relu", "softplus", "elu", "silu")
TIME_AGGREGATIONS = ("exp_mlp", "mlp")
EXPERT_DISPATCHES = ("sparse", "grouped", "dense")
TEMPERATURE_DECAYS = ("forward", "step")


@dataclass
class ModelConfig:
    """Every constructor argument of a model; ``to_dict()`` is JSON-able.

    Attributes:
        name: preset (``moepot-s``) or family (``moepot``, ``dpot``, ``fno``) name.
        img_size: grid side, or ``(X, Y)`` for a rectangular grid (our extension).
        patch_size: side p of the square patches (X and Y must be multiples of p).
        in_channels, out_channels: physical channels C of the input and of the prediction.
        in_timesteps: T_in, the number of input frames.
        out_timesteps: frames predicted per call (temporal bundling).
        n_blocks: number of diagonal blocks of the AFNO mixer (``embed_dim % n_blocks == 0``).
        embed_dim: latent width D (the FNO width).
        out_layer_dim: width of the decoder.
        depth: number of blocks (FNO: Fourier layers).
        modes: kept Fourier modes per axis.
        mlp_ratio: Hm = int(D * mlp_ratio), hidden width of the channel MLP / MoE.
        n_cls: classes of the dataset-classification head (number of pre-training datasets).
        normalize: instance normalisation of the input (and de-normalisation of the output).
        act: activation of the embedding, heads and AFNO (the MoE always uses GELU).
        time_agg: ``exp_mlp`` (the published models) or ``mlp``.
        num_experts, num_shared_experts, top_k: the MoE layer (16, 2 and 4 in the paper).
        expert_dispatch: ``sparse`` (group the samples by expert, one matmul per chosen expert),
            ``grouped`` (the same grouping, all chosen experts in one grouped matmul with static
            shapes: no host synchronisation, one graph under ``torch.compile``; needs torch's
            ``grouped_mm``) or ``dense`` (the original: every expert on every sample; kept as a
            reference for tests and benchmarks). See :mod:`moepot.models.moe`.
        temperature_decay: ``forward`` (x0.99 after every training forward, the original) or
            ``step`` (x0.99 per ``model.step_temperature()`` call, once per optimizer step).
    """

    name: str = "moepot"
    img_size: int | tuple[int, int] = 128
    patch_size: int = 8
    in_channels: int = 4
    out_channels: int = 4
    in_timesteps: int = 10
    out_timesteps: int = 1
    n_blocks: int = 4
    embed_dim: int = 512
    out_layer_dim: int = 32
    depth: int = 4
    modes: int = 32
    mlp_ratio: float = 1.0
    n_cls: int = 6
    normalize: bool = False
    act: str = "gelu"
    time_agg: str = "exp_mlp"
    num_experts: int = 16
    num_shared_experts: int = 2
    top_k: int = 4
    expert_dispatch: str = "sparse"
    temperature_decay: str = "forward"

    def __post_init__(self) -> None:
        sides = list(self.img_size) if isinstance(self.img_size, (list, tuple)) else [self.img_size]
        if len(sides) not in (1, 2) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sides
        ):
            raise ConfigError(f"model option img_size={self.img_size!r}; expected a positive integer or (X, Y)")
        if isinstance(self.img_size, (list, tuple)):
            self.img_size = tuple(sides)
            if self.img_size[0] == self.img_size[1]:
                self.img_size = self.img_size[0]
        self.normalize = bool(self.normalize)
        self.mlp_ratio = float(self.mlp_ratio)
        self._validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def family(self) -> str:
        """``moepot``, ``dpot`` or ``fno``: the network class that builds this config."""
        return family_of(self.name)

    @property
    def grid(self) -> tuple[int, int]:
        """(X, Y) of the model grid."""
        if isinstance(self.img_size, tuple):
            return self.img_size
        return (self.img_size, self.img_size)

    @property
    def hidden_dim(self) -> int:
        """Hm = int(embed_dim * mlp_ratio)."""
        return int(self.embed_dim * self.mlp_ratio)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        if isinstance(out["img_size"], tuple):
            out["img_size"] = list(out["img_size"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        family_of(self.name)
        choices = {
            "act": ACTIVATIONS,
            "time_agg": TIME_AGGREGATIONS,
            "expert_dispatch": EXPERT_DISPATCHES,
            "temperature_decay": TEMPERATURE_DECAYS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model option {key}={getattr(self, key)!r}; expected one of {allowed}")
        positive = ("patch_size", "in_channels", "out_channels", "in_timesteps", "out_timesteps",
                    "n_blocks", "embed_dim", "out_layer_dim", "depth", "modes", "n_cls", "num_experts",
                    "top_k")  # fmt: skip
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model option {key}={value!r}; expected a positive integer")
        if self.hidden_dim < 1:
            raise ConfigError(f"model option mlp_ratio={self.mlp_ratio} gives a hidden width < 1")
        if self.family == "fno":
            return
        if self.normalize and self.in_channels != self.out_channels:
            raise ConfigError(
                f"normalize=True needs out_channels == in_channels (the prediction is de-normalised with "
                f"the input's per-channel statistics); got in_channels {self.in_channels}, out_channels "
                f"{self.out_channels}"
            )
        for side in self.grid:
            if side % self.patch_size:
                raise ConfigError(
                    f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}"
                )
        if self.embed_dim % self.n_blocks:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by n_blocks {self.n_blocks}")
        if self.embed_dim % 8:
            raise ConfigError(f"embed_dim {self.embed_dim} must be a multiple of 8 (GroupNorm with 8 groups)")
        if self.family == "moepot":
            if self.top_k > self.num_experts:
                raise ConfigError(f"top_k {self.top_k} exceeds num_experts {self.num_experts}")
            if self.num_shared_experts < 0:
                raise ConfigError(f"num_shared_experts {self.num_shared_experts} must be >= 0")
            if 2 * self.hidden_dim < 16:
                raise ConfigError(
                    f"the router's channel attention needs 2*Hm >= 16; got Hm={self.hidden_dim} "
                    f"(embed_dim {self.embed_dim} * mlp_ratio {self.mlp_ratio})"
                )


def family_of(name: str) -> str:
    """The family of a preset or family name: ``moepot-s`` -> ``moepot``.

    Raises:
        ConfigError: the name belongs to no family.
    """
    family = str(name).split("-", 1)[0].lower()
    if family not in FAMILIES:
        raise ConfigError(
            f"model name {name!r} belongs to no model family; expected it to start with one of {FAMILIES}"
        )
    return family
