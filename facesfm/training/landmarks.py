"""Stage 1: the landmark detector, supervised by the rendered landmark labels (section 3.3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from facesfm.config import from_dict
from facesfm.data.dataset import AugmentConfig, SequenceDataset, SequenceSample
from facesfm.losses import landmark_detection_loss
from facesfm.networks import LandmarkNet, LandmarkNetConfig, LandmarkOutput, detect_landmarks
from facesfm.training.checkpoint import load_checkpoint, restore_weights
from facesfm.training.config import TrainConfig
from facesfm.training.distributed import DistInfo
from facesfm.training.loop import TrainResult, run_training, seed_everything
from facesfm.training.metrics import landmark_errors

__all__ = [
    "LandmarkTask",
    "build_landmark_net",
    "detect",
    "landmark_datasets",
    "load_landmark_net",
    "train_landmarks",
]


def build_landmark_net(cfg: TrainConfig) -> LandmarkNet:
    lc = cfg.landmarks
    return LandmarkNet(
        LandmarkNetConfig(
            variant=lc.variant,
            num_landmarks=cfg.data.landmarks,
            in_channels=lc.in_channels,
            channels=tuple(lc.channels),
            fc_dims=tuple(lc.fc_dims),
            head_channels=lc.head_channels,
            local_visibility=lc.local_visibility,
        )
    )


def load_landmark_net(path: str | Path) -> tuple[LandmarkNet, TrainConfig]:
    """The detector of a stage-1 checkpoint, in eval mode with frozen weights."""
    ck = load_checkpoint(path, stage="landmarks")
    cfg = from_dict(TrainConfig, ck["config"], f"{path} config")
    net = build_landmark_net(cfg)
    net.load_state_dict(ck["models"]["model"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, cfg


def detect(net: LandmarkNet, cfg: TrainConfig, images: torch.Tensor) -> LandmarkOutput:
    """The detector of a stage-1 run applied to full-resolution frames (B, 3, H, W) the way
    that run validates it: resized to ``data.image_size``, refined in a face crop when it was
    trained on crops (fusing ``landmarks.crop_views`` crops); positions in the frames'
    pixels."""
    lc = cfg.landmarks
    size = (cfg.data.image_size, cfg.data.image_size)
    return detect_landmarks(net, images, size, lc.crop_margin if lc.face_crop > 0 else None,
                            crop_views=lc.crop_views)


def _frames(batch: SequenceSample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, F, ...) samples -> frames (B*F, 3, H, W), uv (B*F, N, 2), visible (B*F, N)."""
    return batch.images.flatten(0, 1), batch.uv.flatten(0, 1), batch.visible.flatten(0, 1)


class LandmarkTask:
    """Stage-1 task for :func:`facesfm.training.loop.run_training`."""

    stage = "landmarks"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.model = build_landmark_net(cfg)

    def loss(self, model, batch: SequenceSample):
        images, uv, vis = _frames(batch)
        out = model(images)
        return landmark_detection_loss(
            out,
            uv,
            vis,
            scale=float(images.shape[-1]),
            visibility_weight=self.cfg.landmarks.visibility_weight,
        )

    def validate(self, model, samples: list[SequenceSample]) -> dict[str, float]:
        uvs, logits, gts, viss = [], [], [], []
        for s in samples:
            out = detect(model, self.cfg, s.images)
            uvs.append(out.uv)
            logits.append(out.visibility_logits)
            gts.append(s.uv)
            viss.append(s.visible)
        return landmark_errors(torch.cat(uvs), torch.cat(logits), torch.cat(gts), torch.cat(viss))


def landmark_datasets(cfg: TrainConfig, data, val=None):
    """Single-frame training samples (augmented) and validation samples (whole sequences of
    ``val``, or of the training data when ``val`` is None, at their stored resolution: the
    validation errors are in those pixels, see :func:`detect`)."""
    d = cfg.data
    train = SequenceDataset(
        data,
        window=1,
        image_size=d.image_size,
        augment=AugmentConfig(face_crop=cfg.landmarks.face_crop) if d.augment else None,
        landmarks=d.landmarks,
        seed=cfg.seed,
        load_depth=False,
    )
    vset = SequenceDataset(
        val if val is not None else data,
        window=None,
        landmarks=d.landmarks,
        load_depth=False,
    )
    return train, vset


def train_landmarks(
    cfg: TrainConfig,
    data,
    out,
    *,
    val=None,
    resume: bool = False,
    progress: bool = True,
    dist: DistInfo | None = None,
    interrupt_after: int | None = None,
    echo: Callable = print,
    init: str | Path | None = None,
) -> TrainResult:
    """Train the landmark detector on rendered sequences ``data`` (see
    :func:`facesfm.data.dataset.find_sequences`); results in the run folder ``out``.
    ``init``: start from the weights of another stage-1 checkpoint of the same architecture
    (fine-tuning; its optimiser state is not used)."""
    seed_everything(cfg.seed)
    task = LandmarkTask(cfg)
    if init is not None:
        ck = load_checkpoint(init, stage="landmarks")
        state = ck["models"]["model"]
        # layers the source lacks (e.g. landmarks.local_visibility switched on for the
        # fine-tuning) keep their initialisation; every layer the source has must fit
        new = {k: v for k, v in task.model.state_dict().items() if k not in state}
        if new:
            echo(f"--init {init}: initialised here, not in that checkpoint: "
                 f"{', '.join(sorted({k.rsplit('.', 1)[0] for k in new}))}")
        restore_weights(task.model, {**state, **new}, init, "landmark network").train()
    train, vset = landmark_datasets(cfg, data, val)
    return run_training(
        task,
        cfg,
        train,
        vset,
        out,
        resume=resume,
        progress=progress,
        dist=dist,
        interrupt_after=interrupt_after,
        echo=echo,
        extra={"init_from": None if init is None else _provenance(init, ck)},
    )


def _provenance(path, ck: dict) -> dict:
    """Where fine-tuned weights started: the file's name (not the machine's path), its run,
    step and code version, and where that one started in turn (the chain back to the first
    training)."""
    extra = ck.get("extra") or {}
    run = extra.get("source_run") or Path(path).resolve().parent.parent.name
    return {"file": Path(path).name, "run": run, "step": (ck.get("state") or {}).get("step"),
            "code_version": ck.get("code_version"), "init_from": extra.get("init_from")}
