"""Two gloo processes train exactly like one process with the same global batch.

Each rank gets batch b, the single process 2b; the sampler deals the same shuffled epoch out
round-robin, so step s sees the same 2b samples either way, and the loss scaling makes DDP's
averaged gradient equal the single process's gradient. One spawn runs both scenarios (a dense
DPOT pre-training and a MoE-POT fine-tuning) to pay the process start-up once.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from ddp_worker import worker
from tiny_data import write_decay_mixture

from moepot.train.checkpoint import RunLock, load_checkpoint
from moepot.train.config import TrainConfig
from moepot.train.loop import train

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TINY = dict(width=16, n_layers=1, n_blocks=2, patch_size=4, res=16, modes=3, out_layer_dim=8, T_in=4,
            n_test=2, epochs=2, warmup_epochs=1, max_steps=4, noise_scale=0.0, use_writer=False,
            eval_every_epochs=5, train_paths=["decay_a", "decay_b"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{scenario: (one-process result, two-process record)}."""
    import moepot
    from moepot.models.registry import save_pretrained

    root = tmp_path_factory.mktemp("ddp")
    write_decay_mixture(root, n_train=8)
    torch.manual_seed(5)
    source = moepot.build_model("moepot-ti", img_size=16, patch_size=4, in_channels=2, out_channels=2,
                                in_timesteps=4, embed_dim=16, depth=1, n_blocks=2, modes=3, out_layer_dim=8,
                                n_cls=2)
    pretrained = str(save_pretrained(source, root / "source.safetensors"))
    scenarios = {
        "dense": ({**TINY, "model": "dpot", "data_root": str(root)}, None),
        # fine-tuning routes each sample by itself (frozen router, running BatchNorm statistics);
        # 2 samples x top-4 of 16 experts leave at least 8 experts idle on every rank
        "moe": ({**TINY, "model": "moepot", "data_root": str(root), "load_components": ["all"]}, pretrained),
    }
    jobs, singles = [], {}
    for name, (config, finetune_from) in scenarios.items():
        singles[name] = train(TrainConfig.from_dict({**config, "batch_size": 4}), run_dir=root / f"{name}-one",
                              finetune_from=finetune_from, device="cpu", progress=False)
        jobs.append({"config": {**config, "batch_size": 2}, "run_dir": str(root / f"{name}-two"),
                     "finetune_from": finetune_from, "out": str(root / f"{name}-two.pt")})
    # input noise differs per rank: an interrupted run resumed must continue every rank's stream
    noisy = {**TINY, "model": "moepot", "data_root": str(root), "batch_size": 2, "noise_scale": 0.05,
             "checkpoint_every_steps": 1}  # fmt: skip
    jobs += [
        {"config": noisy, "run_dir": str(root / "noise-whole"), "out": str(root / "noise-whole.pt")},
        {"config": noisy, "run_dir": str(root / "noise-cut"), "stop_after_steps": 2, "out": str(root / "cut.pt")},
        {"config": noisy, "run_dir": str(root / "noise-cut"), "resume": "auto", "out": str(root / "noise-resumed.pt")},
        # a run directory locked by another run: refused on every rank, and the next job still runs
        {"config": noisy, "run_dir": str(root / "locked"), "expect_error": True, "out": str(root / "locked")},
        {"buffers": str(root / "buffers")},
    ]
    with RunLock(root / "locked"):
        mp.spawn(worker, args=(2, free_port(), jobs), nprocs=2, join=True)
    outcome = {name: (singles[name], torch.load(root / f"{name}-two.pt", weights_only=True)) for name in scenarios}
    outcome["root"] = root
    return outcome


def test_an_interrupted_two_process_run_with_input_noise_resumes_exactly(runs):
    root = runs["root"]
    whole = torch.load(root / "noise-whole.pt", weights_only=True)
    resumed = torch.load(root / "noise-resumed.pt", weights_only=True)
    assert resumed["losses"] == whole["losses"][2:]
    a, b = load_checkpoint(whole["checkpoint"])["model"], load_checkpoint(resumed["checkpoint"])["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_a_run_directory_refused_on_rank_0_stops_every_rank(runs):
    root = runs["root"]
    for rank in (0, 1):
        assert "in use by another run" in torch.load(root / f"locked.{rank}", weights_only=True)


def test_broadcast_buffers_gives_every_rank_rank_0s_statistics(runs):
    root = runs["root"]
    for rank in (0, 1):
        assert torch.equal(torch.load(root / f"buffers.{rank}", weights_only=True), torch.zeros(3))


@pytest.mark.parametrize("scenario", ["dense", "moe"])
def test_two_processes_equal_one(runs, scenario):
    single, double = runs[scenario]
    assert len(single.losses) == 4
    assert double["losses"] == pytest.approx(single.losses, rel=1e-5, abs=1e-6)
    for name, values in single.metrics.items():  # evaluation is sharded over ranks and all-reduced
        assert double["metrics"][name] == pytest.approx(values, rel=1e-4)
    a = load_checkpoint(single.checkpoint)["model"]
    b = load_checkpoint(double["checkpoint"])["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
