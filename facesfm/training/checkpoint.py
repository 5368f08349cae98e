"""Checkpoints: written atomically, with everything a resumed run needs to continue
bit-identically (weights, optimiser, RNG states, epoch and position in the epoch), plus the
config and the code version for provenance.
"""

from __future__ import annotations

import functools
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facesfm.errors import InputError
from facesfm.io import atomic_path
from facesfm.training.config import upgrade_checkpoint_config

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainState",
    "code_version",
    "export_weights",
    "get_rng_state",
    "load_checkpoint",
    "restore_weights",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "facesfm-checkpoint-1"


@dataclass
class TrainState:
    """Where a run is: ``step`` optimiser steps done in total, ``epoch`` the current epoch and
    ``epoch_step`` the batches of it already consumed (0 at an epoch boundary)."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """``{"package": version, "git": commit or None, "dirty": bool or None}``.

    Read once per process (two git subprocesses): the code a run executes is the code it
    loaded at start, and checkpoints are saved every few steps."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("facesfm")
    except PackageNotFoundError:
        pkg = None
    root = Path(__file__).resolve().parents[2]
    git = dirty = None
    try:
        git = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            or None
        )
        st = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        dirty = bool(st.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": pkg, "git": git, "dirty": dirty}


def get_rng_state() -> dict:
    """The global RNG states of torch, numpy and python, as tensors and plain values only (so
    that a checkpoint loads with ``torch.load(weights_only=True)``)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss),
                  float(gauss)),
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state((name, key.astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


# What a checkpoint may contain beyond tensors and plain containers: the numpy array that
# checkpoints written before the tensor RNG state hold (numpy's uint32 RNG key). Rebuilding an
# array runs no code of the file's choosing; any other class or function is refused.
_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
_SAFE_NUMPY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                       (_reconstruct, "numpy._core.multiarray._reconstruct"),
                       (_reconstruct, "numpy.core.multiarray._reconstruct")]  # numpy 1 files


def save_checkpoint(
    path: str | Path,
    *,
    models: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    state: TrainState,
    config: dict,
    stage: str,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact.

    models: name -> module (unwrapped, not DDP). config: the run's config as plain data.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "stage": stage,
        "models": {k: m.state_dict() for k, m in models.items()},
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "rng": get_rng_state(),
        "state": {"step": state.step, "epoch": state.epoch, "epoch_step": state.epoch_step},
        "config": config,
        "code_version": dict(code_version()),
        "extra": extra or {},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, stage: str | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (InputError naming the file if it
    is missing, unreadable, or of another stage), its config in today's schema
    (:func:`facesfm.training.config.upgrade_checkpoint_config`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        # weights_only: a pickle may name any callable, and unpickling calls it; only tensors,
        # plain containers and the allow-listed numpy types are rebuilt, anything else refused
        with torch.serialization.safe_globals(_SAFE_NUMPY_GLOBALS):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputError(f"{path}: not a readable facesfm checkpoint, not loaded "
                         f"({type(e).__name__}: {first})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a facesfm checkpoint")
    if stage is not None and ck["stage"] != stage:
        raise InputError(f"{path}: a '{ck['stage']}' checkpoint, expected '{stage}'")
    if "config" in ck:
        ck["config"] = upgrade_checkpoint_config(ck["config"])
    return ck


def export_weights(src: str | Path, dst: str | Path, note: dict | None = None) -> Path:
    """Write the inference part of checkpoint ``src`` to ``dst`` atomically: the weights (as
    float32), stage, config, code version and provenance of the run, without the optimiser
    and RNG states (so the file is about a third of the size and loads with
    ``torch.load(weights_only=True)``). ``note`` is merged into ``extra`` (e.g. the source run)."""
    ck = load_checkpoint(src)
    models = {
        name: {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
        for name, sd in ck["models"].items()
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "stage": ck["stage"],
        "models": models,
        "optimizer": None,
        "state": dict(ck.get("state") or {}),
        "config": ck["config"],
        "code_version": dict(ck.get("code_version") or {}),
        "extra": {**(ck.get("extra") or {}), **(note or {})},
    }
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(payload, tmp)
    return dst


def restore_weights(net: torch.nn.Module, state: dict, path, what: str) -> torch.nn.Module:
    """Load the state dict ``state`` (from the checkpoint at ``path``) into ``net`` and return
    it in eval mode; InputError naming the file and ``what`` when the weights do not fit."""
    try:
        net.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"checkpoint {path}: incompatible {what} ({first[:200]})") from None
    return net.eval()
