"""`moepot data convert`: options, catalogue resolution, one-line errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml

from moepot.cli import main
from moepot.data.converters import SOURCES, convert
from moepot.errors import DataError


def test_cli_converts_into_the_catalogue_path(raw, raw_dir, data_root, capsys):
    src = raw.write_pdebench_grouped(raw_dir / "2D_rdb_NA_NA.h5", n=5, data_shape=(4, 3, 2, 1))
    argv = ["data", "convert", "pdebench-swe", str(src), "--name", "swe_pdb", "--data-root", str(data_root)]
    assert main([*argv, "--n-train", "2", "--n-test", "3", "--no-progress"]) == 0
    out = data_root / "data/large/pdebench/swe_pdb"
    assert sorted(p.name for p in (out / "train").iterdir()) == ["data_0.hdf5", "data_1.hdf5"]
    assert sorted(p.name for p in (out / "test").iterdir()) == ["data_0.hdf5", "data_1.hdf5", "data_2.hdf5"]
    with h5py.File(out / "test" / "data_2.hdf5", "r") as f:  # group 2 + 2 = 4
        np.testing.assert_array_equal(f["data"][2, 1, 3, 0], raw.group_code(4, 3, 2, 1, 0))
    assert "swe_pdb: 5 file(s)" in capsys.readouterr().out


def test_cli_user_catalogue_and_env_data_root(raw, raw_dir, tmp_path, monkeypatch):
    catalog = tmp_path / "mine.yaml"
    entry = {
        "train_path": "mine/train",
        "test_path": "mine/test",
        "train_size": 2,
        "test_size": 1,
        "scatter": True,
        "t_test": 1,
        "t_total": 11,
        "in_size": [8, 6],
        "n_channels": 1,
    }
    catalog.write_text(yaml.safe_dump({"my_swe": entry}))
    root = tmp_path / "env_root"
    monkeypatch.setenv("MOEPOT_DATA_ROOT", str(root))
    src = raw.write_pdebench_grouped(raw_dir / "swe.h5", n=3, data_shape=(11, 8, 6, 1))
    assert (
        main(
            [
                "data",
                "convert",
                "pdebench-swe",
                str(src),
                "--name",
                "my_swe",
                "--catalog",
                str(catalog),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (root / "mine" / "train" / "data_1.hdf5").is_file()
    assert (root / "mine" / "test" / "data_0.hdf5").is_file()


def test_cli_error_is_one_line_naming_the_file(raw_dir, data_root, capsys):
    bad = raw_dir / "2D_rdb_NA_NA.h5"
    bad.write_text("no")
    code = main(
        ["data", "convert", "pdebench-swe", str(bad), "--name", "swe_pdb", "--data-root", str(data_root)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("moepot: error: ") and str(bad) in err and err.count("\n") == 1


def test_cli_rejects_an_unknown_source(capsys):
    with pytest.raises(SystemExit):
        main(["data", "convert", "matlab", "x", "--name", "swe_pdb"])
    assert "invalid choice" in capsys.readouterr().err


def test_unknown_name_suggests_close_ids(raw, raw_dir, data_root):
    src = raw.write_pdebench_grouped(raw_dir / "swe.h5", n=3, data_shape=(3, 2, 2, 1))
    with pytest.raises(DataError, match="swe_pdb"):
        convert("pdebench-swe", src, name="swe_pbd", data_root=data_root, progress=False)


def test_unknown_source_and_missing_raw_path(data_root, tmp_path):
    with pytest.raises(DataError, match=r"unknown converter source 'grib'.*pdebench-swe"):
        convert("grib", tmp_path, name="swe_pdb", data_root=data_root)
    with pytest.raises(DataError, match=r"nothing\.h5 does not exist"):
        convert("pdebench-swe", tmp_path / "nothing.h5", name="swe_pdb", data_root=data_root)


def test_every_source_matches_the_storage_of_its_catalogue_ids():
    """The registry's storage kind agrees with the original's catalogue (raw-formats.md §1)."""
    from moepot.data.catalog import load_catalog

    catalog = load_catalog()
    examples = {
        "fno": "ns2d_fno_1e-3",
        "pdebench-cfd": "ns3d_pdb_M1_turb",
        "pdebench-swe": "swe_pdb",
        "pdebench-dr": "dr_pdb",
        "cfdbench": "cfdbench",
        "pdearena-ns": "ns2d_cond_pda",
        "pdearena-sw": "sw2d_pda",
    }
    assert set(examples) == set(SOURCES)
    for source, name in examples.items():
        assert SOURCES[source].scatter == catalog[name].scatter, source
