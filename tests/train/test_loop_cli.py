"""The commands: an original-style YAML with a tasks block, --dry-run, finetune and evaluate --json."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_data import write_decay_mixture

from moepot.cli import main

# The shape of the original's configs/pretrain_tiny.yaml (key names, tasks block), sized down.
ORIGINAL_STYLE = """\
name: NS2d
file: train_temporal_parallel.py
dataset: ns2d
use_writer: False
res: 16
modes: 3
width: 16
out_layer_dim: 8
lr: 0.001
lr_method: cycle
step_size: 100
step_gamma: 0.5
epochs: 2
warmup_epochs: 1
noise_scale: 0.0
T_ar: 1
use_ln: 0
normalize: 0
T_bundle: 1
grad_clip: 10000.0
T_in: 4
train_paths: ['decay_a', 'decay_b']
test_paths: ['decay_a', 'decay_b']
ntrain_list: [8, 8]
model: MoEPOT
num_gpus: 2
opt: adam
comment: 'Ti'
tasks:
  patch_size: [4, 4]
  n_blocks: [2, 2]
  n_layers: [1, 1]
  lr: [0.001, 0.0001]
  batch_size: [4, 8]
  moe_loss_weight: [0.1, 0.1]
"""


@pytest.fixture()
def data_root(tmp_path):
    write_decay_mixture(tmp_path, n_train=8)
    return tmp_path


def test_original_yaml_with_tasks_runs_one_directory_per_task(data_root, tmp_path, capsys):
    config = tmp_path / "pretrain_tiny.yaml"
    config.write_text(ORIGINAL_STYLE)
    common = ["pretrain", "--config", str(config), "--data-root", str(data_root), "--run-dir", str(tmp_path / "runs"),
              "--set", "max_steps=2", "--set", "n_test=2"]
    assert main([*common, "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "task 1/2" in listing and "task 2/2" in listing and "batch_size=8" in listing
    assert main(common) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    batch_sizes = []
    for run in runs:
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        assert record["step"] == 2
        state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        batch_sizes.append(state["config"]["batch_size"])
        assert state["config"]["lr"] == (1e-3 if state["config"]["batch_size"] == 4 else 1e-4)
    assert sorted(batch_sizes) == [4, 8]

    # fine-tune the first run's checkpoint, then evaluate it with --json
    checkpoint = runs[0] / "checkpoints" / "last.pt"
    finetuned = tmp_path / "ft"
    assert main(["finetune", "--config", str(config), "--checkpoint", str(checkpoint), "--data-root", str(data_root),
                 "--run-dir", str(finetuned), "--set", "max_steps=1", "--set", "n_test=2", "--set", "lr=0.001",
                 "--set", "batch_size=4", "--set", "load_components=[all]"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", "decay_a", "decay_b",
                 "--data-root", str(data_root), "--n-test", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"decay_a", "decay_b"}
    assert all(set(v) == {"rel_l2_step", "rel_l2_rollout"} for v in results.values())


def test_a_bad_dataset_id_in_a_later_task_stops_the_sweep_before_any_task_trains(data_root, tmp_path, capsys):
    """Task 2 trains on 'decay_c', an id no catalogue read holds: --dry-run and the sweep itself
    fail at once naming the task, the key, the id and the close matches; task 1 never runs."""
    config = tmp_path / "pretrain_tiny.yaml"
    config.write_text(ORIGINAL_STYLE.replace("  patch_size: [4, 4]", "  patch_size: [4, 4]\n"
                                             "  train_paths: [[decay_a, decay_b], [decay_a, decay_c]]"))
    runs = tmp_path / "runs"
    common = ["pretrain", "--config", str(config), "--data-root", str(data_root), "--run-dir", str(runs),
              "--set", "max_steps=1", "--set", "n_test=1"]
    for extra in (["--dry-run"], []):
        assert main([*common, *extra]) == 2
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
        assert f"{config} (task 2 of 2): key 'train_paths': unknown dataset id 'decay_c'" in captured.err
        assert "did you mean" in captured.err and "decay_a" in captured.err.split("did you mean")[1]
        assert "task 1/2" not in captured.out
    assert not runs.exists()  # task 1 did not train
    # test ids too, and a value from --set is named as such
    assert main([*common, "--dry-run", "--set", "test_paths=[decay_b, decay_bb]"]) == 2
    assert "(task 1 of 2): --set test_paths=...: unknown dataset id 'decay_bb'" in capsys.readouterr().err

    # --catalog is read: the id it defines passes
    extra = tmp_path / "extra_catalog.yaml"
    extra.write_text("decay_c:\n  train_path: decay_a_train.hdf5\n  test_path: decay_a_test.hdf5\n"
                     "  train_size: 8\n  test_size: 4\n  scatter: false\n  t_in: 4\n  t_test: 3\n"
                     "  t_total: 8\n  in_size: [16, 16]\n  n_channels: 1\n  downsample: [1, 1]\n")
    assert main([*common, "--dry-run", "--catalog", str(extra)]) == 0
    assert "task 2/2" in capsys.readouterr().out


def test_bad_config_is_one_line_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("lr_methd: cycle\n")
    assert main(["pretrain", "--config", str(config), "--dry-run"]) == 2
    assert "did you mean 'lr_method'" in capsys.readouterr().err


def test_resume_auto_needs_a_run_directory(tmp_path, capsys):
    config = tmp_path / "pretrain_tiny.yaml"
    config.write_text(ORIGINAL_STYLE)
    assert main(["pretrain", "--config", str(config), "--resume", "auto", "--dry-run"]) == 2
    assert "--resume auto continues the run in --run-dir" in capsys.readouterr().err


def test_tasks_sharing_the_configs_run_dir_get_a_directory_each(data_root, tmp_path, capsys):
    config = tmp_path / "pretrain_tiny.yaml"
    config.write_text(ORIGINAL_STYLE + f"run_dir: {tmp_path / 'shared'}\n")
    assert main(["pretrain", "--config", str(config), "--resume", "auto", "--dry-run", "--data-root", str(data_root)]) == 0
    dirs = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if "run directory" in line]
    assert len(dirs) == len(set(dirs)) == 2
    assert all(d.startswith(str(tmp_path / "shared") + "/task") for d in dirs)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "0"], "--batch-size: expected a positive integer"),
        (["--res", "0"], "--res: expected a positive integer"),
        (["--device", "foo"], "device 'foo' is not a torch device"),
    ],
)
def test_evaluate_rejects_bad_options_in_one_line(tmp_path, capsys, options, message):
    checkpoint = tmp_path / "none.pt"  # never read: the options fail first
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", "decay_a", *options]
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_save_rollouts_path_ending_in_a_slash_names_a_directory_not_a_file(tmp_path, capsys):
    """``--save-rollouts new/`` (a directory that does not exist yet) is refused: it would
    otherwise be written as a file called ``new``."""
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", "decay_a",
              "--save-rollouts", f"{tmp_path / 'new'}/"])  # fmt: skip
    assert exit_.value.code == 2
    assert "is a directory; give a file name" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_output_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys, where):
    """--save-rollouts and --run-dir are checked when the options are read: nothing is loaded,
    evaluated or trained first, and the line names the option and the file in the way."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    (tmp_path / "rollouts").mkdir()
    runs = [
        ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--data", "decay_a", "--save-rollouts",
         str(tmp_path / "rollouts") if where == "a directory" else str(blocker / "r.hdf5")],
        ["pretrain", "--config", "tiny_cpu_moepot", "--run-dir",
         str(blocker) if where == "a directory" else str(blocker / "run")],
    ]
    for argv in runs:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        option = argv[-2]
        assert f"argument {option}:" in err and "Traceback" not in err
        assert ("is a directory" in err) if argv[0] == "evaluate" and where == "a directory" else (str(blocker) in err)
    assert blocker.read_text() == "x" and not any((tmp_path / "rollouts").iterdir())


def test_a_configs_run_dir_under_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    code = main(["pretrain", "--config", "tiny_cpu_moepot", "--data-root", str(tmp_path),
                 "--set", f"run_dir={blocker / 'run'}", "--set", "max_steps=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{blocker} is a file, not a directory" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_on_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--data", "decay_a", "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err


def test_evaluate_takes_its_settings_from_a_config(data_root, tmp_path, capsys):
    """`moepot evaluate --config FILE`: test_paths, n_test, batch_size from the file (the
    original's evaluate YAML); --data, --n-test ... given on the command line win."""
    from moepot import build_model
    from moepot.models.registry import save_pretrained

    export = save_pretrained(build_model("moepot", img_size=16, patch_size=4, in_channels=2, out_channels=2,
                                         in_timesteps=4, embed_dim=16, depth=1, n_blocks=2, modes=3,
                                         out_layer_dim=8), tmp_path / "m.safetensors")  # fmt: skip
    config = tmp_path / "eval.yaml"
    config.write_text("file: evaluate.py\ntest_paths: [decay_a, decay_b]\nn_test: 2\nbatch_size: 1\n")
    common = ["evaluate", "--checkpoint", str(export), "--data-root", str(data_root), "--json"]
    assert main([*common, "--config", str(config)]) == 0
    from_config = json.loads(capsys.readouterr().out)
    assert set(from_config) == {"decay_a", "decay_b"}
    assert main([*common, "--data", "decay_a", "decay_b", "--n-test", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == from_config  # same settings, same numbers
    assert main([*common, "--config", str(config), "--data", "decay_b"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"decay_b"}
    assert main([*common]) == 2
    assert "--data NAME" in capsys.readouterr().err
    # the original's evaluate YAML names the checkpoint in resume_path
    config.write_text(config.read_text() + f"resume_path: {export}\n")
    assert main(["evaluate", "--config", str(config), "--data-root", str(data_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_config


def test_evaluate_says_when_its_configs_model_keys_are_not_the_checkpoints(data_root, tmp_path, caplog, capsys):
    """The model decides T_in and the channels: a config asking for others is told, not ignored."""
    from moepot import build_model
    from moepot.models.registry import save_pretrained

    export = save_pretrained(build_model("dpot", img_size=16, patch_size=4, in_channels=2, out_channels=2,
                                         in_timesteps=4, embed_dim=16, depth=1, n_blocks=2, modes=3,
                                         out_layer_dim=8), tmp_path / "m.safetensors")  # fmt: skip
    config = tmp_path / "eval.yaml"
    config.write_text("file: evaluate\ntest_paths: [decay_a]\nn_test: 2\nT_in: 6\nn_channels: 2\n")
    with caplog.at_level("WARNING"):
        assert main(["evaluate", "--checkpoint", str(export), "--config", str(config), "--data-root",
                     str(data_root), "--json"]) == 0  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("T_in = 6 is not used" in w and "in_timesteps = 4" in w for w in warnings), warnings
    assert not any("n_channels" in w for w in warnings)  # 2 is the model's: nothing to say
    assert set(json.loads(capsys.readouterr().out)) == {"decay_a"}


def test_evaluate_does_not_take_a_fine_tuning_configs_starting_point(tmp_path, caplog, capsys):
    """resume_path of a fine-tuning config is the pre-trained start, not the model to evaluate."""
    config = tmp_path / "ft.yaml"
    config.write_text("file: finetune.py\ntest_paths: [decay_a]\nresume_path: pre.pth\n")
    with caplog.at_level("WARNING"):
        assert main(["evaluate", "--config", str(config)]) == 2
    assert "give --checkpoint" in capsys.readouterr().err and "written for finetune" in caplog.text


def test_a_config_written_for_another_command_is_named(data_root, tmp_path, caplog):
    config = tmp_path / "eval.yaml"
    config.write_text("file: evaluate.py\ntrain_paths: [decay_a]\n")
    with caplog.at_level("WARNING"):
        assert main(["pretrain", "--config", str(config), "--dry-run", "--data-root", str(data_root)]) == 0
    assert "written for evaluate" in caplog.text and "moepot evaluate" in caplog.text


def test_evaluate_and_route_take_a_run_directory_for_its_last_checkpoint(data_root, tmp_path, capsys):
    """``--checkpoint RUN_DIR`` evaluates the run's checkpoints/last.pt (of two saves, the later
    one): the same numbers as naming that file; a directory without one is a one-line error."""
    from moepot import build_model
    from moepot.train.checkpoint import CheckpointManager

    run = tmp_path / "runs" / "demo"
    manager = CheckpointManager(run)
    for step, seed in ((3, 0), (5, 1)):
        torch.manual_seed(seed)
        model = build_model("moepot", img_size=16, patch_size=4, in_channels=2, out_channels=2, in_timesteps=4,
                            embed_dim=16, depth=1, n_blocks=2, modes=3, out_layer_dim=8)  # fmt: skip
        manager.save({"model": model.state_dict(), "model_config": model.config.to_dict(), "step": step}, step=step)
    common = ["evaluate", "--data", "decay_a", "--data-root", str(data_root), "--n-test", "2", "--json"]
    results = {}
    for name, checkpoint in (("run", run), ("last", manager.last), ("first", manager.step_path(3))):
        assert main([*common, "--checkpoint", str(checkpoint)]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert results["run"] == results["last"] != results["first"]
    # what was read is recorded as the file (last.pt moves on when the run continues), not the directory
    import h5py

    saved = tmp_path / "rollouts.hdf5"
    assert main([*common, "--checkpoint", str(run), "--save-rollouts", str(saved)]) == 0
    with h5py.File(saved, "r") as handle:
        assert handle.attrs["checkpoint"] == str(manager.last)
    route_out = tmp_path / "route_run"
    assert main(["route", "--checkpoint", str(run), "--data", "decay_a", "decay_b", "--data-root", str(data_root),
                 "--n-samples", "2", "--out", str(route_out), "--device", "cpu", "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    assert json.loads((route_out / "routing.json").read_text())["checkpoint"] == str(manager.last)
    assert "Router analysis of demo" in (route_out / "report.md").read_text()

    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    assert main([*common, "--checkpoint", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory with a checkpoint" in err
    assert main(["route", "--checkpoint", str(empty), "--data", "decay_a", "decay_b", "--data-root", str(data_root),
                 "--out", str(tmp_path / "route")]) == 2  # fmt: skip
    assert "not a run directory with a checkpoint" in capsys.readouterr().err


def test_a_run_directory_as_the_starting_point_is_its_last_checkpoint(tmp_path, capsys):
    """finetune --checkpoint RUN_DIR, or resume_path: RUN_DIR in the config, start from the run's
    checkpoints/last.pt, and the prepared config records that file (the directory's last.pt moves
    on when the run continues); a directory without a checkpoint is one line."""
    from moepot import build_model
    from moepot.cli import build_parser
    from moepot.train.checkpoint import CheckpointManager
    from moepot.train.cli import prepare_configs

    run = tmp_path / "runs" / "pre"
    model = build_model("moepot", img_size=16, patch_size=4, embed_dim=16, depth=1, n_blocks=2, modes=3)
    CheckpointManager(run).save({"model": model.state_dict(), "model_config": model.config.to_dict(), "step": 2},
                                step=2)  # fmt: skip
    config = tmp_path / "ft.yaml"
    config.write_text("model: moepot\nres: 16\nT_in: 4\ntrain_paths: [decay_a]\n")
    parser = build_parser()
    for argv in (["finetune", "--config", str(config), "--checkpoint", str(run)],
                 ["finetune", "--config", str(config), "--set", f"resume_path={run}"],
                 ["pretrain", "--config", str(config), "--set", f"resume_path={run}"]):  # fmt: skip
        args = parser.parse_args(argv)
        (prepared,) = prepare_configs(args, argv[0])
        assert prepared.resume_path == str(run / "checkpoints" / "last.pt"), argv

    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    assert main(["finetune", "--config", str(config), "--checkpoint", str(empty), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory with a checkpoint" in err


def test_evaluate_save_rollouts_round_trip(data_root, tmp_path, capsys):
    """--save-rollouts: each group's inputs are the dataset's first T_in frames (from the generator
    that wrote the files), the stored prediction's first bundle is the model's one-step prediction
    on those inputs, the metrics and settings are attributes, and the command says where it wrote."""
    import h5py
    import numpy as np
    from tiny_data import decay_trajectories

    from moepot import build_model
    from moepot.eval.rollout import predict
    from moepot.models.registry import save_pretrained
    from moepot.train.loop import load_model_for_eval

    torch.manual_seed(0)
    export = save_pretrained(build_model("moepot", img_size=16, patch_size=4, in_channels=2, out_channels=2,
                                         in_timesteps=4, embed_dim=16, depth=1, n_blocks=2, modes=3,
                                         out_layer_dim=8), tmp_path / "m.safetensors")  # fmt: skip
    saved = tmp_path / "out" / "rollouts.hdf5"
    common = ["evaluate", "--checkpoint", str(export), "--data", "decay_a", "decay_b", "--data-root",
              str(data_root), "--n-test", "3", "--save-rollouts", str(saved)]
    assert main([*common, "--json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)  # stdout stays pure JSON; the path goes to stderr
    assert f"rollouts: {saved}" in captured.err
    assert main(common) == 0
    assert f"rollouts: {saved}" in capsys.readouterr().out

    model = load_model_for_eval(export)
    # the files of write_decay_mixture: (name, channels, rate, seed); test split seeds + 1000
    truth = {"decay_a": decay_trajectories(4, 16, 8, 1, 0.8, 1 + 1000),
             "decay_b": decay_trajectories(4, 16, 8, 2, 0.95, 2 + 1000)}
    with h5py.File(saved, "r") as handle:
        assert handle.attrs["t_in"] == 4 and handle.attrs["res"] == 16 and handle.attrs["n_test"] == 3
        assert handle.attrs["checkpoint"] == str(export)
        for name, trajectories in truth.items():
            group = handle[name]
            channels = trajectories.shape[-1]
            inputs = group["input"][:]
            assert inputs.shape == (3, 16, 16, 4, 2)
            np.testing.assert_allclose(inputs[..., :channels], trajectories[:3, :, :, :4], rtol=1e-6)
            with torch.no_grad(), model.inference_temperature():
                one_step = predict(model, torch.from_numpy(inputs)).numpy()
            np.testing.assert_allclose(group["pred"][:, :, :, :1], one_step, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(group["target"][:][..., :channels], trajectories[:3, :, :, 4:7], rtol=1e-6)
            assert group.attrs["dataset"] == name and group.attrs["n_trajectories"] == 3
            for metric, value in results[name].items():
                assert group.attrs[metric] == pytest.approx(value)


def test_a_presets_bad_dataset_id_names_the_preset_file_as_its_other_errors_do(capsys):
    from moepot.train.config import resolve_config_path

    preset = resolve_config_path("tiny_cpu_moepot")
    for bad in ("lr=abc", "train_paths=[swe_pdbb]"):
        assert main(["pretrain", "--config", "tiny_cpu_moepot", "--set", bad, "--dry-run"]) == 2
        assert capsys.readouterr().err.startswith(f"moepot: error: {preset}: --set ")


def test_evaluate_options_and_defaults_reach_evaluate_model(monkeypatch, tmp_path, capsys):
    """--teacher-forced is passed on, and the batch size defaults to 8 (--help, docs/training.md)."""
    import moepot.eval.evaluate
    import moepot.train.loop

    calls = []
    monkeypatch.setattr(moepot.train.loop, "load_model_for_eval", lambda checkpoint, device=None: object())
    monkeypatch.setattr(moepot.eval.evaluate, "evaluate_model",
                        lambda model, data, **kwargs: calls.append(kwargs) or {})
    checkpoint = str(tmp_path / "m.pt")
    assert main(["evaluate", "--checkpoint", checkpoint, "--data", "decay_a", "--json"]) == 0
    assert main(["evaluate", "--checkpoint", checkpoint, "--data", "decay_a", "--teacher-forced",
                 "--batch-size", "3", "--n-test", "5", "--res", "16", "--json"]) == 0
    capsys.readouterr()
    assert (calls[0]["batch_size"], calls[0]["teacher_forced"], calls[0]["n_test"], calls[0]["res"]) == (8, False, None, None)
    assert (calls[1]["batch_size"], calls[1]["teacher_forced"], calls[1]["n_test"], calls[1]["res"]) == (3, True, 5, 16)


def test_max_minutes_reaches_the_training_loop(data_root, tmp_path, monkeypatch):
    import types

    import moepot.train.loop

    seen = []

    def fake_train(config, **kwargs):
        seen.append(kwargs)
        return types.SimpleNamespace(run_dir=config.run_dir, step=0, checkpoint=None)

    monkeypatch.setattr(moepot.train.loop, "train", fake_train)
    config = tmp_path / "c.yaml"
    config.write_text("train_paths: [decay_a]\n")
    assert main(["pretrain", "--config", str(config), "--data-root", str(data_root), "--run-dir",
                 str(tmp_path / "run"), "--max-minutes", "0.5"]) == 0
    assert seen[0]["max_minutes"] == 0.5 and seen[0]["resume"] is None


def test_finetune_dry_run_names_the_pretrained_checkpoint(tmp_path, data_root, capsys):
    """--dry-run listed the tasks and run directories but not the checkpoint each task starts from."""
    from moepot import build_model
    from moepot.models.registry import save_pretrained

    pre = save_pretrained(build_model("moepot", img_size=16, patch_size=4, embed_dim=16, depth=1, n_blocks=2,
                                      modes=3), tmp_path / "pre.safetensors")  # fmt: skip
    config = tmp_path / "ft.yaml"
    config.write_text("model: moepot\nres: 16\nT_in: 4\ntrain_paths: [decay_a]\n")
    assert main(["finetune", "--config", str(config), "--checkpoint", str(pre), "--dry-run",
                 "--data-root", str(data_root)]) == 0  # fmt: skip
    assert f"  fine-tunes: {pre}" in capsys.readouterr().out.splitlines()
