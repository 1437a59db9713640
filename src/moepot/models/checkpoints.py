"""Reading model weights safely and recognising what network they belong to.

Three kinds of file are understood:

- official MoE-POT / DPOT checkpoints: ``torch.save`` pickles of
  ``{'args': argparse.Namespace, 'model': state_dict, ...}`` (keys maybe prefixed ``module.``);
  the architecture is inferred from the state-dict shapes plus ``args.modes`` / ``args.act``;
- ours, written by :func:`moepot.models.registry.save_pretrained`: a safetensors file whose
  metadata holds the resolved model config as JSON (``moepot_config``);
- ours, as weights-only torch files with a ``model_config`` (or ``config``) dict next to
  ``model`` (training checkpoints of :mod:`moepot.train.checkpoint`).

Torch files are read with ``torch.load(weights_only=True)`` and only ``argparse.Namespace``
allowed beyond plain containers and tensors: a pickle that needs anything else (such as one
that would run code) is refused with a :class:`CheckpointError`, and nothing in it runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moepot.errors import CheckpointError, ConfigError
from moepot.models.config import ModelConfig

log = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "moepot_config"
EXTRA_METADATA_KEY = "moepot_extra"
CHECKSUM_METADATA_KEY = "moepot_sha256"  # safetensors exports: payload_digest of the state dict
CHECKSUM_KEY = "checksum"  # torch files of ours: payload_digest of every other entry
TRAIN_CHECKPOINT_FORMAT = "moepot-train-checkpoint"  # the "format" of moepot.train.checkpoint's files
TRAINING_KEYS = ("step", "epoch", "complete")  # what WeightsFile.training keeps of a training checkpoint
_STRIP_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class WeightsFile:
    """What a checkpoint file holds: the state dict, and the config when the file says it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None  # ours: the saved ModelConfig dict
    args: dict[str, Any] = field(default_factory=dict)  # official: vars(args)
    extra: dict[str, Any] | None = None
    # a training checkpoint's progress: step, epoch, complete and the config's train_paths /
    # test_paths (those it stores), and for a fine-tuning run finetuned_from; None for other files
    training: dict[str, Any] | None = None


def read_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> WeightsFile:
    """Read a checkpoint file of any supported kind; see the module docstring.

    Raises:
        CheckpointError: missing file, unsafe or corrupt content, or no state dict in it.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if _looks_like_safetensors(head):
        return _read_safetensors(path, map_location)
    return _read_torch(path, map_location)


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header
    return len(head) > 9 and head[8:9] == b"{"


def _read_safetensors(path: Path, map_location: str | torch.device) -> WeightsFile:
    from safetensors import safe_open

    meta = str(map_location) == "meta"
    try:
        with safe_open(str(path), framework="pt", device="cpu" if meta else str(map_location)) as fh:
            metadata = fh.metadata() or {}
            if meta:  # shapes only, no tensor data read
                state = {key: torch.empty(fh.get_slice(key).get_shape(), device="meta") for key in fh.keys()}  # noqa: SIM118
            else:
                state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: {exc}") from exc
    if (
        not meta
        and CHECKSUM_METADATA_KEY in metadata
        and payload_digest(state) != metadata[CHECKSUM_METADATA_KEY]
    ):
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its tensors do not match the stored "
            f"{CHECKSUM_METADATA_KEY} checksum (damaged on disk or in transfer?)"
        )
    try:
        config = json.loads(metadata[CONFIG_METADATA_KEY]) if CONFIG_METADATA_KEY in metadata else None
        extra = json.loads(metadata[EXTRA_METADATA_KEY]) if EXTRA_METADATA_KEY in metadata else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"checkpoint {path}: metadata {CONFIG_METADATA_KEY!r} is not valid JSON"
        ) from exc
    return WeightsFile(path, strip_prefixes(state), config=config, extra=extra)


def _read_torch(path: Path, map_location: str | torch.device) -> WeightsFile:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for disallowed globals, RuntimeError for corrupt zips
        raise CheckpointError(describe_load_failure(path, exc, "argparse.Namespace")) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}; expected a dict")
    if str(map_location) != "meta":
        verify_checksum(payload, path)
    if "model" in payload and isinstance(payload["model"], dict):
        state = payload["model"]
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state = payload  # a bare state dict
    else:
        raise CheckpointError(
            f"checkpoint {path} has no 'model' state dict; found keys {sorted(map(str, payload))[:10]}"
        )
    args = payload.get("args")
    args = (
        vars(args) if isinstance(args, argparse.Namespace) else dict(args) if isinstance(args, dict) else {}
    )
    config = payload.get("model_config", payload.get("config"))
    if config is not None and not (isinstance(config, dict) and "name" in config):
        config = None  # e.g. a training config, not a model config
    training = None
    if payload.get("format") == TRAIN_CHECKPOINT_FORMAT:
        run_config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        training = {key: payload[key] for key in TRAINING_KEYS if key in payload}
        training.update({key: list(run_config[key]) for key in ("train_paths", "test_paths")
                         if isinstance(run_config.get(key), list | tuple)})
        if payload.get("finetune") and isinstance(run_config.get("resume_path"), str):
            training["finetuned_from"] = run_config["resume_path"]
    return WeightsFile(path, strip_prefixes(state), config=config, args=args, extra=payload.get("extra"),
                       training=training)


def _ratio_for(hidden: int, d: int, stated: Any = None) -> float:
    """An ``mlp_ratio`` with ``int(d * mlp_ratio) == hidden`` (how the models size Hm): the
    checkpoint's own ``args.mlp_ratio`` when it gives ``hidden``, else ``hidden / d``, nudged up
    one float step where rounding puts the product just below ``hidden``."""
    for ratio in (stated, hidden / d, math.nextafter(hidden / d, math.inf)):
        if isinstance(ratio, int | float) and int(d * ratio) == hidden:
            return float(ratio)
    return hidden / d  # (no float ratio gives it: infer_config reports the mismatch)


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def infer_config(
    state_dict: dict[str, torch.Tensor], args: dict[str, Any] | None = None, *, source: str = "checkpoint"
) -> ModelConfig:
    """Rebuild the ModelConfig of an official DPOT / MoE-POT state dict from its shapes.

    ``modes`` and ``act`` cannot be read from shapes and come from ``args`` (defaults 32, gelu;
    a missing ``modes`` is warned about, as a wrong one changes every output).

    Raises:
        CheckpointError: a key the inference needs is missing, or the shapes disagree.
    """
    args = args or {}
    if "modes" not in args:  # the one architecture field no weight shape holds
        log.warning(
            "%s stores no args.modes (the Fourier modes cannot be read from the weights): assuming the "
            "published 32; if it was trained with another, pass it (load_pretrained(path, modes=N))", source
        )

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointError(
                f"{source}: cannot infer the architecture, key {key!r} is missing "
                "(expected an official DPOT/MoE-POT state dict)"
            )
        return tuple(state_dict[key].shape)

    hidden_out, in_plus_3, p, _ = shape("patch_embed.proj.0.weight")
    _, d, lx, ly = shape("pos_embed")
    out_channels, rest = divmod(hidden_out - 3, p)
    decoder_out = shape("out_layer.4.weight")[0]
    if rest or decoder_out % max(out_channels, 1):
        raise CheckpointError(
            f"{source}: patch_embed.proj.0.weight {shape('patch_embed.proj.0.weight')} and "
            f"out_layer.4.weight {shape('out_layer.4.weight')} do not give a whole number of output channels"
        )
    depth = 1 + max(
        (int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1
    )
    if depth == 0:
        raise CheckpointError(f"{source}: no 'blocks.*' keys; expected an official DPOT/MoE-POT state dict")
    is_moe = "blocks.0.MoE.feature_extractor.conv.0.weight" in state_dict
    hidden = shape("blocks.0.MoE.feature_extractor.conv.0.weight" if is_moe else "blocks.0.mlp.0.weight")[0]
    fields: dict[str, Any] = dict(
        name="moepot" if is_moe else "dpot",
        img_size=(lx * p, ly * p),
        patch_size=p,
        in_channels=in_plus_3 - 3,
        out_channels=out_channels,
        in_timesteps=shape("time_agg_layer.w")[0],
        out_timesteps=decoder_out // out_channels,
        n_blocks=shape("blocks.0.filter.w1")[1],
        embed_dim=d,
        out_layer_dim=shape("out_layer.0.weight")[1],
        depth=depth,
        modes=int(args.get("modes", 32)),
        mlp_ratio=_ratio_for(hidden, d, args.get("mlp_ratio")),
        n_cls=shape("cls_head.4.weight")[0],
        normalize="scale_feats_mu.weight" in state_dict,
        act=str(args.get("act", "gelu")),
        time_agg="exp_mlp" if "time_agg_layer.gamma" in state_dict else "mlp",
    )
    if is_moe:
        fields["num_experts"] = shape("blocks.0.MoE.gating.gate.7.weight")[0]
        fields["num_shared_experts"] = len(
            {k.split(".")[4] for k in state_dict if k.startswith("blocks.0.MoE.shared_experts.")}
        )
    try:
        config = ModelConfig(**fields)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: inferred an invalid architecture: {exc}") from exc
    if config.hidden_dim != hidden:
        raise CheckpointError(f"{source}: hidden width {hidden} is not int(embed_dim {d} * mlp_ratio)")
    return config


def describe_mismatch(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], limit: int = 8
) -> str:
    """Name the missing, unexpected and mis-shaped keys of ``found`` against ``expected`` ('' if none)."""

    def clip(keys: list[str]) -> str:
        more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
        return ", ".join(keys[:limit]) + more

    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{k} {tuple(found[k].shape)} (model: {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys: {clip(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {clip(unexpected)}")
    if misshaped:
        parts.append(f"mis-shaped keys: {clip(misshaped)}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- integrity
# torch's own lines around the reason a weights-only load failed: they advise re-running with
# weights_only=False, which is the one thing a refusal must not suggest
_TORCH_LOAD_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _unpickler_reason(exc: Exception) -> str:
    """The informative line of a weights-only ``UnpicklingError`` (e.g. the blocked global)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines()]
    reasons = [line for line in lines if line and not line.startswith(_TORCH_LOAD_BOILERPLATE)]
    return reasons[0] if reasons else type(exc).__name__


def describe_load_failure(path: Path, exc: Exception, allowed: str = "") -> str:
    """A one-line reason why ``torch.load(path, weights_only=True)`` raised ``exc``."""
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return f"checkpoint {path} is empty (0 bytes)"
    with open(path, "rb") as fh:
        head = fh.read(12)
    reason = _unpickler_reason(exc) if isinstance(exc, pickle.UnpicklingError) else ""
    # a pickle asking for a global is refused as such whatever its protocol (0 and 1 look like text)
    if "GLOBAL" not in reason and not head.startswith((b"PK", b"\x80")):
        # neither torch's zip format (maybe truncated) nor a pickle (protocol 2+: torch's legacy format)
        return (
            f"checkpoint {path} is not a torch checkpoint or safetensors file (it starts with "
            f"{head!r}; a YAML config or another text file?)"
        )
    if isinstance(exc, pickle.UnpicklingError):
        extra = f", {allowed}" if allowed else ""
        return (
            f"refusing to load {path}: it is not a checkpoint that loads with weights_only=True (plain "
            f"tensors and containers{extra}); nothing in it was run. Reason: {reason}"
        )
    if not zipfile.is_zipfile(path):
        return (
            f"checkpoint {path} is truncated or not a torch checkpoint ({size} bytes, no zip directory at "
            f"its end; {type(exc).__name__}: {_first_sentence(str(exc)) or 'no detail'})"
        )
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"checkpoint {path} cannot be read (damaged file?): {reason}"


def payload_digest(obj: Any) -> str:
    """``"sha256:<hex>"`` of a checkpoint payload's content: every tensor's dtype, shape and bytes
    and every plain value, walking dicts (in key order), lists and tuples.

    Neither torch's zip reader nor safetensors notices a flipped bit inside tensor data (both
    load it silently); comparing this digest, stored at save time, does. It is computed on the
    loaded objects, so it does not depend on the file layout or the device they were loaded to.
    """
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
                feed(key)
                feed(value[key])
        elif isinstance(value, list | tuple):
            digest.update(f"L{type(value).__name__}{len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(f"V{type(value).__name__}:{value!r};".encode())

    feed(obj)
    return f"sha256:{digest.hexdigest()}"


def verify_checksum(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """Check ``payload[CHECKSUM_KEY]`` (when present) against the rest of the payload.

    Raises:
        CheckpointError: naming ``path``, when the content does not match its checksum.
    """
    stored = payload.get(CHECKSUM_KEY)
    if stored is None:
        return  # official files and our older ones carry none
    content = {key: value for key, value in payload.items() if key != CHECKSUM_KEY}
    if payload_digest(content) != stored:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its content does not match the stored "
            f"{CHECKSUM_KEY!r} (damaged on disk or in transfer?); use an earlier checkpoint"
        )


def _first_sentence(text: str) -> str:
    """The first sentence of an error text: torch's zip reader follows its reason with a paragraph
    of advice on one line."""
    line = text.splitlines()[0] if text else ""
    return re.split(r"(?<=\.)\s", line, maxsplit=1)[0]
