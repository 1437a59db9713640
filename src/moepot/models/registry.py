"""Named presets, model construction, parameter counts and pretrained checkpoints.

Presets use the published hyper-parameters (architecture.md, "Published sizes"): in_channels 4,
in_timesteps 10, a 128 x 128 grid, patch 8, modes 32, out_layer_dim 32; n_cls 6 for MoE-POT
(its six pre-training datasets) and 12 for DPOT. ``fno`` is our baseline (width 32, 4 Fourier
layers, 12 modes: the classic FNO-2D sizes).

    >>> model = build_model("moepot-ti", img_size=64)      # every config field can be overridden
    >>> model = load_pretrained("model_S.pth")             # official checkpoint or ours, eval mode
    >>> save_pretrained(model, "ours.safetensors")         # weights + config, atomically
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from moepot.errors import CheckpointError, ConfigError
from moepot.io import atomic_path
from moepot.models.base import NeuralOperator
from moepot.models.checkpoints import (
    CHECKSUM_KEY,
    CHECKSUM_METADATA_KEY,
    CONFIG_METADATA_KEY,
    EXTRA_METADATA_KEY,
    WeightsFile,
    describe_mismatch,
    infer_config,
    payload_digest,
    read_weights,
)
from moepot.models.config import FAMILIES, ModelConfig, family_of
from moepot.models.moe import TEMPERATURE_FLOOR, grouped_dispatch_available

logger = logging.getLogger(__name__)

_SIZES = {"img_size": 128, "patch_size": 8, "in_channels": 4, "out_channels": 4, "in_timesteps": 10,
          "modes": 32, "out_layer_dim": 32}  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    "moepot-ti": dict(_SIZES, embed_dim=512, mlp_ratio=1.0, depth=4, n_blocks=4, n_cls=6),
    "moepot-s": dict(_SIZES, embed_dim=1024, mlp_ratio=1.0, depth=6, n_blocks=8, n_cls=6),
    "moepot-m": dict(_SIZES, embed_dim=1024, mlp_ratio=2.0, depth=8, n_blocks=8, n_cls=6),
    "dpot-ti": dict(_SIZES, embed_dim=512, mlp_ratio=1.0, depth=4, n_blocks=4, n_cls=12),
    "dpot-s": dict(_SIZES, embed_dim=1024, mlp_ratio=1.0, depth=6, n_blocks=8, n_cls=12),
    "dpot-m": dict(_SIZES, embed_dim=1024, mlp_ratio=4.0, depth=12, n_blocks=8, n_cls=12),
    "dpot-l": dict(_SIZES, embed_dim=1536, mlp_ratio=4.0, depth=24, n_blocks=16, n_cls=12),
    "dpot-h": dict(_SIZES, embed_dim=2048, mlp_ratio=4.0, depth=27, n_blocks=8, n_cls=12),
    "fno": dict(_SIZES, embed_dim=32, depth=4, modes=12, n_cls=6),
}
# A bare family name builds that family with the dataclass defaults plus these.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {"moepot": {}, "dpot": {"n_cls": 12}, "fno": PRESETS["fno"]}


def resolve_config(name: str, /, **overrides: Any) -> ModelConfig:
    """The ModelConfig of preset or family ``name`` with ``overrides`` applied.

    Raises:
        ConfigError: unknown name (the presets are listed) or an invalid override.
    """
    key = str(name).lower()
    if key in PRESETS:
        base = PRESETS[key]
    elif key in FAMILIES:
        base = FAMILY_DEFAULTS[key]
    else:
        raise ConfigError(f"unknown model {name!r}; expected one of {sorted(PRESETS)} or a family {FAMILIES}")
    overrides = dict(overrides)
    given_name = overrides.pop("name", key)
    if family_of(given_name) != family_of(key):
        raise ConfigError(f"override name={given_name!r} is not a {family_of(key)} model")
    return ModelConfig.from_dict({**base, **overrides, "name": key})


def preset_name_for(config: ModelConfig) -> ModelConfig:
    """``config`` renamed to the preset it equals (e.g. an official MoE-POT-S file), if any."""
    fields = {k: v for k, v in config.to_dict().items() if k != "name"}
    for name in PRESETS:
        if (
            family_of(name) == config.family
            and {k: v for k, v in resolve_config(name).to_dict().items() if k != "name"} == fields
        ):
            return resolve_config(name)
    return config


def model_from_config(config: ModelConfig) -> NeuralOperator:
    """Instantiate the network of ``config`` (on the current default device)."""
    family = config.family
    if family == "moepot":
        from moepot.models.moepot import MoEPOT

        return MoEPOT(config)
    if family == "dpot":
        from moepot.models.dpot import DPOT

        return DPOT(config)
    from moepot.models.fno import FNO

    return FNO(config)


def build_model(name: str, /, **overrides: Any) -> NeuralOperator:
    """Build preset ``name`` (``moepot-ti|s|m``, ``dpot-ti|s|m|l|h``, ``fno``, or a bare family).

    Every :class:`ModelConfig` field can be overridden by keyword, e.g.
    ``build_model("moepot-ti", img_size=64, expert_dispatch="dense")``;
    ``build_model(config.name, **config.to_dict())`` rebuilds a model from its config.
    """
    return model_from_config(resolve_config(name, **overrides))


# --------------------------------------------------------------------------- parameter counts
def count_parameters(model: NeuralOperator) -> dict[str, int]:
    """Total parameters and parameters active per forward.

    Active: everything except the routed experts a sample does not use, i.e. ``top_k`` of the
    ``num_experts`` routed experts per MoE layer (dense models: active == total).
    """
    total = sum(p.numel() for p in model.parameters())
    idle = 0
    for layer in model.moe_layers():
        per_expert = [sum(p.numel() for p in expert.parameters()) for expert in layer.experts]
        idle += sum(per_expert) - sum(sorted(per_expert)[: layer.top_k])
    return {"total_params": total, "activated_params": total - idle}


def describe(config: ModelConfig) -> dict[str, Any]:
    """Config and parameter counts, counted on the meta device (no memory, instant)."""
    with torch.device("meta"):
        model = model_from_config(config)
    return {
        "name": config.name,
        "family": config.family,
        **count_parameters(model),
        "config": config.to_dict(),
    }


# --------------------------------------------------------------------------- checkpoints
def runnable_stored_config(config: dict[str, Any], source: str) -> dict[str, Any]:
    """A stored model config, with an ``expert_dispatch`` this torch cannot run replaced.

    The dispatch is how the experts are computed, not what: a checkpoint trained with
    ``grouped`` on a GPU loads with ``sparse`` (same results) where torch has no ``grouped_mm``,
    with a warning naming ``source``. Everything else is returned unchanged.
    """
    if config.get("expert_dispatch") == "grouped" and not grouped_dispatch_available():
        logger.warning(
            "%s: stored expert_dispatch='grouped' needs torch.nn.functional.grouped_mm, which torch %s "
            "lacks; running the experts with 'sparse' (same results)", source, torch.__version__
        )
        return {**config, "expert_dispatch": "sparse"}
    return config


def load_pretrained(path: str | os.PathLike, /, **overrides: Any) -> NeuralOperator:
    """Load an official MoE-POT / DPOT checkpoint or one of ours; eval mode, temperature 0.5.

    Official files are ``{'args': Namespace, 'model': state_dict}`` pickles (keys with or
    without ``module.``); their architecture is inferred from the state-dict shapes plus
    ``args.modes``. Ours carry their config. ``overrides`` change config fields that do not
    alter the weights (``expert_dispatch``, ``temperature_decay``, ...). The weights load
    strictly; the MoE temperature (absent from official files) is set to the inference value
    0.5 in every case.

    A run directory stands for its last checkpoint (``checkpoints/last.pt``), as on the command line.

    Raises:
        CheckpointError: missing, unsafe or corrupt file; keys or shapes that do not match the
            model (the missing, unexpected and mis-shaped keys are named).
    """
    from moepot.train.checkpoint import CheckpointManager

    weights = read_weights(CheckpointManager.checkpoint_of(path))
    if weights.config is not None:
        try:
            config = ModelConfig.from_dict(runnable_stored_config(weights.config, f"checkpoint {weights.path}"))
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {weights.path}: invalid model config: {exc}") from exc
    else:
        config = preset_name_for(
            infer_config(weights.state_dict, {**weights.args, **{k: overrides[k] for k in ("modes", "act") if k in overrides}},
                         source=f"checkpoint {weights.path}")
        )
    if overrides:
        config = resolve_config(config.name, **{**config.to_dict(), **overrides})
    model = model_from_config(config)

    expected = model.state_dict()
    state = dict(weights.state_dict)
    for key in expected:
        if key.endswith(".temperature"):  # ours only; official files have none
            state.setdefault(key, expected[key])
    problems = describe_mismatch(expected, state)
    if problems:
        raise CheckpointError(
            f"checkpoint {weights.path} does not match a {config.name} model "
            f"(embed_dim {config.embed_dim}, depth {config.depth}): {problems}"
        )
    model.load_state_dict(state, strict=True)
    for layer in model.moe_layers():
        layer.temperature.fill_(TEMPERATURE_FLOOR)
    return model.eval()


def save_pretrained(
    model: NeuralOperator, path: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights and config to ``path`` atomically.

    ``.safetensors`` (recommended): the state dict, with the config (and ``extra``) as JSON in
    the metadata. Any other suffix: a weights-only torch file ``{'model', 'model_config',
    'extra'}``. Both are read back by :func:`load_pretrained`, and both carry a SHA-256 of their
    content (:func:`~moepot.models.checkpoints.payload_digest`) that the reader checks.

    Raises:
        CheckpointError: ``extra`` is not JSON-able, or the file cannot be written.
    """
    path = Path(path)
    config = model.config.to_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    try:
        extra_json = json.dumps(extra) if extra is not None else None
    except TypeError as exc:
        raise CheckpointError(f"save_pretrained({path}): extra must be JSON-able: {exc}") from exc
    try:
        with atomic_path(path) as tmp:
            if path.suffix == ".safetensors":
                from safetensors.torch import save_file

                metadata = {
                    CONFIG_METADATA_KEY: json.dumps(config),
                    CHECKSUM_METADATA_KEY: payload_digest(state),
                }
                if extra_json is not None:
                    metadata[EXTRA_METADATA_KEY] = extra_json
                save_file(state, str(tmp), metadata=metadata)
            else:
                payload = {"model": state, "model_config": config, "extra": extra}
                torch.save({**payload, CHECKSUM_KEY: payload_digest(payload)}, tmp)
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}") from exc
    return path


def describe_source(source: str) -> dict[str, Any]:
    """``describe`` a preset name, a checkpoint file or a run directory (architecture inferred or
    read). A preset name wins over a directory of that name in the current directory.

    A run directory stands for its last checkpoint (``checkpoints/last.pt``) and adds
    ``run_dir``; a training checkpoint adds ``training``: its ``step``, ``epoch``, ``complete``
    and the ``train_paths`` / ``test_paths`` of its run (those it stores), and for a fine-tuning run
    ``finetuned_from`` (the pre-trained checkpoint). An official file adds ``official_args``:
    the ``train_paths`` / ``test_paths`` of its ``args`` (the order of the class logits).
    """
    if source.lower() in PRESETS or source.lower() in FAMILIES:
        return describe(resolve_config(source))
    path, run_dir = Path(source), None
    if path.is_dir():
        from moepot.train.checkpoint import CheckpointManager

        run_dir, path = path, CheckpointManager.checkpoint_of(path)
    if not path.is_file():
        raise ConfigError(
            f"{source!r} is neither a model preset ({', '.join(PRESETS)}) nor a checkpoint file or run directory"
        )
    weights = read_weights(path, map_location="meta")  # shapes only, no tensor data
    info = describe(_weights_config(weights))
    info["checkpoint"] = str(path)
    if run_dir is not None:
        info["run_dir"] = str(run_dir)
    if weights.training is not None:
        info["training"] = weights.training
    elif weights.config is None:  # official: its args name the pre-training datasets
        official = {key: [str(v) for v in weights.args[key]] for key in ("train_paths", "test_paths")
                    if isinstance(weights.args.get(key), list | tuple)}  # fmt: skip
        if official:
            info["official_args"] = official
    return info


def checkpoint_config(path: str | os.PathLike) -> ModelConfig:
    """The architecture of a checkpoint file (ours: stored; official: inferred from the shapes),
    read without loading any tensor data."""
    return _weights_config(read_weights(path, map_location="meta"))  # shapes only, no tensor data


def _weights_config(weights: WeightsFile) -> ModelConfig:
    """The architecture of a read checkpoint: stored (ours) or inferred from the shapes (official)."""
    source = f"checkpoint {weights.path}"
    if weights.config is not None:
        return ModelConfig.from_dict(runnable_stored_config(weights.config, source))
    return preset_name_for(infer_config(weights.state_dict, weights.args, source=source))
