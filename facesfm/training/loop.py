"""The training loop shared by both stages: deterministic data order, checkpoints, resume,
validation, logging, DDP.

Determinism: the sample order of epoch e is a permutation drawn from ``(seed, e)``; the
dataset's augmentation draws from ``(seed, e, sample)``; a checkpoint stores the models, the
optimiser, the RNG states and ``(step, epoch, epoch_step)``. A resumed run therefore replays
exactly the batches an uninterrupted run would have seen next and reaches the same weights.

A stage plugs in as a :class:`Task`: the trainable module (what DDP wraps; its ``forward`` is
called by ``Task.loss``), the loss of a batch and the validation metrics.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from facesfm.config import dump_yaml, to_dict
from facesfm.data.dataset import SequenceSample, collate_samples
from facesfm.errors import InputError
from facesfm.io import write_json
from facesfm.training.checkpoint import (
    TrainState,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from facesfm.training.config import TrainConfig
from facesfm.training.distributed import DistInfo, param_spread, shard, wrap_ddp
from facesfm.training.logging import MetricsLogger, plot_metrics

__all__ = [
    "Task",
    "TrainResult",
    "TrainingInterrupted",
    "epoch_order",
    "learning_rate",
    "run_training",
    "seed_everything",
]


class TrainingInterrupted(RuntimeError):
    """Raised by ``interrupt_after`` (tests simulate a killed run with it)."""


class Task(Protocol):
    stage: str
    model: torch.nn.Module

    def loss(
        self, model: torch.nn.Module, batch: SequenceSample
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def validate(
        self, model: torch.nn.Module, samples: list[SequenceSample]
    ) -> dict[str, float]: ...


@dataclass
class TrainResult:
    out: Path
    state: TrainState
    checkpoint: Path | None
    seconds: float
    train_metrics: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    resumed_from: int | None = None


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python (model initialisation draws from torch)."""
    torch.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)


def learning_rate(optim, step: int, total: int) -> float:
    """The learning rate of the optimiser step after ``step`` completed steps of ``total``
    (:attr:`OptimConfig.lr_schedule`)."""
    if optim.lr_schedule == "constant" or total <= 0:
        return float(optim.lr)
    return float(optim.lr) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The sample order of an epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0x5EED]).permutation(n).tolist()


_RESUME_FREE = {("optim", "max_steps"), ("optim", "epochs"), ("ckpt_every",), ("log_every",)}


def _config_diff(a: dict, b: dict, prefix=()) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        p = prefix + (k,)
        if p in _RESUME_FREE:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, p)
        elif va != vb:
            out.append(".".join(p))
    return out


def run_training(
    task: Task,
    cfg: TrainConfig,
    train_set,
    val_set,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    dist: DistInfo | None = None,
    interrupt_after: int | None = None,
    echo: Callable = print,
    extra: dict | None = None,
) -> TrainResult:
    """Train ``task.model`` on ``train_set`` (a :class:`facesfm.data.SequenceDataset`).

    out:             run folder: ``checkpoints/last.pt``, ``config.yaml``, ``metrics.jsonl``,
                     ``train.csv``, ``val.csv``, ``metrics.png``, ``summary.json``.
    resume:          continue from ``out/checkpoints/last.pt`` (a fresh start if absent).
    interrupt_after: raise :class:`TrainingInterrupted` right after this global step, without
                     saving (what a kill looks like to the next run).
    extra:           provenance stored in every checkpoint (e.g. the detector checkpoint).
    """
    from tqdm import tqdm

    dist = dist or DistInfo()
    out = Path(out)
    ckpt_path = out / "checkpoints" / "last.pt"
    cfg_dict = to_dict(cfg)
    model = task.model
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg.optim
    opt = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    state = TrainState()
    resumed_from = None
    if ckpt_path.is_file() and not resume:
        raise InputError(
            f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out"
        )
    if resume and not ckpt_path.is_file() and dist.is_main:
        # a restart script may always pass --resume: start, but say so
        echo(f"warning: --resume: no checkpoint at {ckpt_path}; starting a new run")
    if resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path, stage=task.stage)
        diff = _config_diff(ck["config"], cfg_dict)
        if diff:
            raise InputError(
                f"--resume: {ckpt_path} was trained with a different config ({', '.join(diff)})"
            )
        model.load_state_dict(ck["models"]["model"])
        opt.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        state = TrainState(**ck["state"])
        resumed_from = state.step
        echo(
            f"resuming {ckpt_path} at step {state.step} (epoch {state.epoch}, "
            f"batch {state.epoch_step})"
        )
    logger = MetricsLogger(out, enabled=dist.is_main)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.yaml")
        logger.truncate_after(state.step)
    ddp_model = wrap_ddp(model, dist)

    def save():
        if dist.is_main:
            save_checkpoint(
                ckpt_path,
                models={"model": model},
                optimizer=opt,
                state=state,
                config=cfg_dict,
                stage=task.stage,
                extra=extra,
            )

    n = len(train_set)
    steps_per_epoch = len(shard(list(range(n)), dist, o.batch_size))
    if steps_per_epoch == 0:
        raise InputError(
            f"the training data has {n} sample(s): fewer than batch_size "
            f"{o.batch_size} x {dist.world_size} process(es)"
        )
    total = o.epochs * steps_per_epoch
    if o.max_steps is not None:
        total = min(total, o.max_steps)
    t0 = time.perf_counter()
    last_train: dict = {}
    last_val: dict = {}
    bar = tqdm(
        total=total,
        initial=min(state.step, total),
        desc=f"train {task.stage}",
        unit="step",
        disable=not (progress and dist.is_main),
        file=sys.stderr,
    )
    try:
        while state.step < total and state.epoch < o.epochs:
            train_set.set_epoch(state.epoch)
            batches = shard(epoch_order(cfg.seed, state.epoch, n), dist, o.batch_size)
            model.train()
            while state.epoch_step < len(batches) and state.step < total:
                batch = collate_samples([train_set[i] for i in batches[state.epoch_step]])
                loss, metrics = task.loss(ddp_model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{task.stage}: non-finite loss at step {state.step + 1}: "
                        f"{ {k: float(v) for k, v in metrics.items()} }"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if o.grad_clip is not None:
                    gn = torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
                    metrics = {**metrics, "grad_norm": gn.detach()}
                lr = learning_rate(o, state.step, total)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.step()
                state.step += 1
                state.epoch_step += 1
                bar.update(1)
                if state.step % cfg.log_every == 0 or state.step == total:
                    last_train = logger.log(
                        "train", state.step, state.epoch, {"loss": loss.detach(), **metrics}
                    )
                    bar.set_postfix(loss=f"{last_train['loss']:.4g}")
                if state.step % cfg.ckpt_every == 0:
                    save()
                if interrupt_after is not None and state.step == interrupt_after:
                    raise TrainingInterrupted(f"interrupted after step {state.step}")
            if state.epoch_step >= len(batches):
                state.epoch += 1
                state.epoch_step = 0
                if val_set is not None and dist.is_main:
                    last_val = logger.log(
                        "val", state.step, state.epoch - 1, _validate(task, model, val_set, cfg)
                    )
                save()
    finally:
        bar.close()
    # the reported validation must describe the saved weights, also when max_steps stops a run
    # mid-epoch after an epoch-boundary validation
    if val_set is not None and dist.is_main and (not last_val or last_val.get("step") != state.step):
        last_val = logger.log("val", state.step, state.epoch, _validate(task, model, val_set, cfg))
    save()
    spread = param_spread(model, dist)  # collective: every rank takes part
    seconds = time.perf_counter() - t0
    if dist.is_main:
        logger.write_tables()
        plot_metrics(logger.path, out / "metrics.png")
        write_json(
            out / "summary.json",
            {
                "stage": task.stage,
                "steps": state.step,
                "epochs_done": state.epoch,
                "seconds": seconds,
                "train": last_train,
                "val": last_val,
                "checkpoint": str(ckpt_path),
                "resumed_from": resumed_from,
                "world_size": dist.world_size,
                "ddp_param_spread": spread,
            },
        )
    return TrainResult(
        out, state, ckpt_path if dist.is_main else None, seconds, last_train, last_val, resumed_from
    )


def _validate(task: Task, model: torch.nn.Module, val_set, cfg: TrainConfig) -> dict:
    k = len(val_set) if cfg.data.val_samples is None else min(len(val_set), cfg.data.val_samples)
    model.eval()
    try:
        with torch.no_grad():
            return task.validate(model, [val_set[i] for i in range(k)])
    finally:
        model.train()
