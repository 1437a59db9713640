"""Fine-tuning: load chosen components of a pre-trained model, re-initialise what does not fit.

Components (the original's names) and the state-dict keys they cover:

=============== ======================================
``all``          every key
``patch``        ``patch_embed.*`` (alias ``patch_embed``)
``pos``          ``pos_embed``
``blocks``       ``blocks.*``
``time_agg``     ``time_agg_layer.*``
``cls_head``     ``cls_head.*``
``scale_feats``  ``scale_feats_mu.*``, ``scale_feats_sigma.*``
``out``          ``out_layer.*``
=============== ======================================

The original's default is ``blocks, pos, time_agg``. A tensor whose shape differs between the
source and the new model (another channel count, ``T_in`` or resolution) keeps the new model's
fresh initialisation, except the positional embedding, which is interpolated to the new grid;
every such case is listed in one warning. The blocks are the pre-trained trunk itself: when they
are selected and differ (another width, depth or number of experts: the config describes another
model than the checkpoint), loading stops with a :class:`ConfigError` naming the keys, instead of
fine-tuning a mostly fresh model. After loading, :func:`prepare_finetune` freezes the MoE
router and feature extractor (``model.set_finetune(True)``: eval mode, temperature 0.5, no
balance loss).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from moepot.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

COMPONENT_PREFIXES: dict[str, tuple[str, ...]] = {
    "patch": ("patch_embed.",),
    "patch_embed": ("patch_embed.",),
    "pos": ("pos_embed",),
    "blocks": ("blocks.",),
    "time_agg": ("time_agg_layer.",),
    "cls_head": ("cls_head.",),
    "scale_feats": ("scale_feats_mu.", "scale_feats_sigma."),
    "out": ("out_layer.",),
}
DEFAULT_COMPONENTS = ("blocks", "pos", "time_agg")


@dataclass
class LoadReport:
    """What :func:`load_components` did, key by key."""

    loaded: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # shape mismatch: fresh init kept
    missing: list[str] = field(default_factory=list)  # selected but absent from the source


def read_source_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint: our training checkpoint, our ``save_pretrained``
    export, or an official ``.pth`` (``module.`` prefixes removed)."""
    from moepot.models.checkpoints import verify_checksum
    from moepot.train.checkpoint import FORMAT

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_file() and path.suffix in (".pt", ".pth"):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raw = None  # an official file needs the Namespace allow-list: let the models code read it
        if isinstance(raw, dict) and raw.get("format") == FORMAT:
            verify_checksum(raw, path)
            return dict(raw["model"])
    import moepot

    return moepot.load_pretrained(path).state_dict()


def _selected(key: str, components: tuple[str, ...]) -> bool:
    if "all" in components:
        return True
    return any(key.startswith(p) for c in components for p in COMPONENT_PREFIXES[c])


def load_components(
    model: nn.Module,
    source: dict[str, torch.Tensor],
    components: str | list[str] | tuple[str, ...] = DEFAULT_COMPONENTS,
) -> LoadReport:
    """Copy the selected components of ``source`` into ``model`` (in place).

    Args:
        model: the new model (freshly initialised).
        source: the pre-trained state dict (``module.`` prefixes are removed).
        components: ``"all"`` or names from :data:`COMPONENT_PREFIXES`.

    Raises:
        ConfigError: an unknown component name.
    """
    names = (components,) if isinstance(components, str) else tuple(components)
    unknown = [c for c in names if c != "all" and c not in COMPONENT_PREFIXES]
    if unknown:
        raise ConfigError(
            f"load_components: unknown component(s) {unknown}; expected 'all' or "
            f"{', '.join(COMPONENT_PREFIXES)}"
        )
    source = {k.removeprefix("module."): v for k, v in source.items()}
    target = model.state_dict()
    if _selected("blocks.", names):
        _require_same_trunk(source, target)
    report = LoadReport()
    new_state: dict[str, torch.Tensor] = {}
    for key, value in target.items():
        if not _selected(key, names):
            continue
        if key not in source:
            report.missing.append(key)
            continue
        src = source[key]
        if src.shape == value.shape:
            new_state[key] = src.to(value.dtype)
            report.loaded.append(key)
        elif key == "pos_embed" and src.ndim == 4 and src.shape[:2] == value.shape[:2]:
            # [1, D, h, w] -> [1, D, h', w']: a new resolution or patch size
            new_state[key] = F.interpolate(
                src.float(), size=tuple(value.shape[-2:]), mode="bicubic", align_corners=False
            ).to(value.dtype)
            report.interpolated.append(f"{key} {tuple(src.shape)} -> {tuple(value.shape)}")
        else:
            report.reinitialised.append(f"{key} {tuple(src.shape)} -> {tuple(value.shape)}")
    model.load_state_dict(new_state, strict=False)
    if report.reinitialised or report.interpolated:
        log.warning(
            "fine-tuning: shapes differ from the checkpoint; re-initialised: %s; interpolated: %s",
            ", ".join(report.reinitialised) or "none",
            ", ".join(report.interpolated) or "none",
        )
    if report.missing:
        log.warning("fine-tuning: not in the checkpoint (fresh init kept): %s", ", ".join(report.missing))
    log.info("fine-tuning: loaded %d tensors (%s)", len(report.loaded), ", ".join(names))
    return report


def _require_same_trunk(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    """Raise a :class:`ConfigError` unless the ``blocks.*`` tensors of both match key for key
    (MoE temperatures aside: official files have none)."""
    from moepot.models.checkpoints import describe_mismatch

    def trunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if k.startswith("blocks.") and not k.endswith(".temperature")}

    mismatch = describe_mismatch(trunk(target), trunk(source), limit=4)
    if mismatch:
        raise ConfigError(
            f"fine-tuning: the config's model and the checkpoint's differ in the pre-trained blocks ({mismatch}); "
            "set model, width, n_layers, n_blocks, mlp_ratio (and the experts) to the checkpoint's"
        )


def prepare_finetune(model: nn.Module) -> None:
    """Freeze the MoE router and feature extractor, fix the temperature at 0.5 (no-op for dense
    models, which have no ``set_finetune``)."""
    set_finetune = getattr(model, "set_finetune", None)
    if callable(set_finetune):
        set_finetune(True)
