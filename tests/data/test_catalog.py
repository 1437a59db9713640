"""The catalogue: built-in facts, data-root resolution, layering, validation, record_entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from moepot.data.catalog import (
    CATALOG_FILENAME,
    load_catalog,
    record_entries,
    resolve_data_root,
)
from moepot.errors import ConfigError, DataError

# The original's dataset_config.csv, transcribed from docs raw-formats.md section 2:
# id: (train_size, test_size, scatter, t_test, t_total, in_size, n_channels)
REFERENCE_FACTS = {
    "ns2d_fno_1e-5": (1000, 200, False, 10, 20, (64, 64), 1),
    "wave_layer": (2000, 100, False, 5, 21, (128, 128), 1),
    "wave_gauss": (2000, 100, False, 5, 16, (128, 128), 1),
    "ns2d_fno_1e-4": (9800, 200, False, 20, 30, (64, 64), 1),
    "ns2d_fno_1e-3": (4800, 200, False, 20, 50, (64, 64), 1),
    "ns2d_pdb_M1_eta1e-1_zeta1e-1": (9000, 200, True, 11, 21, (128, 128), 4),
    "ns2d_pdb_M1_eta1e-2_zeta1e-2": (9000, 200, True, 11, 21, (128, 128), 4),
    "ns2d_pdb_M1e-1_eta1e-1_zeta1e-1": (9000, 200, True, 11, 21, (128, 128), 4),
    "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2": (9000, 200, True, 11, 21, (128, 128), 4),
    "ns2d_pdb_M1e-1_eta1e-8_zeta1e-8_turb_512": (900, 20, True, 11, 21, (512, 512), 4),
    "ns2d_pdb_M1_eta1e-8_zeta1e-8_turb_512": (900, 20, True, 11, 21, (512, 512), 4),
    "ns2d_pdb_M1e-1_eta1e-8_zeta1e-8_rand_512": (900, 20, True, 11, 21, (512, 512), 4),
    "ns2d_pdb_M1_eta1e-8_zeta1e-8_rand_512": (900, 20, True, 11, 21, (512, 512), 4),
    "ns3d_pdb_M1_rand": (90, 10, True, 11, 21, (128, 128, 128), 5),
    "ns3d_pdb_M1e-1_rand": (90, 10, True, 11, 21, (128, 128, 128), 5),
    "ns3d_pdb_M1_turb": (540, 60, True, 11, 21, (64, 64, 64), 5),
    "swe_pdb": (900, 60, True, 91, 101, (128, 128), 1),
    "dr_pdb": (900, 60, True, 91, 101, (128, 128), 2),
    "cfdbench": (9000, 1000, False, 10, 20, (64, 64), 3),
    "ns2d_cond_pda": (3100, 200, True, 46, 56, (128, 128), 3),
    "ns2d_pda": (6500, 200, True, 4, 14, (128, 128), 3),
    "sw2d_pda": (7000, 400, True, 78, 88, (96, 192), 5),
}

# Reference output paths from raw-formats.md section 1 (train path, test path).
REFERENCE_PATHS = {
    "ns2d_fno_1e-5": ("data/large/ns2d_1e-5_train.hdf5", "data/large/ns2d_1e-5_test.hdf5"),
    "ns2d_fno_1e-3": ("data/large/ns2d_1e-3_train.hdf5", "data/large/ns2d_1e-3_test.hdf5"),
    "wave_gauss": ("data/large/Wave_Gauss_train.hdf5", "data/large/Wave_Gauss_valid.hdf5"),
    "swe_pdb": ("data/large/pdebench/swe_pdb/train", "data/large/pdebench/swe_pdb/test"),
    "ns3d_pdb_M1_turb": ("data/large/pdebench/ns3d_pdb_M1_turb/train", "data/large/pdebench/ns3d_pdb_M1_turb/test"),
    "cfdbench": ("data/large/cfdbench/ns2d_cdb_train.hdf5", "data/large/cfdbench/ns2d_cdb_test.hdf5"),
    "sw2d_pda": ("data/large/pdearena/sw2d_pda/train", "data/large/pdearena/sw2d_pda/test"),
}

NEW_ENTRY = {"train_path": "mine/train.hdf5", "test_path": "mine/test.hdf5", "train_size": 5, "test_size": 2,
             "scatter": False, "t_test": 3, "t_total": 13, "in_size": [16, 16], "n_channels": 2}


def write_yaml(path: Path, content) -> Path:
    path.write_text(yaml.safe_dump(content) if not isinstance(content, str) else content)
    return path


def test_builtin_catalogue_has_the_original_facts(tmp_path):
    catalog = load_catalog(data_root=tmp_path)
    assert set(catalog) == set(REFERENCE_FACTS)
    for name, (train, test, scatter, t_test, t_total, in_size, channels) in REFERENCE_FACTS.items():
        entry = catalog[name]
        assert (entry.train_size, entry.test_size, entry.scatter, entry.t_test, entry.t_total,
                entry.in_size, entry.n_channels) == (train, test, scatter, t_test, t_total, in_size, channels), name
        assert entry.t_in == 10
        assert entry.downsample == (1,) * len(in_size)
        assert entry.pred_channels == (2 if name == "cfdbench" else None)
        assert entry.t_in + entry.t_test <= entry.t_total
    for name, (train_path, test_path) in REFERENCE_PATHS.items():
        assert catalog[name].path("train", tmp_path) == tmp_path / train_path
        assert catalog[name].path("test", tmp_path) == tmp_path / test_path


def test_data_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == tmp_path
    monkeypatch.setenv("MOEPOT_DATA_ROOT", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert load_catalog().data_root == tmp_path / "env"


def test_unknown_name_lists_close_matches(tmp_path):
    catalog = load_catalog(data_root=tmp_path)
    with pytest.raises(DataError, match="ns2d_fno_1e-5") as info:
        catalog["ns2d_fno_1e5"]
    assert "ns2d_fno_1e5" in str(info.value)
    assert "ns2d_fno_1e5" not in catalog
    assert catalog.get("nope") is None


def test_user_catalogue_adds_and_overrides_field_by_field(tmp_path):
    user = write_yaml(tmp_path / "mine.yaml", {"mine": NEW_ENTRY, "swe_pdb": {"train_size": 12}})
    catalog = load_catalog(catalog_file=user, data_root=tmp_path)
    assert catalog["mine"].n_channels == 2 and catalog["mine"].t_in == 10  # default t_in
    assert catalog["mine"].downsample == (1, 1)
    assert catalog["swe_pdb"].train_size == 12
    assert catalog["swe_pdb"].test_size == 60  # untouched fields keep the built-in value
    assert catalog["swe_pdb"].origin("train_size") == str(user)
    assert "built-in" in catalog["swe_pdb"].origin("test_size")


def test_layers_apply_builtin_then_root_then_user(tmp_path, monkeypatch):
    write_yaml(tmp_path / CATALOG_FILENAME, {"dr_pdb": {"train_size": 7, "test_size": 3}})
    user = write_yaml(tmp_path / "user.yaml", {"dr_pdb": {"test_size": 2}})
    assert load_catalog(data_root=tmp_path)["dr_pdb"].test_size == 3
    catalog = load_catalog(catalog_file=user, data_root=tmp_path)
    assert (catalog["dr_pdb"].train_size, catalog["dr_pdb"].test_size) == (7, 2)
    monkeypatch.setenv("MOEPOT_CATALOG", str(user))
    assert load_catalog(data_root=tmp_path)["dr_pdb"].test_size == 2


def test_original_scatter_storage_alias(tmp_path):
    fields = {key: value for key, value in NEW_ENTRY.items() if key != "scatter"} | {"scatter_storage": True}
    user = write_yaml(tmp_path / "u.yaml", {"alias": fields})
    assert load_catalog(catalog_file=user, data_root=tmp_path)["alias"].scatter is True


def test_dot_slash_paths_are_normalised(tmp_path):
    user = write_yaml(tmp_path / "u.yaml", {"swe_pdb": {"train_path": "./data/large/x/../swe/train"}})
    assert load_catalog(catalog_file=user, data_root=tmp_path)["swe_pdb"].path("train", tmp_path) == (
        tmp_path / "data/large/swe/train")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"swe_pdb": {"train_sise": 3}}, r"swe_pdb.*unknown field 'train_sise'"),
        ({"swe_pdb": {"train_size": "many"}}, r"swe_pdb.*field 'train_size'"),
        ({"swe_pdb": {"train_size": -1}}, r"swe_pdb.*field 'train_size'"),
        ({"swe_pdb": {"scatter": "yes"}}, r"swe_pdb.*field 'scatter'"),
        ({"swe_pdb": {"in_size": [128, 0]}}, r"swe_pdb.*field 'in_size"),
        ({"swe_pdb": "not a mapping"}, r"swe_pdb.*expected a mapping"),
        ({"new_one": {"train_path": "a.hdf5"}}, r"new_one.*missing required field.*test_path"),
        ({"swe_pdb": {"t_test": 95}}, r"swe_pdb.*'t_test'.*exceeds t_total"),
        ({"swe_pdb": {"downsample": [2]}}, r"swe_pdb.*'downsample'"),
        ({"cfdbench": {"pred_channels": 4}}, r"cfdbench.*'pred_channels'"),
        ({"swe_pdb": {"train_path": "../outside/train"}}, r"swe_pdb.*'train_path'.*escapes the data root"),
        ({"swe_pdb": {"test_path": "data/../../x"}}, r"swe_pdb.*'test_path'.*escapes the data root"),
        ({"bad/name": NEW_ENTRY}, r"dataset id 'bad/name'"),
        ("- a\n- list\n", r"expected a mapping from dataset id"),
        ("swe_pdb: {train_size: [1,\n", r"not valid YAML"),
    ],
)
def test_bad_user_entries_name_file_id_and_field(tmp_path, fields, expected):
    user = write_yaml(tmp_path / "bad.yaml", fields)
    with pytest.raises(DataError, match=expected) as info:
        load_catalog(catalog_file=user, data_root=tmp_path)
    assert str(user) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("swe_pdb:\n  train_size: 3\n  train_size: 4\n", r"line 3, column 3: found duplicate key 'train_size'"),
        ("mine: {train_size: 1}\nmine: {train_size: 2}\n", r"line 2, column 1: found duplicate key 'mine'"),
        ("swe_pdb: {train_size: [1,\n", r"not valid YAML at line \d+"),
    ],
)
def test_catalogue_yaml_errors_are_one_line_with_the_place(tmp_path, text, expected):
    user = tmp_path / "bad.yaml"
    user.write_text(text)
    with pytest.raises(DataError, match=expected) as info:
        load_catalog(catalog_file=user, data_root=tmp_path)
    assert str(user) in str(info.value) and "\n" not in str(info.value)


def test_absolute_paths_only_from_the_users_own_catalogue(tmp_path):
    outside = tmp_path / "elsewhere" / "train.hdf5"
    user = write_yaml(tmp_path / "u.yaml", {"mine": NEW_ENTRY | {"train_path": str(outside)}})
    assert load_catalog(catalog_file=user, data_root=tmp_path / "root")["mine"].path("train", "/x") == outside
    root = tmp_path / "root"
    root.mkdir()
    write_yaml(root / CATALOG_FILENAME, {"mine": NEW_ENTRY | {"train_path": str(outside)}})
    with pytest.raises(DataError, match=r"catalog.yaml.*absolute path .* refused"):
        load_catalog(data_root=root)


def test_missing_catalogue_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="nope.yaml does not exist"):
        load_catalog(catalog_file=tmp_path / "nope.yaml", data_root=tmp_path)


def test_bad_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="valid"):
        load_catalog(data_root=tmp_path)["swe_pdb"].path("valid", tmp_path)


def test_record_entries_merges_atomically(tmp_path):
    path = record_entries(tmp_path, {"mine": NEW_ENTRY | {"in_size": (np.int64(16), 16)}})
    assert path == tmp_path / CATALOG_FILENAME
    record_entries(tmp_path, {"mine": {"train_size": np.int64(9)}, "swe_pdb": {"test_size": 4}})
    catalog = load_catalog(data_root=tmp_path)
    assert catalog["mine"].train_size == 9 and catalog["mine"].test_size == 2
    assert catalog["mine"].in_size == (16, 16)
    assert catalog["swe_pdb"].test_size == 4
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # no temporary file left


def _record_many(root: str, prefix: str, count: int) -> None:
    for i in range(count):
        record_entries(root, {f"{prefix}{i}": NEW_ENTRY})


def test_record_entries_from_parallel_processes_loses_nothing(tmp_path):
    # Generators run in parallel processes and record into the same catalog.yaml.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_record_many, args=(str(tmp_path), p, 15)) for p in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all(w.exitcode == 0 for w in workers)
    catalog = load_catalog(data_root=tmp_path)
    assert all(f"{p}{i}" in catalog for p in ("a", "b") for i in range(15))


def test_record_entries_refuses_bad_fields_and_keeps_the_file(tmp_path):
    record_entries(tmp_path, {"mine": NEW_ENTRY})
    before = (tmp_path / CATALOG_FILENAME).read_text()
    with pytest.raises(DataError, match="unknown field 'colour'"):
        record_entries(tmp_path, {"mine": {"colour": "red"}})
    with pytest.raises(DataError, match="missing required field"):
        record_entries(tmp_path, {"half": {"train_size": 3}})
    with pytest.raises(DataError, match="absolute path"):
        record_entries(tmp_path, {"mine": {"train_path": str(tmp_path / "abs.hdf5")}})
    assert (tmp_path / CATALOG_FILENAME).read_text() == before


@pytest.mark.parametrize("field", ["t_test", "train_path", "in_size", "n_channels", "scatter"])
def test_a_null_field_in_a_user_catalogue_is_named(tmp_path, field):
    user = tmp_path / "mine.yaml"
    user.write_text(f"swe_pdb:\n  {field}: null\n")
    with pytest.raises(DataError, match=rf"mine\.yaml: dataset 'swe_pdb': field\(s\) \['{field}'\] are null"):
        load_catalog(user, data_root=tmp_path)
