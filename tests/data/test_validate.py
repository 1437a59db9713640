"""`moepot data validate` scans every sample and reports every planted problem; list/info CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moepot.cli import main
from moepot.data.protocol import write_single
from moepot.data.validate import Expectations, validate_entry, validate_path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_clean_dataset_passes(tiny_data):
    tiny_data.add("clean", n_train=3, n_test=2, channels=2, steps=10, t_in=4)
    tiny_data.add("clean_scatter", n_train=3, n_test=2, channels=1, channel_axis=False, scatter=True, steps=10, t_in=4)
    catalog = tiny_data.catalog()
    for name in ("clean", "clean_scatter"):
        report = validate_entry(catalog[name], tiny_data.data_root)
        assert report.ok and report.problems == [] and report.warnings == []
        assert report.samples_checked == 5


def test_planted_nans_are_all_reported_with_file_and_sample(tiny_data, write_h5):
    single = tiny_data.add("nan_single", n_train=5, channels=2, steps=10, t_in=4)
    array = single.train.copy()
    array[1, 0, 0, 0, 0] = np.nan
    array[4, 2, 2, 9, 1] = np.inf
    write_h5(single.train_path, array)
    scatter = tiny_data.add("nan_scatter", n_test=3, channels=2, steps=10, t_in=4, scatter=True)
    sample = scatter.test[2].copy()
    sample[3, 3, 3, 1] = np.nan
    write_h5(scatter.test_path / "data_2.hdf5", sample)
    catalog = tiny_data.catalog()

    report = validate_entry(catalog["nan_single"], tiny_data.data_root)
    assert [(p.path, p.sample) for p in report.problems] == [(single.train_path, 1), (single.train_path, 4)]
    assert "NaN/Inf" in report.problems[0].message and report.samples_checked == 5 + 2
    report = validate_entry(catalog["nan_scatter"], tiny_data.data_root, splits=["test"])
    assert [(p.path, p.sample) for p in report.problems] == [(scatter.test_path / "data_2.hdf5", 2)]


def test_short_trajectories_wrong_rank_and_missing_samples(tiny_data, write_h5):
    short = tiny_data.add("short", channels=1, steps=10, t_in=4, scatter=True)
    write_h5(short.train_path / "data_2.hdf5", short.train[2, :, :, :7])  # 7 < t_in + t_test = 10
    write_h5(short.train_path / "data_3.hdf5", short.train[3, :, :, 0, 0])  # rank 2
    report = validate_entry(tiny_data.catalog()["short"], tiny_data.data_root, splits=["train"])
    by_sample = {p.sample: p.message for p in report.problems}
    assert set(by_sample) == {2, 3}
    assert "fewer than t_in + t_test = 10" in by_sample[2]
    assert "expected rank 4" in by_sample[3]

    tiny_data.add("few", n_train=2, catalog_sizes=(4, 2), channels=1, steps=10, t_in=4)
    report = validate_entry(tiny_data.catalog()["few"], tiny_data.data_root)
    assert [p.message for p in report.problems] == ["holds 2 samples, the catalogue reads 4"]


def test_one_sample_or_one_step_short_is_a_problem(tmp_path):
    """The boundaries: a split may hold more samples than the catalogue reads, never fewer, and a
    trajectory needs at least t_in + t_test steps."""
    path = write_single(tmp_path / "f.hdf5", np.ones((3, 4, 4, 9, 1)))
    report = validate_path(path, expect=Expectations(n_samples=4, min_steps=10))
    assert report.problems[0].message == "holds 3 samples, the catalogue reads 4"
    assert "9 time steps, fewer than t_in + t_test = 10" in report.problems[1].message
    assert len(report.problems) == 2
    assert validate_path(path, expect=Expectations(n_samples=3, min_steps=9)).ok


def test_whole_file_problems(tiny_data, write_h5, tmp_path):
    bad = tiny_data.add("bad", channels=2, steps=10, t_in=4)
    write_h5(bad.train_path, bad.train.astype(np.int16))
    write_h5(bad.test_path, bad.test[..., 0, 0])  # [N, X, Y]: wrong rank for a single file
    report = validate_entry(tiny_data.catalog()["bad"], tiny_data.data_root)
    messages = [str(p) for p in report.problems]
    assert len(messages) == 2
    assert "bad_train.hdf5: 'data' has dtype int16" in messages[0]
    assert "bad_test.hdf5: 'data' has shape (2, 8, 8); expected rank 5" in messages[1]

    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    report = validate_path(junk)
    assert not report.ok and "not a readable HDF5 file" in report.problems[0].message


def test_scatter_gaps_and_inconsistent_shapes(tiny_data, write_h5):
    data = tiny_data.add("gappy", n_train=4, channels=2, steps=10, t_in=4, scatter=True)
    (data.train_path / "data_1.hdf5").unlink()
    other = tiny_data.add("uneven", n_train=3, channels=2, steps=10, t_in=4, scatter=True)
    write_h5(other.train_path / "data_2.hdf5", np.zeros((8, 6, 10, 2)))
    catalog = tiny_data.catalog()
    report = validate_entry(catalog["gappy"], tiny_data.data_root, splits=["train"])
    messages = " | ".join(str(p) for p in report.problems)
    assert "data_1.hdf5 is missing" in messages and "holds 1 samples, the catalogue reads 4" in messages
    report = validate_entry(catalog["uneven"], tiny_data.data_root, splits=["train"])
    assert [p.sample for p in report.problems] == [2]
    assert "differs from the first sample's" in report.problems[0].message
    assert any("in_size = [8, 8]" in w.message for w in report.warnings)


def test_cli_validate_exit_status_and_output(tiny_data, write_h5, capsys):
    data = tiny_data.add("toy", n_train=3, channels=1, steps=10, t_in=4)
    common = ("--data-root", str(tiny_data.data_root), "--catalog", str(tiny_data.catalog_file))
    code, out, _ = run_cli(capsys, "data", "validate", "toy", *common)
    assert code == 0 and "6 samples scanned" not in out and "5 samples scanned, OK" in out
    array = data.train.copy()
    array[0, 0, 0, 0, 0] = np.nan
    array[2, 0, 0, 0, 0] = np.nan
    write_h5(data.train_path, array)
    code, out, _ = run_cli(capsys, "data", "validate", "toy", *common)
    assert code == 1
    assert out.count("PROBLEM") == 2 and "toy_train.hdf5 [sample 2]" in out
    code, out, _ = run_cli(capsys, "data", "validate", "toy", "--json", "--split", "train", *common)
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and [p["sample"] for p in report["problems"]] == [0, 2]
    code, out, _ = run_cli(capsys, "data", "validate", str(data.test_path))
    assert code == 0 and "OK" in out
    code, _, err = run_cli(capsys, "data", "validate", "toyy", *common)
    assert code == 2 and "did you mean toy" in err and "Traceback" not in err


def test_cli_list_and_info(tiny_data, capsys):
    tiny_data.add("toy", n_train=3, channels=2, steps=10, t_in=4)
    common = ("--data-root", str(tiny_data.data_root), "--catalog", str(tiny_data.catalog_file))
    code, out, _ = run_cli(capsys, "data", "list", "--json", *common)
    rows = {row["name"]: row for row in json.loads(out)["datasets"]}
    assert code == 0 and len(rows) == 23
    assert rows["toy"]["train_present"] and rows["toy"]["test_present"]
    assert not rows["swe_pdb"]["train_present"]
    code, out, _ = run_cli(capsys, "data", "list", *common)
    assert code == 0 and any(line.startswith("toy ") and line.endswith("yes") for line in out.splitlines())
    code, out, _ = run_cli(capsys, "data", "info", "toy", "--json", *common)
    info = json.loads(out)
    assert info["splits"]["train"]["stored_samples"] == 3
    assert info["splits"]["train"]["sample_shape"] == [8, 8, 10, 2]
    assert info["defined_in"] == [str(tiny_data.catalog_file)]
    code, out, _ = run_cli(capsys, "data", "info", "cfdbench", *common)
    assert code == 0 and "pred_channels  2" in out and "missing" in out


@pytest.mark.parametrize("bad_catalog", ["swe_pdb: {train_path: ../../etc}\n", "toy: {colour: red}\n"])
def test_cli_reports_bad_catalogue_in_one_line(tmp_path, capsys, bad_catalog):
    path = tmp_path / "bad.yaml"
    path.write_text(bad_catalog)
    code, _, err = run_cli(capsys, "data", "list", "--catalog", str(path), "--data-root", str(tmp_path))
    assert code == 2 and str(path) in err and len(err.strip().splitlines()) == 1


def test_cli_validate_options_reach_the_scan(tiny_data, write_h5, tmp_path, capsys):
    """--split, --max-samples (for a PATH too) and --spatial-dims (default 2, docs/data.md)."""
    data = tiny_data.add("toy", n_train=3, n_test=2, channels=1, steps=10, t_in=4)
    common = ("--data-root", str(tiny_data.data_root), "--catalog", str(tiny_data.catalog_file))
    code, out, _ = run_cli(capsys, "data", "validate", "toy", "--split", "test", *common)
    assert code == 0 and "2 samples scanned, OK" in out
    code, out, _ = run_cli(capsys, "data", "validate", str(data.train_path), "--max-samples", "2")
    assert code == 0 and "2 samples scanned, OK" in out
    flat = write_h5(tmp_path / "no_channels.hdf5", np.zeros((2, 4, 4, 6)))  # [N, X, Y, T]: a 2-D set
    code, out, _ = run_cli(capsys, "data", "validate", str(flat))
    assert code == 0 and "2 samples scanned, OK" in out
    code, out, _ = run_cli(capsys, "data", "validate", str(flat), "--spatial-dims", "3")
    assert code == 1 and "PROBLEM" in out
