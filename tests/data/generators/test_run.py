"""Generate orchestration: requests, raw -> protocol -> catalogue, reuse, seeding, CLI."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from moepot.cli import main
from moepot.data.catalog import load_catalog
from moepot.data.generators import all_generators, dr_pdb
from moepot.data.generators.run import (
    STAMP_FILE,
    SUITES,
    build_request,
    generate,
    resolve_names,
    trajectory_rng,
)
from moepot.data.protocol import SampleReader
from moepot.data.validate import validate_entry
from moepot.errors import ConfigError, DataError

MINE = ["ns2d_fno_1e-5", "ns2d_fno_1e-4", "ns2d_fno_1e-3", "swe_pdb", "dr_pdb"]
TINY = {"n_train": 2, "n_test": 1, "size": 8, "progress": False}


@pytest.fixture
def counted_dr(monkeypatch):
    """dr_pdb's spec with a write_raw that counts its calls."""
    calls = []
    original = dr_pdb.GENERATORS[0]

    def write_raw(request):
        calls.append(request)
        return original.write_raw(request)

    monkeypatch.setattr(dr_pdb, "GENERATORS", [dataclasses.replace(original, write_raw=write_raw)])
    return calls


def test_unknown_ids_and_suites_are_errors_listing_the_generators():
    with pytest.raises(ConfigError, match=r"no_such_set.*generators exist for: .*dr_pdb"):
        resolve_names(["dr_pdb", "no_such_set"], None)
    with pytest.raises(ConfigError, match="--suite 'huge'"):
        resolve_names([], "huge")
    with pytest.raises(ConfigError, match="name at least one dataset id"):
        resolve_names([], None)


def test_the_quick_suite_is_the_six_pretraining_sets_and_all_have_generators():
    assert SUITES["quick"] == ["ns2d_fno_1e-5", "ns2d_fno_1e-3", "ns2d_pdb_M1e-1_eta1e-2_zeta1e-2",
                               "swe_pdb", "dr_pdb", "cfdbench"]
    specs = all_generators()
    missing = [name for name in SUITES["quick"] if name not in specs]
    assert not missing, f"no generator module provides {missing}"
    # the issue asks for 64x64; checked here for this module's generators (ns2d_pdb chose its own)
    assert all(specs[name].quick.get("size") == 64 for name in SUITES["quick"] if name in MINE)


def test_request_precedence_is_defaults_then_suite_then_options(tmp_path):
    spec = all_generators()["ns2d_fno_1e-5"]
    plain = build_request(spec, tmp_path)
    assert (plain.n_train, plain.n_test, plain.size) == (spec.n_train, spec.n_test, spec.size)
    quick = build_request(spec, tmp_path, suite="quick")
    assert quick.n_train == spec.quick["n_train"]
    explicit = build_request(spec, tmp_path, suite="quick", n_train=5, seed=3)
    assert (explicit.n_train, explicit.n_test, explicit.seed) == (5, spec.quick["n_test"], 3)
    # --size alone: stored at the upstream 64 when it divides (FNO simulates 256, stores 64) ...
    assert build_request(spec, tmp_path, size=256).stored_size == 64
    # ... else at the simulation size
    assert build_request(spec, tmp_path, size=32).stored_size == 32
    assert build_request(all_generators()["swe_pdb"], tmp_path, size=256).stored_size == 128


@pytest.mark.parametrize(
    ("options", "message"),
    [({"n_train": 0}, "--n-train"), ({"size": 16, "stored_size": 6}, "--stored-size 6"),
     ({"size": 4}, "--size"), ({"seed": -1}, "--seed")],
)
def test_invalid_requests_name_the_option(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        build_request(all_generators()["dr_pdb"], tmp_path, **options)


@pytest.mark.parametrize("name", MINE)
def test_generated_data_validates_with_the_catalogue_channels_and_frames(tmp_path, name):
    builtin = load_catalog(data_root=tmp_path)[name]
    entry = generate([name], data_root=tmp_path, **TINY)[name]
    assert (entry.train_size, entry.test_size, entry.in_size) == (2, 1, (8, 8))
    assert (entry.t_total, entry.n_channels) == (builtin.t_total, builtin.n_channels)
    assert load_catalog(data_root=tmp_path)[name] == entry  # recorded in <root>/catalog.yaml
    report = validate_entry(entry, tmp_path)
    assert report.ok, report.problems
    assert report.samples_checked == 3
    info = SampleReader(entry.path("train", tmp_path), entry.scatter).info()
    assert info.sample_shape == (8, 8, builtin.t_total, builtin.n_channels)
    assert sorted(p.name for p in (tmp_path / "raw" / name).iterdir()) == [STAMP_FILE]  # raw removed


def test_finished_output_is_reused_and_a_new_request_regenerates(tmp_path, counted_dr):
    first = generate(["dr_pdb"], data_root=tmp_path, **TINY)["dr_pdb"]
    again = generate(["dr_pdb"], data_root=tmp_path, **TINY)["dr_pdb"]
    assert len(counted_dr) == 1 and again == first
    stamp = json.loads((tmp_path / "raw" / "dr_pdb" / STAMP_FILE).read_text())
    assert stamp["n_train"] == 2 and stamp["seed"] == 0 and "moepot_version" in stamp

    bigger = generate(["dr_pdb"], data_root=tmp_path, **{**TINY, "n_train": 3})["dr_pdb"]
    assert len(counted_dr) == 2 and bigger.train_size == 3
    assert validate_entry(bigger, tmp_path).ok

    smaller = generate(["dr_pdb"], data_root=tmp_path, **{**TINY, "n_train": 1})["dr_pdb"]
    assert smaller.train_size == 1  # old, longer outputs were removed, not resumed
    assert SampleReader(smaller.path("train", tmp_path), True).info().n_samples == 1


def test_deleted_outputs_are_regenerated(tmp_path, counted_dr):
    entry = generate(["dr_pdb"], data_root=tmp_path, **TINY)["dr_pdb"]
    for path in sorted(entry.path("test", tmp_path).iterdir()):
        path.unlink()
    entry.path("test", tmp_path).rmdir()
    generate(["dr_pdb"], data_root=tmp_path, **TINY)
    assert len(counted_dr) == 2 and validate_entry(entry, tmp_path).ok


def test_outputs_not_written_by_generate_are_left_alone(tmp_path):
    entry = load_catalog(data_root=tmp_path)["dr_pdb"]
    foreign = entry.path("train", tmp_path)
    foreign.mkdir(parents=True)
    (foreign / "data_0.hdf5").write_bytes(b"real data")
    with pytest.raises(DataError, match="not written by `moepot data generate`"):
        generate(["dr_pdb"], data_root=tmp_path, **TINY)
    assert (foreign / "data_0.hdf5").read_bytes() == b"real data"


def _test_sample(root, **options):
    entry = generate(["dr_pdb"], data_root=root, **{**TINY, **options})["dr_pdb"]
    with h5py.File(entry.path("test", root) / "data_0.hdf5", "r") as f:
        return f["data"][...]


def test_output_is_deterministic_and_test_trajectories_ignore_n_train(tmp_path):
    base = _test_sample(tmp_path / "a")
    np.testing.assert_array_equal(base, _test_sample(tmp_path / "b"))
    np.testing.assert_array_equal(base, _test_sample(tmp_path / "c", n_train=4))
    assert not np.allclose(base, _test_sample(tmp_path / "d", seed=1))


def test_test_trajectories_are_independent_draws_not_copies_of_training_ones(tmp_path):
    entry = generate(["dr_pdb"], data_root=tmp_path, **TINY)["dr_pdb"]
    samples = {}
    for split, n in (("train", 2), ("test", 1)):
        for i in range(n):
            with h5py.File(entry.path(split, tmp_path) / f"data_{i}.hdf5", "r") as f:
                samples[split, i] = f["data"][...]
    assert not any(np.allclose(samples["test", 0], samples["train", i]) for i in range(2))
    # the seeding rule itself: every (split, index) of every generator is its own stream
    for name in all_generators():
        draws = [trajectory_rng(0, name, split, i).random() for split in ("train", "test") for i in range(3)]
        assert len(set(draws)) == len(draws), name


def test_keep_raw_keeps_the_raw_layout(tmp_path):
    generate(["swe_pdb"], data_root=tmp_path, keep_raw=True, **TINY)
    raw = tmp_path / "raw" / "swe_pdb" / "2D_rdb_NA_NA.h5"
    with h5py.File(raw, "r") as f:
        assert sorted(f.keys()) == ["0000", "0001", "0002"]


def test_cli_generates_and_prints_a_table(tmp_path, capsys):
    argv = ["data", "generate", "dr_pdb", "--n-train", "2", "--n-test", "1", "--size", "8",
            "--data-root", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dr_pdb" in out and "8x8" in out and str(tmp_path / "catalog.yaml") in out
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["datasets"]
    assert rows[0]["train_size"] == 2 and rows[0]["t_total"] == 101
    assert main(["data", "generate", "nope", "--data-root", str(tmp_path)]) == 2
    assert "no generator for dataset id(s) nope" in capsys.readouterr().err


def test_a_killed_run_is_replaced_by_the_rerun(tmp_path, monkeypatch):
    """Outputs written before a kill carry an "in progress" stamp: the same command rerun replaces them."""
    import moepot.data.converters as converters

    convert = converters.convert

    def killed(*args, **kwargs):
        convert(*args, **kwargs)
        raise KeyboardInterrupt  # after the outputs, before the final stamp

    monkeypatch.setattr(converters, "convert", killed)
    with pytest.raises(KeyboardInterrupt):
        generate(["dr_pdb"], data_root=tmp_path, **TINY)
    assert json.loads((tmp_path / "raw" / "dr_pdb" / STAMP_FILE).read_text())["status"] == "in progress"
    monkeypatch.setattr(converters, "convert", convert)
    entry = generate(["dr_pdb"], data_root=tmp_path, **TINY)["dr_pdb"]
    assert validate_entry(entry, tmp_path).ok
    assert "status" not in json.loads((tmp_path / "raw" / "dr_pdb" / STAMP_FILE).read_text())


def test_raw_files_kept_from_other_options_do_not_join_a_new_request(tmp_path):
    generate(["swe_pdb"], data_root=tmp_path, keep_raw=True, **{**TINY, "n_train": 3})
    (tmp_path / "raw" / "swe_pdb" / "stale.h5").write_bytes(b"from an earlier request")
    generate(["swe_pdb"], data_root=tmp_path, keep_raw=True, **TINY)
    assert sorted(p.name for p in (tmp_path / "raw" / "swe_pdb").iterdir()) == ["2D_rdb_NA_NA.h5", STAMP_FILE]


def test_cli_generate_takes_a_user_catalogue(tmp_path):
    """--catalog as on every data command: a user entry moving the outputs is where they land."""
    user = tmp_path / "mine.yaml"
    user.write_text("dr_pdb:\n  train_path: mine/dr_train\n  test_path: mine/dr_test\n")
    argv = ["data", "generate", "dr_pdb", "--n-train", "2", "--n-test", "1", "--size", "8",
            "--data-root", str(tmp_path), "--catalog", str(user), "--no-progress"]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "mine" / "dr_train").iterdir()) == ["data_0.hdf5", "data_1.hdf5"]


def test_every_spec_pickles_into_the_worker_processes():
    """generate() with several workers sends each spec to a spawned process."""
    import pickle

    for name, spec in all_generators().items():
        assert pickle.loads(pickle.dumps(spec)).name == name


def test_a_data_root_under_a_file_is_one_line_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "catalog.yaml"
    blocker.write_text("x")
    code = main(["data", "generate", "swe_pdb", "--n-train", "1", "--n-test", "1", "--size", "16",
                 "--data-root", str(blocker / "data"), "--no-progress"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"{blocker} is a file, not a directory" in err and "Traceback" not in err
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["catalog.yaml"]


def test_cli_options_reach_generate_and_its_defaults_are_the_apis(tmp_path, monkeypatch, capsys):
    """Each option lands on its own argument, and an option not given is generate()'s documented
    default (docs/generators.md: seed=0, stored_size=None, ...)."""
    import inspect

    import moepot.data.generators.cli as gen_cli

    calls = []
    monkeypatch.setattr(gen_cli, "generate", lambda names, **kwargs: calls.append(kwargs) or {})
    assert main(["data", "generate", "dr_pdb", "--data-root", str(tmp_path)]) == 0
    defaults = {name: p.default for name, p in inspect.signature(generate).parameters.items()
                if p.default is not inspect.Parameter.empty}
    for key in ("n_train", "n_test", "size", "stored_size", "seed", "suite", "keep_raw", "workers"):
        assert calls[0][key] == defaults[key], key
    assert main(["data", "generate", "dr_pdb", "--data-root", str(tmp_path), "--n-train", "3", "--n-test", "2",
                 "--size", "16", "--stored-size", "8", "--seed", "4", "--workers", "1", "--keep-raw"]) == 0
    capsys.readouterr()
    given = {key: calls[1][key] for key in ("n_train", "n_test", "size", "stored_size", "seed", "workers", "keep_raw")}
    assert given == {"n_train": 3, "n_test": 2, "size": 16, "stored_size": 8, "seed": 4, "workers": 1, "keep_raw": True}
