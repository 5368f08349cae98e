"""Stage 1: the landmark detector, supervised by the rendered landmark labels (section 3.3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from facesfm.data.dataset import AugmentConfig, SequenceDataset, SequenceSample
from facesfm.losses import landmark_detection_loss
from facesfm.networks import LandmarkNet, LandmarkNetConfig
from facesfm.training.checkpoint import load_checkpoint
from facesfm.training.config import TrainConfig
from facesfm.training.distributed import DistInfo
from facesfm.training.loop import TrainResult, run_training, seed_everything
from facesfm.training.metrics import landmark_errors

__all__ = [
    "LandmarkTask",
    "build_landmark_net",
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
        )
    )


def load_landmark_net(path: str | Path) -> tuple[LandmarkNet, TrainConfig]:
    """The detector of a stage-1 checkpoint, in eval mode with frozen weights."""
    from facesfm.config import from_dict

    ck = load_checkpoint(path, stage="landmarks")
    cfg = from_dict(TrainConfig, ck["config"], f"{path} config")
    net = build_landmark_net(cfg)
    net.load_state_dict(ck["models"]["model"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, cfg


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
            out = model(s.images)
            uvs.append(out.uv)
            logits.append(out.visibility_logits)
            gts.append(s.uv)
            viss.append(s.visible)
        return landmark_errors(torch.cat(uvs), torch.cat(logits), torch.cat(gts), torch.cat(viss))


def landmark_datasets(cfg: TrainConfig, data, val=None):
    """Single-frame training samples (augmented) and validation samples (whole sequences of
    ``val``, or of the training data when ``val`` is None, not augmented)."""
    d = cfg.data
    train = SequenceDataset(
        data,
        window=1,
        image_size=d.image_size,
        augment=AugmentConfig() if d.augment else None,
        landmarks=d.landmarks,
        seed=cfg.seed,
        load_depth=False,
    )
    vset = SequenceDataset(
        val if val is not None else data,
        window=None,
        image_size=d.image_size,
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
) -> TrainResult:
    """Train the landmark detector on rendered sequences ``data`` (see
    :func:`facesfm.data.dataset.find_sequences`); results in the run folder ``out``."""
    seed_everything(cfg.seed)
    task = LandmarkTask(cfg)
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
    )
