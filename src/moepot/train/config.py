"""The validated training configuration: one flat model whose keys are the original's YAML keys.

A YAML file written for the original MoE-POT / DPOT scripts validates as it is: every key the
original's training, fine-tuning and evaluation scripts read is a field here under the same
name (``width``, ``n_layers``, ``T_in``, ``lr_method``, ``train_paths``, ...), next to the
options only this package has (``mask_padded_channels``, ``checkpoint_every_steps``, ...).
Keys that only steered the original's own infrastructure (``num_gpus``, ``gpu``, ``use_ln``,
...) are listed in :data:`IGNORED_ORIGINAL_KEYS`, accepted and dropped with a warning; any
other unknown key is a :class:`~moepot.errors.ConfigError` that suggests the closest valid
key. A wrong type or range names the key, the value and what is allowed.

Entry points:

* :func:`load_config` reads a file (or a shipped preset by name), expands its ``tasks:``
  block (:func:`moepot.train.tasks.expand_tasks`), applies ``--set key=value`` overrides and
  returns one :class:`TrainConfig` per task.
* :meth:`TrainConfig.from_dict` validates one mapping; :meth:`TrainConfig.to_yaml_dict` is
  its inverse (plain YAML/JSON types).
* :meth:`TrainConfig.model_config_overrides` maps the architecture keys onto the keyword
  arguments of :func:`moepot.build_model`.

Every key, its default and meaning: ``docs/configs.md``.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from moepot import yamlio
from moepot.data.catalog import PRETRAIN_DATASETS
from moepot.errors import ConfigError
from moepot.io import atomic_path

logger = logging.getLogger(__name__)


#: Keys of the original's YAML files and scripts that only steered its own infrastructure
#: (process launching, GPU selection, unused model families). They are accepted and ignored,
#: with a warning that says why.
IGNORED_ORIGINAL_KEYS: dict[str, str] = {
    "dataset": "a label in the original's log-directory name",
    "num_gpus": "use `torchrun --nproc_per_node N -m moepot ...` to choose the process count",
    "gpu": "the device is chosen by the task scheduler or torchrun",
    "is_finetune": "implied by the command (`moepot finetune`)",
    "use_ln": "an option of the original's FNO baseline that our models do not have",
    "max_nodes": "an option of the original's GNOT baseline",
    "sub": "unused by the original's temporal training scripts",
    "S": "unused by the original's temporal training scripts",
    "ntest_list": "unused by the original (its evaluation reads every test trajectory; use n_test)",
    "cls_id": "the original's fine-tuning filter for one dataset of a mixture; list only that dataset",
    "lr_step_size": "undefined in the original's scripts; restart/cyclic schedules use step_size",
}

#: Model families as the original writes them, and our registry presets.
MODEL_FAMILIES = ("moepot", "dpot", "fno")
MODEL_PRESETS = (
    "moepot-ti",
    "moepot-s",
    "moepot-m",
    "dpot-ti",
    "dpot-s",
    "dpot-m",
    "dpot-l",
    "dpot-h",
    "fno",
)

#: Components that fine-tuning can load from a checkpoint (the original's names).
LOAD_COMPONENTS = ("all", "patch_embed", "pos", "blocks", "time_agg", "cls_head", "scale_feats", "out")
_COMPONENT_ALIASES = {"patch": "patch_embed"}

#: The original's entry scripts (key ``file``) and the command each corresponds to.
_ENTRY_SCRIPTS = {
    "pretrain": "pretrain",
    "train_temporal": "pretrain",
    "train_temporal_parallel": "pretrain",
    "finetune": "finetune",
    "finetune3d": "finetune",
    "evaluate": "evaluate",
    "evaluate_varyingres": "evaluate",
}

# weight decay the original used with each optimizer when the config does not say (DPOT: Adam and
# its fine-tuning script's AdamW 1e-6, Lamb 1e-4); here because this module must not import torch
DEFAULT_WEIGHT_DECAY = {"adam": 1e-6, "adamw": 1e-6, "lamb": 1e-4}

# model-config field -> the config key (the original's name) that sets it, when set
MODEL_FIELD_KEYS = {"embed_dim": "width", "depth": "n_layers", "n_blocks": "n_blocks", "mlp_ratio": "mlp_ratio",
                    "patch_size": "patch_size", "modes": "modes", "out_layer_dim": "out_layer_dim", "act": "act",
                    "time_agg": "time_agg", "normalize": "normalize", "n_cls": "n_class",
                    "in_channels": "n_channels", "out_channels": "n_channels"}  # fmt: skip

LrMethod = Literal["cycle", "step", "warmup", "linear", "restart", "cyclic", "cos"]
Optimizer = Literal["adam", "adamw", "lamb"]


class TrainConfig(BaseModel):
    """One run (pre-training, fine-tuning or evaluation), flat, with the original's key names.

    Defaults are the original's pre-training defaults (MoE-POT-Ti on the six datasets).
    Architecture keys left unset (``None``) take the value of the model preset named by
    ``model``; ``in_channels``/``out_channels``/``n_cls`` come from the datasets (the loop
    fills them unless ``n_channels``/``n_class`` are given).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    # --- bookkeeping (the original's) ---
    name: str = Field("moepot", description="run name; the run directory is runs/<name>-<time>")
    file: Literal["pretrain", "finetune", "evaluate"] = Field(
        "pretrain", description="the original's entry script, normalised to the command"
    )
    device: str | None = Field(None, description='GPUs the task scheduler may use, e.g. "0,1"')
    comment: str = Field("", description="free text, appended to the run name")
    log_path: str = Field(
        "", description="the original's log sub-directory; run directory name if run_dir is unset"
    )
    use_writer: bool = Field(True, description="write TensorBoard events")

    # --- architecture ---
    model: str = Field("moepot-ti", description="moepot|dpot|fno (any case, MoE-POT/MoEPOT) or a preset")
    width: int | None = Field(None, gt=0, description="embedding width D (embed_dim)")
    n_layers: int | None = Field(None, gt=0, description="number of blocks (depth)")
    n_blocks: int | None = Field(None, gt=0, description="AFNO blocks (block-diagonal groups)")
    mlp_ratio: int | float | None = Field(None, gt=0, description="hidden width / D of the MLP / experts")
    patch_size: int | None = Field(None, gt=0, description="patch side p")
    modes: int | None = Field(None, gt=0, description="Fourier modes kept per axis")
    out_layer_dim: int | None = Field(None, gt=0, description="width of the decoder")
    act: str | None = Field(None, description="activation (gelu, relu, ...)")
    time_agg: Literal["exp_mlp", "mlp"] | None = Field(None, description="temporal aggregation")
    normalize: bool | None = Field(None, description="instance normalisation inside the model")
    n_channels: int | None = Field(None, gt=0, description="channels the data are padded to (default: max)")
    n_class: int | None = Field(
        None, gt=0, description="classes of the dataset head (default: len(train_paths))"
    )

    # --- data and time windows ---
    res: int = Field(128, gt=0, description="model grid side; data are resized to it")
    T_in: int = Field(10, gt=0, description="input steps")
    T_ar: int = Field(1, gt=0, description="autoregressive target steps per training sample")
    T_bundle: int = Field(1, gt=0, description="steps predicted per model call")
    noise_scale: float = Field(0.0005, ge=0, description="noise injection scale")
    train_paths: list[str] = Field(default_factory=lambda: list(PRETRAIN_DATASETS), min_length=1)
    test_paths: list[str] | None = Field(None, description="default: train_paths")
    ntrain_list: list[int] | None = Field(None, description="training trajectories per dataset")
    data_weights: list[float] | None = Field(None, description="sampling weight per dataset")
    data_root: str | None = None
    catalog: str | None = None
    num_workers: int = Field(0, ge=0, description="DataLoader workers")

    # --- optimisation ---
    lr: float = Field(0.001, gt=0)
    lr_method: LrMethod = "cycle"
    warmup_epochs: int = Field(200, ge=0)
    epochs: int = Field(1000, gt=0)
    step_size: int = Field(100, gt=0, description="epochs per step (step) / period (restart, cyclic)")
    step_gamma: float = Field(0.5, gt=0)
    batch_size: int = Field(20, gt=0)
    opt: Optimizer = "adam"
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.9, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0, description="default: the original's per optimizer")
    grad_clip: float = Field(10000.0, gt=0)
    moe_loss_weight: float = Field(0.1, ge=0)
    n_cls_loss_weight: float = Field(0.0, ge=0, description="weight of the dataset-class cross-entropy")
    temperature_decay: Literal["forward", "step"] = "forward"
    expert_dispatch: Literal["sparse", "grouped", "dense"] = Field(
        "sparse", description="how MoE-POT runs its routed experts (moepot.models.moe)"
    )
    mask_padded_channels: bool = False
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    seed: int = Field(0, ge=0)
    amp: Literal["none", "bf16"] = "none"
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default",
        description="torch.compile's mode; reduce-overhead adds CUDA graphs (GPU, with expert_dispatch: grouped)",
    )

    # --- fine-tuning ---
    resume_path: str | None = Field(None, description="checkpoint to start from (official or ours)")
    load_components: list[str] = Field(default_factory=lambda: ["blocks", "pos", "time_agg"], min_length=1)

    # --- evaluation, checkpoints, reliability ---
    eval_every_epochs: int = Field(1, gt=0)
    n_test: int | None = Field(None, gt=0, description="evaluate on the first N test trajectories")
    checkpoint_every_steps: int | None = Field(None, gt=0, description="default: after every evaluation")
    keep_last: int = Field(3, gt=0)
    nan_tolerance: int = Field(5, gt=0, description="consecutive non-finite steps before a restore")
    nan_lr_factor: float = Field(0.5, gt=0, le=1, description="lr multiplier after a restore")
    run_dir: str | None = None

    # ------------------------------------------------------------------ normalisation

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored_original_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for key in [k for k in data if k in IGNORED_ORIGINAL_KEYS]:
            value = data.pop(key)
            logger.warning("config key %r (= %r) is ignored: %s", key, value, IGNORED_ORIGINAL_KEYS[key])
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML's yes/no/true become bools; pydantic would read them as 1/0 for a number.
        if info.field_name in _NUMERIC_FIELDS:
            items = value if isinstance(value, list) else [value]
            if any(isinstance(item, bool) for item in items):
                raise ValueError("expected a number, not a boolean")
        return value

    @field_validator("name", "comment", "log_path", mode="before")
    @classmethod
    def _scalar_to_text(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _device_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            value = ",".join(str(v) for v in value)
        if isinstance(value, str):
            value = value.replace(" ", "")
            if value in ("", "cpu"):
                return None
            if not re.fullmatch(r"\d+(,\d+)*", value):
                raise ValueError('expected GPU indices such as "0" or "0,1"')
        return value

    @field_validator("file", mode="before")
    @classmethod
    def _entry_script(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        stem = Path(value.strip()).name.lower().removesuffix(".py")
        if stem not in _ENTRY_SCRIPTS:
            raise ValueError(
                f"expected pretrain, finetune or evaluate (or the original's scripts "
                f"{', '.join(s + '.py' for s in _ENTRY_SCRIPTS if s not in ('pretrain', 'finetune', 'evaluate'))})"
            )
        return _ENTRY_SCRIPTS[stem]

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().lower().replace("_", "-")
        if name.replace("-", "") in MODEL_FAMILIES:
            return name.replace("-", "")
        if name in MODEL_PRESETS:
            return name
        allowed = ("MoEPOT", "MoE-POT", "DPOT", "FNO", *MODEL_PRESETS)
        close = difflib.get_close_matches(name, [a.lower() for a in allowed], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown model{hint}; expected one of {', '.join(allowed)}")

    @field_validator(
        "lr_method", "opt", "amp", "temperature_decay", "expert_dispatch", "time_agg", "compile_mode", mode="before"
    )
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "train_paths", "test_paths", "load_components", "ntrain_list", "data_weights", mode="before"
    )
    @classmethod
    def _scalar_to_list(cls, value: Any) -> Any:
        # argparse's nargs='+' made one value a one-element list; YAML may hold the bare value.
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return [value]
        return value

    @field_validator("resume_path", "data_root", "catalog", "run_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("load_components")
    @classmethod
    def _components(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            canonical = _COMPONENT_ALIASES.get(item.strip().lower(), item.strip().lower())
            if canonical not in LOAD_COMPONENTS:
                raise ValueError(
                    f"unknown component {item!r}; expected some of {', '.join(LOAD_COMPONENTS)} (or patch)"
                )
            if canonical not in out:
                out.append(canonical)
        return out

    @field_validator("ntrain_list")
    @classmethod
    def _positive_counts(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(n <= 0 for n in value):
            raise ValueError("every count must be > 0")
        return value

    @field_validator("data_weights")
    @classmethod
    def _weights(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (
            any(not w >= 0 or w == float("inf") for w in value) or not any(w > 0 for w in value)
        ):
            raise ValueError("weights must be finite and >= 0, at least one > 0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        n = len(self.train_paths)
        if self.test_paths is None:
            self.test_paths = list(self.train_paths)
        if self.ntrain_list is not None:
            if len(self.ntrain_list) == 1 and n > 1:
                self.ntrain_list = self.ntrain_list * n
            elif len(self.ntrain_list) != n:
                raise ValueError(
                    f"ntrain_list has {len(self.ntrain_list)} values but train_paths lists {n} datasets; "
                    "give one count per dataset (or one for all)"
                )
        if self.data_weights is not None:
            if len(self.data_weights) == 1:  # the original: a single weight means equal weights
                self.data_weights = [1.0] * n
            elif len(self.data_weights) != n:
                raise ValueError(
                    f"data_weights has {len(self.data_weights)} values but train_paths lists {n} datasets; "
                    "give one weight per dataset (or one for equal weights)"
                )
        if self.n_class is not None and self.n_cls_loss_weight > 0 and self.n_class < n:
            raise ValueError(
                f"n_class = {self.n_class} is smaller than the {n} datasets of train_paths, whose index the "
                f"class head learns (n_cls_loss_weight > 0); set n_class >= {n} or leave it unset"
            )
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"compile_mode = {self.compile_mode!r} needs compile: true")
        if self.T_ar % self.T_bundle:
            raise ValueError(f"T_ar = {self.T_ar} must be a multiple of T_bundle = {self.T_bundle}")
        if self.lr_method == "cycle" and not 0 < self.warmup_epochs < self.epochs:
            raise ValueError(
                f"lr_method 'cycle' needs 0 < warmup_epochs < epochs, got warmup_epochs = "
                f"{self.warmup_epochs} and epochs = {self.epochs}"
            )
        if self.lr_method == "warmup" and self.warmup_epochs == 0:
            raise ValueError("lr_method 'warmup' needs warmup_epochs >= 1, got warmup_epochs = 0")
        if self.patch_size is not None and self.res % self.patch_size:
            raise ValueError(f"res = {self.res} must be a multiple of patch_size = {self.patch_size}")
        if self.width is not None and self.n_blocks is not None and self.width % self.n_blocks:
            raise ValueError(f"width = {self.width} must be a multiple of n_blocks = {self.n_blocks}")
        return self

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], source: str = "config", *, set_keys: Iterable[str] = ()
    ) -> TrainConfig:
        """Validate one flat mapping (no ``tasks:`` block); errors name ``source`` and the key
        (as ``--set KEY`` for the keys in ``set_keys``, whose values came from the command line).

        Raises:
            ConfigError: unknown key (with the closest valid key), wrong type or range.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
        if "tasks" in raw:
            raise ConfigError(
                f"{source}: key 'tasks' is expanded by load_config/expand_tasks, not by TrainConfig"
            )
        bad_keys = [k for k in raw if not isinstance(k, str)]
        if bad_keys:
            raise ConfigError(f"{source}: keys must be strings, got {bad_keys[0]!r}")
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            raise ConfigError(_describe_validation_error(exc, source, frozenset(set_keys))) from None

    def to_yaml_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON types; ``TrainConfig.from_dict(cfg.to_yaml_dict()) == cfg``."""
        return self.model_dump(mode="json")

    def write_yaml(self, path: str | Path) -> Path:
        """Write the resolved config as YAML, atomically (the run directory's ``config.yaml``)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))
        return path

    # ------------------------------------------------------------------ derived values

    @property
    def model_family(self) -> str:
        """``moepot``, ``dpot`` or ``fno``."""
        return self.model.split("-")[0]

    @property
    def model_preset(self) -> str:
        """The name to pass to :func:`moepot.build_model`: a preset, or a bare family (Ti defaults)."""
        return self.model

    @property
    def effective_weight_decay(self) -> float:
        """``weight_decay``, or the original's hard-coded value for ``opt``."""
        return self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.opt]

    def model_config_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model(self.model_preset, **overrides)``.

        Always ``img_size``, ``in_timesteps``, ``out_timesteps``, ``temperature_decay`` and
        ``expert_dispatch``; the
        other architecture keys only where set. ``in_channels``/``out_channels`` (and ``n_cls``
        unless ``n_class`` is set) are the loop's to add, from the datasets.
        """
        overrides: dict[str, Any] = {
            "img_size": self.res,
            "in_timesteps": self.T_in,
            "out_timesteps": self.T_bundle,
            "temperature_decay": self.temperature_decay,
            "expert_dispatch": self.expert_dispatch,
        }
        optional = {field: getattr(self, key) for field, key in MODEL_FIELD_KEYS.items()}
        overrides.update({k: v for k, v in optional.items() if v is not None})
        return overrides

    def device_list(self) -> list[int] | None:
        """GPU indices from ``device`` (``None``: any)."""
        return None if self.device is None else [int(d) for d in self.device.split(",")]

    def run_label(self) -> str:
        """``name`` and ``comment`` joined, safe as a directory name."""
        label = "-".join(part for part in (self.name, self.comment) if part)
        return re.sub(r"[^A-Za-z0-9._+=-]+", "_", label).strip("_") or "run"

    def default_run_dir(self, timestamp: str) -> Path:
        """``run_dir`` if set (its ``{time}``, if any, replaced by ``timestamp``), else
        ``runs/<log_path or run_label>-<timestamp>``."""
        if self.run_dir is not None:
            return Path(self.run_dir.replace(TIME_PLACEHOLDER, timestamp))
        base = re.sub(r"[^A-Za-z0-9._+=-]+", "_", self.log_path) if self.log_path else self.run_label()
        return Path("runs") / f"{base}-{timestamp}"


# In a run_dir, replaced by the run's start time (the same on every torchrun process).
TIME_PLACEHOLDER = "{time}"

# Fields holding numbers (or lists of numbers): booleans are refused there.
_NUMERIC_FIELDS = frozenset(
    name
    for name, field in TrainConfig.model_fields.items()
    if any(t in str(field.annotation) for t in ("int", "float")) and "bool" not in str(field.annotation)
)


# ---------------------------------------------------------------------- error messages


def _describe_validation_error(exc: ValidationError, source: str, set_keys: frozenset[str] = frozenset()) -> str:
    """One line per problem: which key (``--set key`` when the value came from there), which
    value, what is allowed."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc", ())
        key = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc).replace(".[", "[")
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            where = " (from --set)" if loc and loc[0] in set_keys else ""
            lines.append(f"unknown key {key!r}{where}{_suggest(str(loc[0]))}")
        elif not key:  # a check across keys: its message names them
            lines.append(message)
        else:
            value = error.get("input")
            if loc and loc[0] in set_keys:
                lines.append(f"--set {key}={_short(value)}: {message}")
            else:
                lines.append(f"key {key!r} = {_short(value)}: {message}")
    return f"{source}: " + "; ".join(lines)


def _suggest(key: str) -> str:
    valid = [*TrainConfig.model_fields, *IGNORED_ORIGINAL_KEYS]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(key.lower(), [v.lower() for v in valid], n=1, cutoff=0.6)
        close = [v for v in valid if close and v.lower() == close[0]]
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys are listed in docs/configs.md ({', '.join(sorted(TrainConfig.model_fields))})"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------- files and presets


def preset_dir() -> Path:
    """The directory of the shipped YAML presets (package data ``moepot/configs``)."""
    return Path(str(resources.files("moepot") / "configs"))


def list_presets() -> list[str]:
    """Names of the shipped presets (file names without ``.yaml``)."""
    folder = preset_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A file path as given, else a shipped preset by name (``tiny_cpu_moepot`` or ``...yaml``).

    Raises:
        ConfigError: neither a file nor a preset; the message lists close preset names.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent == Path(".") and name in list_presets():
        return preset_dir() / f"{name}.yaml"
    presets = list_presets()
    close = difflib.get_close_matches(name, presets, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"config {str(path_or_name)!r} is neither a file nor a shipped preset{hint} "
        f"(presets: {', '.join(presets) or 'none installed'})"
    )


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is an empty mapping)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        data = yamlio.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {str(path)!r} is not valid YAML {yamlio.describe_error(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {str(path)!r}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-4", "train_paths=[a, b]"]`` -> ``{"lr": 1e-4, "train_paths": ["a", "b"]}``.

    Values are parsed as YAML (so numbers, booleans and lists work as in the file); the last
    occurrence of a key wins.
    """
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key == "tasks":
            raise ConfigError("--set tasks=...: the tasks block can only be given in the config file")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        parsed[key] = value
    return parsed


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> list[TrainConfig]:
    """Read a config file (or a preset by name) and return one validated config per task.

    The ``tasks:`` block is expanded with the original's semantics
    (:func:`moepot.train.tasks.expand_tasks`); then every ``--set key=value`` override is
    applied to every task, and each task is validated.

    Raises:
        ConfigError: missing file, invalid YAML, a bad tasks block, an unknown key or value;
            the message names the file, the task (when there are several) and the key.
    """
    from moepot.train.tasks import expand_tasks

    file = resolve_config_path(path)
    raw = read_yaml_mapping(file)
    extra = parse_overrides(overrides)
    try:
        tasks = expand_tasks(raw)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    if "tasks" in raw and raw["tasks"] in (None, {}, []):
        logger.warning("%s: the tasks block is empty, so the file's other keys run as one task (as in the "
                       "original); list one value per task under it for a sweep, or remove it", file)
    # Warn once per file about the original's infrastructure keys, not once per task.
    ignored = {
        key: value
        for task in tasks
        for key, value in {**task, **extra}.items()
        if key in IGNORED_ORIGINAL_KEYS
    }
    for key, value in ignored.items():
        logger.warning("%s: key %r (= %r) is ignored: %s", file, key, value, IGNORED_ORIGINAL_KEYS[key])
    configs = []
    for i, task in enumerate(tasks):
        source = str(file) if len(tasks) == 1 else f"{file} (task {i + 1} of {len(tasks)})"
        merged = {key: value for key, value in {**task, **extra}.items() if key not in IGNORED_ORIGINAL_KEYS}
        configs.append(TrainConfig.from_dict(merged, source=source, set_keys=extra))
    return configs
