"""Tests of moepot.train.config: the original's YAML validates as is, errors name key and value.

The YAML texts below reproduce the *shape* of the original MoE-POT / DPOT config files (their
keys, nesting and value styles: quoted lists, 0/1 flags, ``file: train_temporal_parallel.py``,
a ``tasks:`` block), written here for the test.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moepot.errors import ConfigError
from moepot.train.config import (
    IGNORED_ORIGINAL_KEYS,
    TrainConfig,
    list_presets,
    load_config,
    parse_overrides,
    preset_dir,
    resolve_config_path,
)

SIX = ["ns2d_fno_1e-5", "ns2d_fno_1e-3", "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2", "swe_pdb", "dr_pdb", "cfdbench"]

ORIGINAL_PRETRAIN = """\
name: NS2d
file: train_temporal_parallel.py

dataset: ns2d
use_writer: True
res: 128
modes: 20
width: 32
out_layer_dim: 32
lr: 0.001
lr_method: cycle
step_size: 100
step_gamma: 0.5
epochs: 1000
warmup_epochs: 200
noise_scale: 0.0
T_ar: 1
use_ln: 0
normalize: 0
T_bundle: 1
grad_clip: 10000.0

train_paths: [
  'ns2d_fno_1e-5',
  'ns2d_fno_1e-3',
  'ns2d_pdb_M1e-1_eta1e-2_zeta1e-2',
  'swe_pdb',
  'dr_pdb',
  'cfdbench'
]
test_paths: [
  'ns2d_fno_1e-5',
  'ns2d_fno_1e-3',
  'ns2d_pdb_M1e-1_eta1e-2_zeta1e-2',
  'swe_pdb',
  'dr_pdb',
  'cfdbench'
]
ntrain_list: [1000,1000,9000,900,900,9000]

model: MoEPOT
num_gpus: 2
opt: adam
comment: 'Ti'
tasks:
  normalize: [0]
  res: [128]
  patch_size: [8]
  noise_scale: [0.0005]
  modes: [32]
  width: [512]
  mlp_ratio: [1]
  n_blocks: [4]
  n_layers: [4]
  lr: [0.001]
  epochs: [1000]
  lr_method: [cycle]
  warmup_epochs: [200]
  T_ar: [1]
  T_bundle: [1]
  beta1: [0.9]
  beta2: [0.9]
  batch_size: [20]
  moe_loss_weight: [0.1]
"""

ORIGINAL_FINETUNE = """\
name: NS2d
file: finetune.py

model: MoEPOT
dataset: ns2d
use_writer: True
res: 128
modes: 32
patch_size: 8
lr: 0.001
lr_method: cycle
warmup_epochs: 40
step_size: 100
step_gamma: 0.5
epochs: 500
noise_scale: 0.0005
T_ar: 1
use_ln: 1
normalize: 0
T_bundle: 1
grad_clip: 10000.0
beta1: 0.9
beta2: 0.9
n_channels: 4
n_class: 6

resume_path: './logs_pretrain/checkpoints/model_moepot_tiny.pth'
load_components: ['all']
n_layers: 4
n_blocks: 4
mlp_ratio: 1
width: 512

tasks:
  comment: ['ns1e-5_tft_1000', 'swe_tft_900']
  epochs: [500, 500]
  warmup_epochs: [100, 100]
  batch_size: [20, 20]
  noise_scale: [0.0, 0.0]
  train_paths: [
         ['ns2d_fno_1e-5'],
         ['swe_pdb'],
  ]
  test_paths: [
        ['ns2d_fno_1e-5'],
        ['swe_pdb'],
  ]
  ntrain_list: [
         [1000],
         [900],
  ]
"""

ORIGINAL_EVALUATE = """\
name: NS2d
file: evaluate.py
model: MoEPOT
dataset: ns2d
use_writer: False
res: 128
lr_method: cycle
warmup_epochs: 40
epochs: 200
n_channels: 4
n_class: 6
test_paths: ['ns2d_fno_1e-5', 'swe_pdb']
resume_path: 'logs_pretrain/checkpoints/model_moepot_tiny.pth'
tasks:
 comment: ['t-eva']
 batch_size: [20]
 mlp_ratio: [1]
 width: [512]
 n_layers: [4]
 n_blocks: [4]
"""


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(raw, source="test.yaml")
    return str(info.value)


# ---------------------------------------------------------------- the original's files


def test_original_pretrain_yaml_validates_with_its_task_values(tmp_path, caplog):
    path = write(tmp_path, ORIGINAL_PRETRAIN)
    with caplog.at_level(logging.WARNING):
        (cfg,) = load_config(path)
    # the task block overrides the file's base values (width 32 -> 512, modes 20 -> 32)
    assert (cfg.width, cfg.n_layers, cfg.n_blocks, cfg.mlp_ratio) == (512, 4, 4, 1)
    assert (cfg.res, cfg.patch_size, cfg.modes, cfg.out_layer_dim) == (128, 8, 32, 32)
    assert (cfg.noise_scale, cfg.batch_size, cfg.moe_loss_weight) == (0.0005, 20, 0.1)
    assert cfg.model == "moepot" and cfg.file == "pretrain" and cfg.normalize is False
    assert cfg.train_paths == SIX and cfg.test_paths == SIX
    assert cfg.ntrain_list == [1000, 1000, 9000, 900, 900, 9000]
    # the original's infrastructure keys are dropped with one warning each
    for key in ("num_gpus", "dataset", "use_ln"):
        assert sum(f"'{key}'" in r.getMessage() for r in caplog.records) == 1


def test_original_finetune_yaml_gives_one_config_per_task(tmp_path):
    configs = load_config(write(tmp_path, ORIGINAL_FINETUNE))
    assert [c.comment for c in configs] == ["ns1e-5_tft_1000", "swe_tft_900"]
    assert [c.train_paths for c in configs] == [["ns2d_fno_1e-5"], ["swe_pdb"]]  # nested lists stay whole
    assert [c.ntrain_list for c in configs] == [[1000], [900]]
    for cfg in configs:
        assert cfg.file == "finetune"
        assert cfg.load_components == ["all"]
        assert (cfg.n_channels, cfg.n_class) == (4, 6)
        assert cfg.resume_path == "./logs_pretrain/checkpoints/model_moepot_tiny.pth"
        assert (cfg.epochs, cfg.warmup_epochs, cfg.noise_scale) == (500, 100, 0.0)


def test_original_evaluate_yaml_validates(tmp_path):
    (cfg,) = load_config(write(tmp_path, ORIGINAL_EVALUATE))
    assert cfg.file == "evaluate" and cfg.comment == "t-eva" and cfg.use_writer is False
    assert cfg.test_paths == ["ns2d_fno_1e-5", "swe_pdb"]


@pytest.mark.parametrize(
    ("written", "family"),
    [("MoEPOT", "moepot"), ("MoE-POT", "moepot"), ("moe_pot", "moepot"), ("DPOT", "dpot"), ("FNO", "fno")],
)
def test_model_names_as_the_original_writes_them(written, family):
    assert TrainConfig.from_dict({"model": written}).model_family == family


def test_presets_by_name_keep_their_size():
    cfg = TrainConfig.from_dict({"model": "MoEPOT-S"})
    assert cfg.model == "moepot-s" and cfg.model_family == "moepot" and cfg.model_preset == "moepot-s"


def test_model_config_overrides_follow_the_original_constructor_call():
    # The original's train_temporal_parallel.py builds
    # MoEPOTNet(img_size=res, patch_size=patch_size, in_timesteps=T_in, out_timesteps=T_bundle,
    #           normalize=normalize, embed_dim=width, depth=n_layers, n_blocks=n_blocks,
    #           mlp_ratio=mlp_ratio, out_layer_dim=out_layer_dim, act=act, modes=modes).
    original_names = {
        "res": "img_size",
        "patch_size": "patch_size",
        "T_in": "in_timesteps",
        "T_bundle": "out_timesteps",
        "normalize": "normalize",
        "width": "embed_dim",
        "n_layers": "depth",
        "n_blocks": "n_blocks",
        "mlp_ratio": "mlp_ratio",
        "out_layer_dim": "out_layer_dim",
        "act": "act",
        "modes": "modes",
    }
    values = {
        "res": 64,
        "patch_size": 4,
        "T_in": 6,
        "T_bundle": 2,
        "T_ar": 4,
        "normalize": 1,
        "width": 48,
        "n_layers": 3,
        "n_blocks": 6,
        "mlp_ratio": 2,
        "out_layer_dim": 24,
        "act": "gelu",
        "modes": 9,
    }
    overrides = TrainConfig.from_dict(values).model_config_overrides()
    for ours, theirs in original_names.items():
        assert overrides[theirs] == (bool(values[ours]) if ours == "normalize" else values[ours])
    assert "in_channels" not in overrides and "n_cls" not in overrides  # the loop's, from the data
    assert TrainConfig.from_dict({"n_channels": 4, "n_class": 6}).model_config_overrides()["n_cls"] == 6


def test_overrides_build_a_model_when_the_registry_is_there():
    registry = pytest.importorskip("moepot.models.registry")
    for preset in ("tiny_cpu_moepot", "tiny_cpu_dpot"):
        (cfg,) = load_config(preset)
        model = registry.build_model(
            cfg.model_preset, **cfg.model_config_overrides(), in_channels=2, out_channels=2
        )
        assert model.config.embed_dim == cfg.width and model.config.depth == cfg.n_layers
        assert model.config.img_size in (cfg.res, (cfg.res, cfg.res))


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("widht", "width"),
        ("batchsize", "batch_size"),
        ("t_in", "T_in"),
        ("lr_methd", "lr_method"),
        ("epoch", "epochs"),
    ],
)
def test_unknown_key_suggests_the_closest(typo, meant):
    message = config_error({typo: 1})
    assert (
        "test.yaml" in message and f"unknown key '{typo}'" in message and f"did you mean '{meant}'" in message
    )


def test_unknown_key_inside_tasks_names_the_task(tmp_path):
    path = write(tmp_path, "lr: 0.001\ntasks:\n  lr: [0.001, 0.01]\n  bach_size: [4, 8]\n")
    with pytest.raises(ConfigError, match=r"task 1 of 2.*unknown key 'bach_size'.*did you mean 'batch_size'"):
        load_config(path)


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ({"lr_method": "cosine"}, ["lr_method", "'cosine'", "'cycle'", "'step'", "'warmup'"]),
        ({"opt": "sgd"}, ["opt", "'sgd'", "'adam'", "'adamw'", "'lamb'"]),
        ({"batch_size": 0}, ["batch_size", "0", "greater than 0"]),
        ({"batch_size": 2.5}, ["batch_size", "2.5", "integer"]),
        ({"lr": "fast"}, ["lr", "'fast'", "number"]),
        ({"lr": -1e-3}, ["lr", "-0.001", "greater than 0"]),
        ({"lr": True}, ["lr", "True", "not a boolean"]),
        ({"beta2": 1.0}, ["beta2", "1.0", "less than 1"]),
        ({"noise_scale": float("nan")}, ["noise_scale", "nan", "finite"]),
        ({"noise_scale": -0.001}, ["noise_scale", "-0.001", "greater than or equal to 0"]),
        ({"moe_loss_weight": -0.1}, ["moe_loss_weight", "-0.1", "greater than or equal to 0"]),
        ({"n_cls_loss_weight": -1}, ["n_cls_loss_weight", "-1", "greater than or equal to 0"]),
        ({"grad_clip": 0}, ["grad_clip", "0", "greater than 0"]),
        ({"normalize": 3}, ["normalize", "3", "boolean"]),
        ({"model": "AFNO"}, ["model", "'AFNO'", "MoEPOT", "DPOT", "FNO"]),
        ({"file": "train.py"}, ["file", "'train.py'", "pretrain, finetune or evaluate"]),
        ({"device": "gpu0"}, ["device", "'gpu0'", '"0,1"']),
        ({"load_components": ["blocks", "mlp"]}, ["load_components", "'mlp'", "time_agg"]),
        ({"train_paths": ["swe_pdb", 3]}, ["train_paths[1]", "3", "string"]),
        ({"amp": "fp16"}, ["amp", "'fp16'", "'bf16'"]),
        ({"nan_lr_factor": 2}, ["nan_lr_factor", "2", "less than or equal to 1"]),
    ],
)
def test_wrong_value_names_key_value_and_what_is_allowed(raw, fragments):
    message = config_error(raw)
    assert message.startswith("test.yaml: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ({"T_ar": 3, "T_bundle": 2}, ["T_ar = 3", "T_bundle = 2"]),
        ({"train_paths": ["a", "b"], "ntrain_list": [1, 2, 3]}, ["ntrain_list has 3", "train_paths lists 2"]),
        (
            {"train_paths": ["a", "b"], "data_weights": [1, 2, 3]},
            ["data_weights has 3", "train_paths lists 2"],
        ),
        ({"warmup_epochs": 10, "epochs": 10}, ["cycle", "warmup_epochs = 10", "epochs = 10"]),
        ({"res": 30, "patch_size": 8}, ["res = 30", "patch_size = 8"]),
        ({"width": 30, "n_blocks": 4}, ["width = 30", "n_blocks = 4"]),
        ({"data_weights": [0, 0], "train_paths": ["a", "b"]}, ["data_weights", "at least one > 0"]),
        ({"data_weights": [1, -0.5], "train_paths": ["a", "b"]}, ["data_weights", "[1, -0.5]", ">= 0"]),
    ],
)
def test_inconsistent_keys_are_named(raw, fragments):
    message = config_error(raw)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_one_value_lists_broadcast_as_in_the_original():
    cfg = TrainConfig.from_dict({"train_paths": ["a", "b", "c"], "data_weights": [1], "ntrain_list": 50})
    assert cfg.data_weights == [1.0, 1.0, 1.0] and cfg.ntrain_list == [50, 50, 50]
    assert TrainConfig.from_dict({"train_paths": "swe_pdb"}).train_paths == ["swe_pdb"]


def test_load_components_accept_the_original_spellings():
    cfg = TrainConfig.from_dict({"load_components": ["patch", "pos", "Blocks", "patch_embed"]})
    assert cfg.load_components == ["patch_embed", "pos", "blocks"]


def test_weight_decay_defaults_to_the_original_per_optimizer():
    # the original: Adam and (fine-tuning) AdamW weight_decay=1e-6; Lamb weight_decay=1e-4
    assert TrainConfig.from_dict({}).effective_weight_decay == 1e-6
    assert TrainConfig.from_dict({"opt": "lamb"}).effective_weight_decay == 1e-4
    assert TrainConfig.from_dict({"opt": "AdamW", "weight_decay": 0.01}).effective_weight_decay == 0.01


def test_defaults_are_the_original_pretraining_settings():
    # architecture.md, "Training semantics": adam betas (0.9, 0.9), one-cycle with lr 1e-3 and
    # 200 of 1000 warm-up epochs, clip 1e4, res 128, T_in 10, T_ar 1, batch 20, noise 0.0005,
    # moe_loss_weight 0.1, the six pre-training datasets.
    cfg = TrainConfig.from_dict({})
    assert (cfg.opt, cfg.beta1, cfg.beta2, cfg.lr, cfg.lr_method) == ("adam", 0.9, 0.9, 1e-3, "cycle")
    assert (cfg.warmup_epochs, cfg.epochs, cfg.grad_clip) == (200, 1000, 1e4)
    assert (cfg.res, cfg.T_in, cfg.T_ar, cfg.batch_size, cfg.noise_scale) == (128, 10, 1, 20, 0.0005)
    assert cfg.moe_loss_weight == 0.1 and cfg.train_paths == SIX and cfg.n_cls_loss_weight == 0.0
    assert cfg.mask_padded_channels is False and cfg.temperature_decay == "forward"


@pytest.mark.parametrize("block", ["tasks:", "tasks: {}", "tasks: []"])
def test_an_empty_tasks_block_is_one_task_with_a_warning(tmp_path, caplog, block):
    """The original's scheduler runs the file's keys as one task when the block is empty (docs:
    'exactly as in the original'); the file is named in a warning rather than passing silently."""
    config = tmp_path / "sweep.yaml"
    config.write_text(f"lr: 0.01\n{block}\n")
    with caplog.at_level(logging.WARNING):
        configs = load_config(config)
    assert len(configs) == 1 and configs[0].lr == 0.01
    assert any(str(config) in r.getMessage() and "tasks block is empty" in r.getMessage() for r in caplog.records)
    caplog.clear()
    config.write_text("lr: 0.01\n")
    with caplog.at_level(logging.WARNING):
        load_config(config)
    assert "tasks block is empty" not in caplog.text


def test_tasks_key_is_refused_by_from_dict():
    assert "tasks" in config_error({"tasks": {"lr": [1e-3]}})


# ---------------------------------------------------------------- files, presets, overrides


def test_set_overrides_are_yaml_and_apply_to_every_task(tmp_path):
    path = write(tmp_path, "lr_method: step\ntasks:\n  lr: [0.001, 0.01]\n  batch_size: [4, 8]\n")
    configs = load_config(path, ["batch_size=2", "train_paths=[swe_pdb, dr_pdb]", "lr=1e-4", "normalize=yes"])
    assert [c.lr for c in configs] == [1e-4, 1e-4]  # YAML reads 1e-4 as text; the float field parses it
    assert [c.batch_size for c in configs] == [2, 2]
    assert all(c.train_paths == ["swe_pdb", "dr_pdb"] and c.normalize is True for c in configs)


@pytest.mark.parametrize("bad", ["lr", "=3", "tasks=[1]", "lr=[1, 2"])
def test_malformed_set_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="--set"):
        parse_overrides([bad])


def test_set_with_unknown_key_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'grad_clip'"):
        load_config(write(tmp_path, "lr: 0.001\n"), ["gradclip=1.0"])


def test_round_trip_through_yaml(tmp_path):
    (cfg,) = load_config(write(tmp_path, ORIGINAL_PRETRAIN))
    again = load_config(cfg.write_yaml(tmp_path / "run" / "config.yaml"))
    assert again == [cfg]
    assert TrainConfig.from_dict(cfg.to_yaml_dict()) == cfg
    assert yaml.safe_load(yaml.safe_dump(cfg.to_yaml_dict())) == cfg.to_yaml_dict()


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a shipped preset"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="line 2"):
        load_config(write(tmp_path, "lr: 0.001\nwidth: a: b\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("lr: 0.001\nwidth: 32\nlr: 0.0001\n", 3),  # the second lr would silently win
        ("model: moepot\ntasks:\n  lr: [0.1, 0.2]\n  lr: [0.3, 0.4]\n", 4),  # inside the tasks block
    ],
)
def test_a_key_given_twice_is_an_error_at_its_second_line(tmp_path, text, line):
    with pytest.raises(ConfigError, match=rf"line {line}, column \d+: found duplicate key 'lr'") as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_a_bad_value_from_set_is_named_as_set_not_as_the_files(tmp_path):
    """The file says lr: 0.001; the bad value came from the command line, and the message
    must send the user there rather than into a file that does not hold it."""
    path = write(tmp_path, "lr: 0.001\nbatch_size: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["lr=fast"])
    assert "--set lr='fast'" in str(info.value) and "key 'lr'" not in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' \(from --set\); did you mean 'lr'"):
        load_config(path, ["lrr=1"])
    with pytest.raises(ConfigError, match=r"key 'batch_size' = 'many'"):  # the file's own value: as before
        load_config(write(tmp_path, "batch_size: many\n"), ["lr=0.1"])


def test_shipped_presets_are_package_data_and_load_by_name():
    names = set(list_presets())
    expected = {
        "pretrain_moepot_ti",
        "pretrain_moepot_s",
        "pretrain_moepot_m",
        "pretrain_dpot_ti",
        "finetune_moepot",
        "evaluate",
        "tiny_cpu_moepot",
        "tiny_cpu_dpot",
        "original_style_tasks",
    }
    assert expected <= names
    assert preset_dir().parent == Path(__import__("moepot").__file__).parent
    for name in names:
        assert (
            resolve_config_path(name) == resolve_config_path(f"{name}.yaml") == preset_dir() / f"{name}.yaml"
        )
        assert load_config(name)
    with pytest.raises(ConfigError, match="did you mean tiny_cpu_moepot"):
        resolve_config_path("tiny_cpu_moepto")


def test_published_presets_match_the_published_sizes():
    # architecture.md "Published sizes": (D, mlp_ratio, depth, AFNO blocks)
    published = {
        "pretrain_moepot_ti": (512, 1, 4, 4),
        "pretrain_moepot_s": (1024, 1, 6, 8),
        "pretrain_moepot_m": (1024, 2, 8, 8),
        "pretrain_dpot_ti": (512, 1, 4, 4),
    }
    for name, size in published.items():
        (cfg,) = load_config(name)
        assert (cfg.width, cfg.mlp_ratio, cfg.n_layers, cfg.n_blocks) == size
        assert (cfg.res, cfg.patch_size, cfg.modes, cfg.T_in) == (128, 8, 32, 10)
        assert cfg.train_paths == SIX and cfg.ntrain_list == [1000, 1000, 9000, 900, 900, 9000]


def test_original_style_preset_expands_to_its_tasks():
    configs = load_config("original_style_tasks")
    assert len(configs) == 2
    assert [c.lr for c in configs] == [0.001, 0.0005] and [c.batch_size for c in configs] == [8, 4]
    assert all(c.noise_scale == 0.0005 and c.res <= 64 for c in configs)


def test_device_and_run_names():
    cfg = TrainConfig.from_dict({"device": "0, 2", "name": "NS2d", "comment": "Ti run/1"})
    assert cfg.device_list() == [0, 2]
    assert cfg.run_label() == "NS2d-Ti_run_1"
    assert cfg.default_run_dir("0101_12_00_00") == Path("runs/NS2d-Ti_run_1-0101_12_00_00")
    assert TrainConfig.from_dict({"device": 1}).device_list() == [1]
    assert TrainConfig.from_dict({"run_dir": "x/y"}).default_run_dir("t") == Path("x/y")


# ---------------------------------------------------------------- property-based


KNOWN_KEYS = sorted(TrainConfig.model_fields)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(alphabet=string.ascii_letters + string.digits + "_-., ", max_size=12),
    st.sampled_from(
        ["cycle", "adam", "MoEPOT", "dpot-s", "bf16", "step", "blocks", "0,1", "finetune.py", "1e-3"]
    ),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=3), scalars, max_size=2)
)
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS + sorted(IGNORED_ORIGINAL_KEYS)),
    st.text(alphabet=string.ascii_letters + "_", max_size=10),
)


# Numbers a user would plausibly write for the numeric keys, so that many generated configs validate.
NUMERIC_KEYS = [key for key in KNOWN_KEYS if key not in ("train_paths", "test_paths", "load_components")]
NUMERIC_KEYS = [key for key in NUMERIC_KEYS if "int" in str(TrainConfig.model_fields[key].annotation)]
plausible = st.one_of(st.integers(min_value=1, max_value=64), st.floats(min_value=1e-4, max_value=0.99))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.dictionaries(keys, values, max_size=6),
        st.dictionaries(st.sampled_from(NUMERIC_KEYS), plausible, max_size=6),
    )
)
def test_any_mapping_validates_or_raises_config_error(raw):
    try:
        cfg = TrainConfig.from_dict(raw)
    except ConfigError as exc:
        assert str(exc).startswith("config: ")
        return
    assert TrainConfig.from_dict(cfg.to_yaml_dict()) == cfg  # whatever validates round-trips


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(keys, values, max_size=3),
    st.one_of(
        values, st.dictionaries(keys, st.one_of(values, st.lists(values, min_size=1, max_size=3)), max_size=4)
    ),
)
def test_any_tasks_grid_validates_or_raises_config_error(tmp_path_factory, base, tasks):
    path = tmp_path_factory.mktemp("grid") / "cfg.yaml"
    path.write_text(yaml.safe_dump({**base, "tasks": tasks}))
    try:
        configs = load_config(path)
    except ConfigError:
        return
    assert configs and all(isinstance(c, TrainConfig) for c in configs)


def test_every_key_is_documented():
    docs = (Path(__file__).parents[2] / "docs" / "configs.md").read_text()
    missing = [key for key in [*KNOWN_KEYS, *IGNORED_ORIGINAL_KEYS] if f"`{key}`" not in docs]
    assert not missing, f"keys missing from docs/configs.md: {missing}"
    assert all(f"`{name}`" in docs for name in list_presets())


def test_compile_mode_needs_compile():
    message = config_error({"train_paths": ["ns2d_fno_1e-5"], "compile_mode": "reduce-overhead"})
    assert "compile_mode = 'reduce-overhead' needs compile: true" in message
    assert "'max-autotune'" in config_error({"train_paths": ["ns2d_fno_1e-5"], "compile": True, "compile_mode": "fast"})
    cfg = TrainConfig.from_dict({"train_paths": ["ns2d_fno_1e-5"], "compile": True, "compile_mode": "Reduce-Overhead"})
    assert cfg.compile_mode == "reduce-overhead"


@pytest.mark.parametrize("preset", ["pretrain_moepot_ti", "pretrain_moepot_s", "pretrain_moepot_m"])
def test_the_gpu_overrides_in_the_presets_comments_are_valid(preset):
    """The presets' comments suggest ``--set`` overrides for GPUs; they must load as written."""
    import re
    from importlib.resources import files

    path = files("moepot.configs") / f"{preset}.yaml"
    suggestion = [line for line in path.read_text().splitlines() if line.startswith("#   --set ")]
    overrides = re.findall(r"--set (\S+)", "\n".join(suggestion))
    assert len(overrides) == 5
    (cfg,) = load_config(str(path), overrides)
    assert (cfg.expert_dispatch, cfg.amp, cfg.compile, cfg.compile_mode) == ("grouped", "bf16", True, "reduce-overhead")


def test_a_class_head_smaller_than_the_mixture_is_refused():
    base = {"train_paths": ["a", "b", "c"], "n_cls_loss_weight": 1.0}
    with pytest.raises(ConfigError, match=r"n_class = 2 is smaller than the 3 datasets"):
        TrainConfig.from_dict({**base, "n_class": 2})
    assert TrainConfig.from_dict({**base, "n_class": 3}).n_class == 3
    assert TrainConfig.from_dict({**base, "n_class": 2, "n_cls_loss_weight": 0.0}).n_class == 2  # head unused
