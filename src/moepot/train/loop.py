"""The training loop: pre-training and fine-tuning, one process or N under torchrun.

Read top to bottom, :func:`train` does: join the process group -> pick the run directory and
lock it -> build the data (mixture sampler split across ranks) -> build the model (optionally
loading a pre-trained checkpoint, freezing the router for fine-tuning) -> optimizer and
schedule -> resume if asked -> loop over batches:

    for each target bundle of the sample (T_ar / T_bundle autoregressive steps):
        x <- x + noise_scale * ||x|| * N(0, 1)           (per sample and channel)
        pred, cls, aux <- model(x)
        loss += sum over the batch of relative_l2(pred, y_bundle, mask)
        x <- window slid by the prediction                (gradients flow through)
    total = loss + moe_loss_weight * sum(aux) + n_cls_loss_weight * cross_entropy
    backward, clip, (skip the step if anything is not finite), step, schedule step

-> evaluate every ``eval_every_epochs`` and at the end -> checkpoint every
``checkpoint_every_steps`` and at the end.

Distributed: ``batch_size`` is per process; each rank's loss is multiplied by the world size so
that DDP's gradient average equals the gradient of the sum over the global batch, i.e. N
processes with batch b train exactly like one process with batch N*b (up to the couplings
inside a batch that stay per rank, as in the original: the router's BatchNorm statistics and
the balance loss).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moepot.errors import CheckpointError, ConfigError, MoepotError
from moepot.eval.metrics import relative_l2
from moepot.eval.rollout import slide_window
from moepot.models.base import ModelOutput
from moepot.train import distributed as dist_utils
from moepot.train.checkpoint import (
    CheckpointManager,
    RunLock,
    capture_rng,
    load_checkpoint,
    remove_partial_writes,
    restore_rng,
)
from moepot.train.config import MODEL_FIELD_KEYS, TIME_PLACEHOLDER, TrainConfig
from moepot.train.logger import RunLogger
from moepot.train.optim import build_optimizer
from moepot.train.schedules import build_scheduler, scale_schedule

log = logging.getLogger("moepot.train")


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    step: int  # optimizer steps taken
    epoch: int  # epochs completed
    metrics: dict[str, dict[str, float]]  # the last evaluation
    losses: list[float] = field(default_factory=list)  # per optimizer step, mean per sample and step
    best_metric: float = math.inf  # mean rel_l2_rollout over the test datasets, lowest seen
    checkpoint: Path | None = None  # the last checkpoint written
    stopped_early: bool = False  # the wall-clock budget ran out
    skipped_steps: int = 0  # batches skipped for a non-finite loss or gradient


class _SkipFirst(torch.utils.data.Sampler):
    """Yield a sampler's indices after dropping the first ``skip`` (resume mid-epoch)."""

    def __init__(self, sampler: Any, skip: int = 0) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def train(
    config: TrainConfig,
    *,
    run_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    finetune_from: str | os.PathLike | None = None,
    device: str | None = None,
    max_minutes: float | None = None,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Run one pre-training or fine-tuning job described by ``config``.

    Args:
        config: the validated run configuration.
        run_dir: where logs and checkpoints go (default ``config.run_dir`` or
            ``runs/<name>-<time>``).
        resume: ``"auto"`` (continue from ``<run_dir>/checkpoints/last.pt`` if it exists) or a
            checkpoint path / run directory; the run continues exactly where it stopped.
        finetune_from: a pre-trained checkpoint (official ``.pth`` or ours): load
            ``config.load_components``, freeze the router and feature extractor. Without it,
            ``config.resume_path`` is loaded whole (the original's warm start).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a GPU index (default: the local GPU
            under torchrun, else cuda:0 / cpu).
        max_minutes: wall-clock budget; when spent the run evaluates, checkpoints and returns
            with ``stopped_early``.
        stop_after_steps: return right after this optimizer step without a final checkpoint or
            evaluation (simulates an interruption; the schedule is unchanged).
        progress: show a tqdm bar on rank 0.
    """
    started = time.monotonic()
    info = dist_utils.init_distributed(device)
    if config.amp == "bf16" and info.device.type == "cpu":
        log.info("bf16 autocast on CPU: slow, meant for testing")

    # ---------------------------------------------------------------- run directory
    stamp = dist_utils.broadcast_object(time.strftime("%Y%m%d-%H%M%S"), info)
    # a {time} in the directory becomes this start time (the same on every process)
    if run_dir is not None:
        run_path = Path(str(run_dir).replace(TIME_PLACEHOLDER, str(stamp)))
    else:
        run_path = config.default_run_dir(str(stamp))
    if config.run_dir is not None and TIME_PLACEHOLDER in config.run_dir:  # config.yaml names the real directory
        config = config.model_copy(update={"run_dir": str(run_path)})
    lock = RunLock(run_path)
    refused = None
    if info.is_main:
        try:
            lock.acquire()
        except CheckpointError as exc:
            refused = str(exc)
    refused = dist_utils.broadcast_object(refused, info)  # every rank stops, not rank 0 alone
    if refused:
        raise CheckpointError(refused)
    try:
        with contextlib.ExitStack() as cleanup:  # closes the progress bar first, so an error starts a new line
            return _train_locked(
                config, info, run_path, resume, finetune_from, max_minutes, stop_after_steps, progress, started,
                cleanup,
            )
    finally:
        lock.release()


def _forward(model: nn.Module, x: torch.Tensor, config: TrainConfig) -> ModelOutput:
    """``model(x)``; a model that ``torch.compile`` cannot compile is a :class:`ConfigError`
    naming the option (not a compiler traceback)."""
    if not config.compile:  # (and torch._dynamo, 1.4 s to import, stays out of eager runs)
        return model(x)
    try:
        return model(x)
    except torch._dynamo.exc.BackendCompilerFailed as exc:
        cause = getattr(exc, "inner_exception", None) or exc  # what the compiler backend raised
        first_line = (str(cause).strip().splitlines() or [""])[0][:300]
        raise ConfigError(
            f"compile: true (compile_mode {config.compile_mode!r}, amp {config.amp!r}): torch.compile could not "
            f"compile the model on {x.device.type} ({type(cause).__name__}: {first_line}); train with "
            "compile: false (docs/training.md, 'Flags', lists the known cases)"
        ) from exc


def _train_locked(
    config: TrainConfig,
    info: dist_utils.DistInfo,
    run_path: Path,
    resume: str | os.PathLike | None,
    finetune_from: str | os.PathLike | None,
    max_minutes: float | None,
    stop_after_steps: int | None,
    progress: bool,
    started: float,
    cleanup: contextlib.ExitStack,
) -> RunResult:
    checkpoints = CheckpointManager(run_path, keep_last=config.keep_last)
    resume_file = checkpoints.resolve_resume(resume)
    own_resume = resume_file is not None and resume_file.resolve().parent == checkpoints.dir.resolve()
    if not own_resume and (checkpoints.last.is_file() or checkpoints.step_files()):
        raise CheckpointError(
            f"{run_path} holds the checkpoints of an earlier run ({checkpoints.dir}); continue it with "
            "--resume auto, or start this run in another --run-dir (nothing was written)"
        )
    logger = RunLogger(run_path, enabled=info.is_main, tensorboard=config.use_writer)
    cleanup.callback(logger.close)  # (also when the run stops with an error)
    if info.is_main:  # we hold the lock: temporary files here belong to a killed run
        remove_partial_writes(run_path)
        remove_partial_writes(checkpoints.dir)
    log.info("run directory %s (%d process%s on %s)", run_path, info.world_size,
             "es" if info.distributed else "", info.device)

    # ---------------------------------------------------------------- data
    from moepot.data.catalog import load_catalog
    from moepot.data.mixture import MixtureDataset, WeightedMixtureSampler

    catalog = load_catalog(config.catalog, config.data_root)
    train_names = list(config.train_paths)
    n_channels = config.n_channels or max(catalog[name].n_channels for name in train_names)
    train_set = MixtureDataset(
        train_names,
        split="train",
        res=config.res,
        t_in=config.T_in,
        t_ar=config.T_ar,
        catalog=catalog,
        data_root=config.data_root,
        n_channels=n_channels,
        n_samples=config.ntrain_list,
        seed=config.seed,
        n_samples_option="ntrain_list",
    )
    sampler = WeightedMixtureSampler(
        train_set,
        weights=config.data_weights,
        num_replicas=info.world_size,
        rank=info.rank,
        seed=config.seed,
        shuffle=True,
    )
    from moepot.eval.evaluate import open_test_set

    for name in config.test_paths or train_names:  # found now, not at the first evaluation
        open_test_set(name, res=config.res, t_in=config.T_in, catalog=catalog, data_root=config.data_root,
                      n_channels=n_channels, n_test=config.n_test)  # fmt: skip
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"batch_size = {config.batch_size} is larger than the {len(sampler)} training samples per "
            f"process ({len(train_set)} in all over {info.world_size} process(es)); lower batch_size"
        )
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    # ---------------------------------------------------------------- model
    import moepot

    torch.manual_seed(config.seed)
    overrides = config.model_config_overrides()
    if finetune_from is not None:  # the trunk the config leaves open is the checkpoint's
        filled = {k: v for k, v in _pretrained_architecture(finetune_from, config.model_preset).items()
                  if k not in overrides}  # fmt: skip
        overrides.update(filled)
        # ... and config.yaml (and the checkpoints' config) say so, with the checkpoint fine-tuned
        # from (config.yaml reruns it with `moepot finetune --config`)
        config = config.model_copy(update={**{MODEL_FIELD_KEYS[k]: v for k, v in filled.items() if k in MODEL_FIELD_KEYS},
                                           "resume_path": str(finetune_from)})
    overrides.setdefault("in_channels", n_channels)
    overrides.setdefault("out_channels", n_channels)
    overrides.setdefault("n_cls", len(train_names))
    model = moepot.build_model(config.model_preset, **overrides)
    finetuning = finetune_from is not None
    if finetuning:
        from moepot.train.finetune import load_components, prepare_finetune, read_source_state

        load_components(model, read_source_state(finetune_from), config.load_components)
        prepare_finetune(model)
    elif config.resume_path:
        from moepot.train.finetune import load_components, read_source_state

        load_components(model, read_source_state(config.resume_path), ["all"])
    model.to(info.device)
    raw_model = model  # unwrapped: saved, and used for MoE controls and evaluation

    optimizer = build_optimizer(
        raw_model.parameters(),
        name=config.opt,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        weight_decay=config.effective_weight_decay,
    )
    scheduler = build_scheduler(
        optimizer,
        method=config.lr_method,
        lr=config.lr,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs,
        epochs=config.epochs,
        step_size=config.step_size,
        step_gamma=config.step_gamma,
    )
    noise = torch.Generator(device=info.device)
    noise.manual_seed(config.seed * 1000 + info.rank)

    # ---------------------------------------------------------------- resume
    step, epoch, batch_in_epoch, best_metric = 0, 0, 0, math.inf
    resumed_complete = False  # resumed from this run directory's own final checkpoint
    if resume_file is not None:
        state = load_checkpoint(resume_file, map_location=info.device)
        _check_resumable(state, raw_model, config, resume_file, scheduler)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], noise)
        per_rank = state.get("noise_per_rank")  # each rank's noise stream (rank 0's is in "rng")
        if per_rank is not None and len(per_rank) == info.world_size:
            noise.set_state(per_rank[info.rank].cpu())  # (map_location may have moved it to the GPU)
        elif per_rank is not None:
            log.warning("resuming a run of %d processes on %d: the input-noise streams continue from "
                        "rank 0's, so the run is not an exact continuation", len(per_rank), info.world_size)
        step, epoch = state["step"], state["epoch"]
        batch_in_epoch, best_metric = state["batch_in_epoch"], state["best_metric"]
        logger.resume_from(step)
        # a run killed between an evaluation and its checkpoint logged a record the resumed
        # run will log again: keep only the records the checkpoint had seen
        logger.records = logger.records[: state.get("evaluations", len(logger.records))]
        # (a finished run's checkpoint resumed into another directory is evaluated there again)
        resumed_complete = own_resume and bool(state.get("complete", False))
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_file, step, epoch, batch_in_epoch)
    logger.save_config(config.to_yaml_dict())
    resumed_step = step

    model = dist_utils.wrap_model(raw_model, info)
    if config.compile:
        model = torch.compile(model, mode=None if config.compile_mode == "default" else config.compile_mode)
    autocast = (
        torch.autocast(device_type=info.device.type, dtype=torch.bfloat16)
        if config.amp == "bf16"
        else contextlib.nullcontext()
    )

    def snapshot(complete: bool, noise_per_rank: list[torch.Tensor]) -> dict[str, Any]:
        return {
            "model": raw_model.state_dict(),
            "model_config": _model_config_dict(raw_model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng(noise),
            "noise_per_rank": noise_per_rank,
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "best_metric": best_metric,
            "config": config.to_yaml_dict(),
            "finetune": finetuning,
            "evaluations": len(logger.records),  # metrics.jsonl records up to this checkpoint
            "complete": complete,  # the run's final checkpoint (evaluated): resuming it has nothing to do
        }

    def save(is_best: bool = False, complete: bool = False) -> Path:
        """Rank 0 writes; every rank gets the path (for a later restore)."""
        noise_per_rank = dist_utils.all_gather_object(noise.get_state(), info)
        if info.is_main:
            checkpoints.save(snapshot(complete, noise_per_rank), step=step, is_best=is_best)
        dist_utils.barrier(info)
        return checkpoints.step_path(step)

    def evaluate() -> dict[str, dict[str, float]]:
        from moepot.eval.evaluate import evaluate_model

        dist_utils.broadcast_buffers(raw_model, info)  # every rank evaluates the checkpoint's model
        results = evaluate_model(
            raw_model,
            list(config.test_paths or train_names),
            res=config.res,
            data_root=config.data_root,
            catalog=catalog,
            n_test=config.n_test,
            batch_size=config.batch_size,
            n_channels=n_channels,
            dist_info=info,
        )
        model.train()
        return results

    # ---------------------------------------------------------------- loop
    mask_channels = config.mask_padded_channels
    n_bundles = config.T_ar // config.T_bundle
    result = RunResult(run_dir=run_path, step=step, epoch=epoch, metrics={}, best_metric=best_metric)
    last_good: Path | None = resume_file
    bad_streak = 0
    budget_s = None if max_minutes is None else max_minutes * 60.0
    bar = cleanup.enter_context(_progress_bar(total_steps, step, enabled=progress and info.is_main))
    model.train()
    if step >= total_steps and batch_in_epoch >= steps_per_epoch:
        # resumed from the last step's checkpoint, written before the epoch-end bookkeeping that
        # an uninterrupted run does next (the final evaluation and checkpoint follow below)
        epoch, batch_in_epoch = epoch + 1, 0
    done = step >= total_steps or epoch >= config.epochs
    # One loader for the whole run: with workers, they persist across epochs and keep their
    # open HDF5 handles (the dataset's epoch lives in shared memory, so they see set_epoch).
    epoch_sampler = _SkipFirst(sampler)
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=epoch_sampler,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
        drop_last=True,
    )
    last_step_end = time.perf_counter()  # throughput: wall time between steps, data loading included
    while not done:
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        epoch_sampler.skip = batch_in_epoch * config.batch_size  # > 0 only when resuming mid-epoch
        for batch in _batches(loader):
            x, y, mask, dataset_index = (t.to(info.device) for t in batch[:4])
            # buffers (BatchNorm statistics, MoE temperatures) change in the forward: kept to undo a skipped step
            buffers_before = {name: b.detach().clone() for name, b in raw_model.named_buffers()}
            train_mask = mask.amax(dim=(1, 2), keepdim=True) if mask_channels else None  # [B, 1, 1, 1, C]
            if config.compile:  # a new iteration: CUDA graphs (reduce-overhead) may reuse the last one's outputs
                torch.compiler.cudagraph_mark_step_begin()

            # ---- forward: autoregressive bundles, gradients through the rollout
            sample_loss = x.new_zeros(x.shape[0])  # [B], summed over the bundles
            aux_sum = x.new_zeros(())
            cls_sum = x.new_zeros(())
            with autocast:
                for t in range(0, config.T_ar, config.T_bundle):
                    target = y[..., t : t + config.T_bundle, :]
                    if config.noise_scale > 0:
                        scale = torch.linalg.vector_norm(x, dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1, C]
                        x = x + config.noise_scale * scale * torch.randn(
                            x.shape, generator=noise, device=x.device, dtype=x.dtype
                        )
                    out = _forward(model, x, config)
                    sample_loss = sample_loss + relative_l2(out.pred.float(), target.float(), train_mask)
                    aux_sum = aux_sum + out.aux_loss.float()
                    if config.n_cls_loss_weight > 0:
                        cls_sum = cls_sum + F.cross_entropy(
                            out.cls_logits.float(), dataset_index.reshape(-1).long(), reduction="sum"
                        )
                    x = slide_window(x, out.pred.to(x.dtype))
            loss_sum = sample_loss.sum()
            total = loss_sum + config.moe_loss_weight * aux_sum + config.n_cls_loss_weight * cls_sum

            optimizer.zero_grad(set_to_none=True)
            (total * info.world_size).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
            batch_in_epoch += 1

            # ---- a non-finite loss or gradient skips the step (decided the same on every rank)
            finite = torch.stack([total.detach().float(), grad_norm.float()]).isfinite().all().float()
            if dist_utils.all_reduce_sum(finite, info).item() < info.world_size:
                optimizer.zero_grad(set_to_none=True)
                _restore_buffers(raw_model, buffers_before)  # a NaN forward poisons BatchNorm statistics
                bad_streak += 1
                result.skipped_steps += 1
                log.warning(
                    "step %d (epoch %d, batch %d): %s; step skipped, weights and buffers unchanged "
                    "(%d non-finite step(s) in a row, restore after nan_tolerance = %d)",
                    step + 1, epoch, batch_in_epoch, _what_is_not_finite(total, grad_norm, info),
                    bad_streak, config.nan_tolerance,
                )
                if bad_streak >= config.nan_tolerance:
                    _recover(raw_model, optimizer, scheduler, last_good, config.nan_lr_factor, info,
                             reason=f"{bad_streak} non-finite steps in a row at step {step + 1}")
                    bad_streak = 0
                continue
            bad_streak = 0
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (logged below)
            optimizer.step()
            scheduler.step()
            if config.temperature_decay == "step" and hasattr(raw_model, "step_temperature"):
                raw_model.step_temperature()
            step += 1

            # ---- bookkeeping (rank 0 writes; the loss is averaged over ranks)
            per_sample = dist_utils.all_reduce_mean(loss_sum.detach() / (x.shape[0] * n_bundles), info).item()
            result.losses.append(per_sample)
            now = time.perf_counter()
            samples_per_s = x.shape[0] * info.world_size / max(now - last_step_end, 1e-9)  # all ranks
            last_step_end = now
            if info.is_main:
                logger.scalars({"train/loss": per_sample, "train/lr": lr, "train/samples_per_s": samples_per_s}, step)
                for d in dataset_index.reshape(-1).unique().tolist():  # this rank's samples
                    chosen = sample_loss.detach()[dataset_index.reshape(-1) == d] / n_bundles
                    logger.scalar(f"train/loss/{train_names[d]}", chosen.mean().item(), step)
                _log_moe(logger, raw_model, step)
                bar.update(1)
                bar.set_postfix(loss=f"{per_sample:.4g}", lr=f"{lr:.2e}")
            if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                last_good = result.checkpoint = save()
                last_step_end = time.perf_counter()
            if stop_after_steps is not None and step >= stop_after_steps:
                bar.close()
                logger.close()
                result.step, result.epoch = step, epoch
                return result
            over_budget = budget_s is not None and time.monotonic() - started > budget_s
            if dist_utils.all_reduce_sum(torch.tensor(float(over_budget)), info).item() > 0:
                result.stopped_early = True
                log.info("wall-clock budget of %.1f min spent at step %d; stopping", max_minutes, step)
            if step >= total_steps or result.stopped_early:
                done = True
                break
        if batch_in_epoch >= steps_per_epoch:  # the epoch ran to its end
            epoch += 1
            batch_in_epoch = 0
            if epoch >= config.epochs:
                done = True
            elif not done and epoch % config.eval_every_epochs == 0:
                best_metric = _eval_and_save(evaluate, logger, result, step, epoch, best_metric, save)
                last_good = result.checkpoint or last_good
                last_step_end = time.perf_counter()

    # ---------------------------------------------------------------- end: evaluate and checkpoint
    bar.close()
    if resumed_complete and step == resumed_step:  # its final evaluation and checkpoint exist
        log.info("%s was already complete at step %d: nothing to do", run_path, step)
        result.checkpoint = resume_file
        result.metrics = logger.records[-1]["metrics"] if logger.records else {}
    else:
        finished = step >= total_steps or epoch >= config.epochs  # (a budget stop may fall on the last step)
        best_metric = _eval_and_save(evaluate, logger, result, step, epoch, best_metric,
                                     lambda is_best: save(is_best, complete=finished))  # fmt: skip
    logger.close()
    result.step, result.epoch = step, epoch
    dist_utils.barrier(info)
    return result


# Architecture keys a fine-tuning config may leave unset: the pre-trained checkpoint's are used
PRETRAINED_ARCHITECTURE = ("embed_dim", "depth", "n_blocks", "mlp_ratio", "modes", "patch_size", "out_layer_dim",
                           "act", "time_agg", "normalize", "num_experts", "num_shared_experts", "top_k")  # fmt: skip


def _pretrained_architecture(path: str | os.PathLike, model: str) -> dict[str, Any]:
    """The :data:`PRETRAINED_ARCHITECTURE` values of the checkpoint at ``path``, for a config
    whose ``model`` is a bare family name (``moepot``, ``dpot``) of the checkpoint's family; a
    named preset (``moepot-s``) keeps its own sizes, and another family takes nothing."""
    from moepot.models.config import FAMILIES
    from moepot.models.registry import checkpoint_config

    pretrained = checkpoint_config(path)
    if model.lower() not in FAMILIES or pretrained.family != model.lower():
        log.info("fine-tuning: model %r keeps its own architecture (checkpoint %s is a %s)", model, path,
                 pretrained.name)
        return {}
    stored = pretrained.to_dict()
    return {key: stored[key] for key in PRETRAINED_ARCHITECTURE if key in stored}


def _check_resumable(state: dict[str, Any], model: nn.Module, config: TrainConfig, path: Path, scheduler) -> None:
    """Raise a :class:`CheckpointError` when ``state`` cannot continue under ``config``: another
    architecture (the mismatched keys named), another optimizer, or a one-cycle schedule of
    another length (its state fixes the length; other schedules may be extended)."""
    from moepot.models.checkpoints import describe_mismatch

    mismatch = describe_mismatch(model.state_dict(), state["model"])
    if mismatch:
        raise CheckpointError(
            f"--resume {path}: the checkpoint's model differs from the one this config builds ({mismatch}); "
            "resume with the config the run was started with (the checkpoint holds it under 'config')"
        )
    saved_opt = state.get("config", {}).get("opt")
    if saved_opt is not None and saved_opt != config.opt:
        raise CheckpointError(
            f"--resume {path}: the run was trained with opt = {saved_opt!r}, this config says {config.opt!r}; "
            "an optimizer's state cannot continue under another optimizer"
        )
    saved_steps = state["scheduler"].get("total_steps")
    if saved_steps is not None and saved_steps != scheduler.state_dict().get("total_steps"):
        raise CheckpointError(
            f"--resume {path}: the run's {config.lr_method!r} schedule spans {saved_steps} steps, this config's "
            f"{scheduler.state_dict().get('total_steps')}; resume with the run's epochs, max_steps and "
            "batch_size (a one-cycle schedule cannot be stretched)"
        )


def _eval_and_save(evaluate, logger: RunLogger, result: RunResult, step: int, epoch: int,
                   best_metric: float, save) -> float:
    """Evaluate, log a metrics record, checkpoint (marking the best); returns the best metric."""
    metrics = evaluate()
    score = sum(v["rel_l2_rollout"] for v in metrics.values()) / max(len(metrics), 1)
    is_best = math.isfinite(score) and score < best_metric
    best_metric = score if is_best else best_metric
    logger.log_eval({"step": step, "epoch": epoch, "time": time.time(), "metrics": metrics})
    result.metrics, result.best_metric = metrics, best_metric
    path = save(is_best)
    result.checkpoint = path or result.checkpoint
    return best_metric


def _recover(model: nn.Module, optimizer, scheduler, checkpoint: Path | None, lr_factor: float,
             info: dist_utils.DistInfo, *, reason: str) -> None:
    """After too many non-finite steps: reload the last good checkpoint (model, optimizer,
    schedule) and lower the learning rate."""
    lr_before = optimizer.param_groups[0]["lr"]
    if checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, map_location=info.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log.warning("%s: restored the last good checkpoint %s (step %d)", reason, checkpoint, state["step"])
    else:
        log.warning("%s: no checkpoint to restore yet; keeping the current weights", reason)
    scale_schedule(scheduler, lr_factor)
    log.warning("learning rate lowered by x%g (now %.3e, was %.3e) for the rest of the run",
                lr_factor, optimizer.param_groups[0]["lr"], lr_before)


def _what_is_not_finite(loss: torch.Tensor, grad_norm: torch.Tensor, info: dist_utils.DistInfo) -> str:
    """Which of this rank's loss and gradient norm is NaN/Inf, for the skip warning."""
    parts = [f"{name} {value.item():.4g}" for name, value in (("loss", loss), ("gradient norm", grad_norm))
             if not torch.isfinite(value).all()]
    if not parts:
        return f"non-finite loss or gradient on another process (here: loss {loss.item():.4g})"
    return "non-finite " + " and ".join(parts)


def _restore_buffers(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Put back the buffers captured before a forward (undoing its BatchNorm/temperature updates)."""
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(saved[name])


def _batches(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The loader's batches; a :class:`MoepotError` raised in a worker process is re-raised with
    its own one-line message (the DataLoader wraps it in the worker's traceback)."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except MoepotError as exc:
            message = str(exc)
            marker = f"{type(exc).__module__}.{type(exc).__name__}: "
            if message.startswith("Caught ") and marker in message:
                raise type(exc)(message.rsplit(marker, 1)[1].strip()) from None
            raise
        yield batch


def _model_config_dict(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else {}


def _log_moe(logger: RunLogger, model: nn.Module, step: int) -> None:
    """Temperature and expert usage (fraction of routed slots per expert) per MoE layer."""
    layers = model.moe_layers() if hasattr(model, "moe_layers") else []
    for i, layer in enumerate(layers):
        temperature = getattr(layer, "temperature", None)
        if temperature is not None:
            logger.scalar(f"moe/temperature/layer{i}", float(temperature), step)
        chosen = getattr(layer, "last_topk_indices", None)
        if chosen is not None and chosen.numel():
            counts = torch.bincount(chosen.reshape(-1).cpu(), minlength=getattr(layer, "n_experts", 16)).float()
            usage = counts / counts.sum()
            entropy = -(usage[usage > 0] * usage[usage > 0].log()).sum().item()
            logger.scalar(f"moe/usage_entropy/layer{i}", entropy, step)
            logger.scalar(f"moe/max_usage/layer{i}", usage.max().item(), step)


def _progress_bar(total: int, initial: int, *, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    names: list[str],
    **kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Load a model checkpoint (ours or official) and evaluate it; ``kwargs`` go to
    :func:`moepot.eval.evaluate.evaluate_model`."""
    from moepot.eval.evaluate import evaluate_model

    model = load_model_for_eval(checkpoint)
    return evaluate_model(model, names, **kwargs)


def load_model_for_eval(checkpoint: str | os.PathLike, device: str | None = None) -> nn.Module:
    """A model in eval mode, at the inference temperature, on ``device``, from our training
    checkpoint, our export or an official file (:func:`moepot.load_pretrained` reads them all);
    a run directory stands for its last checkpoint (``checkpoints/last.pt``)."""
    import moepot

    target = dist_utils.pick_device(device)  # a bad device is reported before any loading
    return moepot.load_pretrained(checkpoint).to(target).eval()
