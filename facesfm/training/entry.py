"""What ``facesfm train landmarks`` / ``facesfm train sfm`` run: build the config from the
preset, a YAML file and the command-line options, join torchrun's process group if any, train.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from facesfm.errors import InputError
from facesfm.training.config import build_train_config
from facesfm.training.distributed import cleanup_distributed, init_distributed
from facesfm.training.loop import TrainResult

__all__ = ["cli_overrides", "train_command"]


def cli_overrides(
    *,
    seed=None,
    epochs=None,
    max_steps=None,
    batch_size=None,
    lr=None,
    lr_schedule=None,
    image_size=None,
    landmarks=None,
    window=None,
    ablation=None,
    ba=None,
    landmark_source=None,
    backward=None,
    face_crop=None,
) -> dict:
    """Nested config overrides from command-line options (None = not given)."""
    o: dict = {}

    def put(path, v):
        if v is None:
            return
        d = o
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = v

    put(("seed",), seed)
    put(("optim", "epochs"), epochs)
    put(("optim", "max_steps"), max_steps)
    put(("optim", "batch_size"), batch_size)
    put(("optim", "lr"), lr)
    put(("optim", "lr_schedule"), lr_schedule)
    put(("data", "image_size"), image_size)
    put(("data", "landmarks"), landmarks)
    put(("data", "window"), window)
    put(("sfm", "ablation"), ablation)
    put(("sfm", "ba", "enabled"), ba)
    put(("sfm", "landmark_source"), landmark_source)
    put(("sfm", "ba", "backward"), backward)
    put(("landmarks", "face_crop"), face_crop)
    return o


def train_command(
    stage: str,
    data: str,
    out: str,
    *,
    preset: str | None = None,
    config: str | None = None,
    sets=(),
    val: str | None = None,
    resume: bool = False,
    landmarks_ckpt: str | None = None,
    init: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    echo: Callable = print,
    **options,
) -> TrainResult:
    """Run one training stage ("landmarks" or "sfm") from command-line values."""
    if not Path(data).exists():
        raise InputError(f"training data folder not found: {data}")
    if val is not None and not Path(val).exists():
        raise InputError(f"--val folder not found: {val}")
    if landmarks_ckpt is not None and not Path(landmarks_ckpt).is_file():
        raise InputError(f"--landmarks-ckpt file not found: {landmarks_ckpt}")
    if init is not None and not Path(init).is_file():
        raise InputError(f"--init checkpoint not found: {init}")
    cfg = build_train_config(preset, config, cli_overrides(**options), sets)
    for folder in {Path(data), *([Path(val)] if val is not None else [])}:
        if folder.is_dir() and not (folder / "dataset.json").is_file() \
                and not (folder / "sequence.json").is_file():
            # facesfm render writes dataset.json last: without it the render may have stopped
            echo(f"warning: {folder} has no dataset.json (an interrupted `facesfm render` "
                 f"writes none): training on the sequence folders found in it")
    dist = init_distributed()
    if threads is None and dist.enabled:
        # one process per core share: oversubscribed threads slow small convolutions ~10x
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
        threads = max(1, (os.cpu_count() or 1) // local)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if stage == "landmarks":
            from facesfm.training.landmarks import train_landmarks

            res = train_landmarks(
                cfg, data, out, val=val, resume=resume, progress=progress, dist=dist,
                echo=echo, init=init,
            )
        elif stage == "sfm":
            from facesfm.training.sfm import train_sfm

            res = train_sfm(
                cfg,
                data,
                out,
                landmarks_ckpt=landmarks_ckpt,
                val=val,
                resume=resume,
                progress=progress,
                dist=dist,
                echo=echo,
            )
        else:
            raise InputError(f"unknown training stage {stage!r}")
    finally:
        cleanup_distributed()
    if dist.is_main:
        val_txt = ", ".join(
            f"{k} {v:.4g}"
            for k, v in res.val_metrics.items()
            if k not in ("split", "step", "epoch")
        )
        echo(
            f"trained {stage}: {res.state.step} step(s) in {res.seconds:.1f} s; "
            f"checkpoint {res.checkpoint}"
        )
        if val_txt:
            echo(f"validation: {val_txt}")
    return res
