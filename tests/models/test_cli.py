"""``moepot info`` on a preset and on a checkpoint."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from moepot.cli import main


def test_info_preset_json(capsys):
    assert main(["info", "moepot-s", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert round(info["total_params"] / 1e6, 1) == 166.3
    assert round(info["activated_params"] / 1e6, 1) == 90.8
    assert info["config"]["embed_dim"] == 1024


def test_info_text(capsys):
    assert main(["info", "dpot-ti"]) == 0
    out = capsys.readouterr().out
    assert "total parameters" in out and "dpot-ti" in out


def test_info_checkpoint_counts_the_file_parameters(capsys, fixtures_dir):
    path = fixtures_dir / "moepot_ref_a.pth"
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(path, weights_only=True)["model"]
    params = {k: v for k, v in state.items() if not any(s in k for s in ("running_", "num_batches"))}
    assert info["total_params"] == sum(v.numel() for v in params.values())
    expert = sum(v.numel() for k, v in params.items() if k.startswith("blocks.0.MoE.experts.0."))
    depth = info["config"]["depth"]
    assert info["activated_params"] == info["total_params"] - depth * 12 * expert


@pytest.mark.parametrize("arch", ["moepot", "dpot"])
def test_info_on_an_official_checkpoint_names_its_datasets(arch, capsys, fixtures_dir):
    """The file's args.train_paths (the order of the class logits) were read but never shown."""
    path = fixtures_dir / f"{arch}_ref_a.pth"
    with torch.serialization.safe_globals([argparse.Namespace]):
        args = torch.load(path, weights_only=True)["args"]
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["official_args"] == {"train_paths": list(args.train_paths), "test_paths": list(args.test_paths)}
    assert len(args.train_paths) == info["config"]["n_cls"]
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"  trained on: {', '.join(args.train_paths)} (the order of the class logits)" in lines
    assert f"  tested on: {', '.join(args.test_paths)}" in lines


def test_info_unknown_name_is_a_one_line_error(capsys):
    assert main(["info", "moepot-xxl"]) == 2
    assert "moepot-ti" in capsys.readouterr().err


def test_info_on_our_safetensors_checkpoint(capsys, tmp_path):
    from moepot import build_model
    from moepot.models.registry import save_pretrained

    model = build_model("moepot", img_size=16, patch_size=4, embed_dim=16, depth=1, n_blocks=2, modes=2)
    path = save_pretrained(model, tmp_path / "tiny.safetensors")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_params"] == sum(p.numel() for p in model.parameters())
    assert info["config"] == model.config.to_dict()
    assert "training" not in info  # an export, not a training checkpoint


def test_info_on_the_largest_preset_stays_light():
    """``moepot info moepot-m`` counts on the meta device and never imports torch._dynamo (whose
    import alone takes seconds): checked in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys; from moepot.cli import main; main(['info', 'moepot-m', '--json']); "
            "print('torch._dynamo' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert '"total_params": 489635501' in out.stdout
    assert out.stderr.strip().splitlines()[-1] == "False"


def test_info_text_shows_a_small_models_size_in_thousands(tmp_path, capsys):
    """A 0.05M-parameter model printed as "(0.0M)" hid its size: the short form keeps 3 digits."""
    from moepot import build_model
    from moepot.models.registry import save_pretrained

    model = build_model("dpot", img_size=16, patch_size=4, in_channels=1, out_channels=1, in_timesteps=4,
                        embed_dim=16, depth=1, n_blocks=2, modes=3, out_layer_dim=8)  # fmt: skip
    n = sum(p.numel() for p in model.parameters())
    assert 1_000 <= n < 1_000_000
    path = save_pretrained(model, tmp_path / "small.safetensors")
    assert main(["info", str(path)]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("total parameters"))
    assert line.endswith(f"{n:,} ({n / 1000:.1f}k)")
    assert main(["info", "moepot-ti"]) == 0  # millions keep the papers' one-decimal M (README table)
    assert "(30.2M)" in capsys.readouterr().out


def test_info_on_a_run_directory_reads_its_last_checkpoint(tmp_path, capsys):
    """A run directory stands for its last checkpoint (checkpoints/last.pt, what --resume reads):
    of two saves, step 5's. The output names that file, the step, epoch and training datasets."""
    from moepot import build_model
    from moepot.train.checkpoint import CheckpointManager

    run = tmp_path / "runs" / "demo"
    manager = CheckpointManager(run)
    for step, width in ((3, 16), (5, 32)):  # the later checkpoint holds a wider model
        model = build_model("moepot", img_size=16, patch_size=4, embed_dim=width, depth=1, n_blocks=2, modes=2)
        manager.save({"model": model.state_dict(), "model_config": model.config.to_dict(), "step": step,
                      "epoch": step // 2, "complete": step == 5,
                      "config": {"train_paths": ["swe_pdb", "dr_pdb"], "test_paths": ["swe_pdb"]}}, step=step)
    last = run / "checkpoints" / "last.pt"
    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"] == str(last) and info["run_dir"] == str(run)
    assert info["total_params"] == sum(p.numel() for p in model.parameters())  # step 5's model
    assert info["config"]["embed_dim"] == 32
    assert info["training"] == {"step": 5, "epoch": 2, "complete": True, "train_paths": ["swe_pdb", "dr_pdb"],
                                "test_paths": ["swe_pdb"]}

    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {last} (the last checkpoint of run directory {run})" in out
    assert "training checkpoint: step 5, epoch 2, finished" in out and "trained on: swe_pdb, dr_pdb" in out
    # the step file itself, given directly, shows its own step
    assert main(["info", str(manager.step_path(3)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training"]["step"] == 3


def test_load_pretrained_takes_a_run_directory_like_the_commands(tmp_path):
    """moepot.load_pretrained(run_dir) said 'is a directory; give a checkpoint file' while every
    command takes a run directory for its checkpoints/last.pt."""
    from moepot import build_model, load_pretrained
    from moepot.train.checkpoint import CheckpointManager

    run = tmp_path / "run"
    model = build_model("dpot", img_size=16, patch_size=4, embed_dim=16, depth=1, n_blocks=2, modes=2)
    CheckpointManager(run).save({"model": model.state_dict(), "model_config": model.config.to_dict()}, step=1)
    loaded = load_pretrained(run)
    x = torch.randn(1, 16, 16, model.config.in_timesteps, model.config.in_channels)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).pred, model.eval()(x).pred, rtol=0, atol=0)
    from moepot.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"not a run directory with a checkpoint: .*last.pt does not exist"):
        load_pretrained(tmp_path)


def test_info_on_a_directory_without_a_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "checkpoints" / "last.pt") in err and "Traceback" not in err


def test_a_preset_name_wins_over_a_directory_of_that_name(tmp_path, monkeypatch, capsys):
    """``moepot info fno`` beside a folder called fno (data, outputs) still describes the preset;
    a directory is a run directory only when no preset has its name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fno").mkdir()
    (tmp_path / "moepot-ti").mkdir()
    for name in ("fno", "moepot-ti"):
        assert main(["info", name, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["name"] == name and "checkpoint" not in info and "run_dir" not in info


@pytest.mark.parametrize(("n", "text"), [(999, "999"), (1_000, "1.0k"), (999_949, "999.9k"), (999_950, "1.0M"),
                                         (999_949_999, "999.9M"), (999_950_000, "1.00B"), (1_024_000_000, "1.02B")])
def test_short_count_picks_the_unit_after_rounding(n, text):
    """999,960 parameters are "1.0M", not "1000.0k" (the unit is chosen on the rounded number)."""
    from moepot.models.cli import short_count

    assert short_count(n) == text
