"""Training configuration: frozen dataclasses and the presets ``tiny`` / ``small`` / ``paper``
as plain data (nested dicts fed through :func:`facesfm.config.from_dict`, so a preset and a
user's YAML file go through the same strict loader).

One :class:`TrainConfig` covers both stages: stage 1 (``facesfm train landmarks``) reads
``data``, ``optim`` and ``landmarks``; stage 2 (``facesfm train sfm``) reads ``data``, ``optim``
and ``sfm``. Presets:

* ``paper``: the paper's settings (section 5.1): 384x384, 800 landmarks, Adam betas
  (0.9, 0.99), batch 2, 50 epochs, BA over whole sequences.
* ``small``: a model on a 2-core CPU in under an hour: 128x128, 200 landmarks, windows of
  9 frames 4 to 7 apart (64 to 112 degrees of head turn), half of them reversed, classical BA
  layer started from the factorised landmark tracks, narrower networks.
* ``tiny``: tests: 64x64, 68 landmarks, windows of 3 frames, very narrow networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from facesfm.config import dotted_overrides, from_dict, merge, read_yaml, to_dict
from facesfm.errors import InputError
from facesfm.networks.landmark import CROP_VIEWS
from facesfm.solvers.landmark_ba import BAConfig, PairRule
from facesfm.solvers.lm import BackwardMode
from facesfm.solvers.problem import Parameterization

__all__ = [
    "ABLATIONS",
    "BA_INITS",
    "PRESETS",
    "TRAINING_BA",
    "DataConfig",
    "LandmarkStageConfig",
    "LossWeights",
    "OptimConfig",
    "SfmStageConfig",
    "TrainConfig",
    "build_train_config",
    "preset_config",
    "upgrade_checkpoint_config",
]


@dataclass(frozen=True)
class DataConfig:
    """What the training samples look like.

    image_size:  square side in pixels (a multiple of 32: DepthNet/PoseNet stride).
    landmarks:   N, the first N landmarks of the nested ordering.
    window:      frames per stage-2 sample (consecutive); None = whole sequences.
    stride:      step between window starts (None = window x frame_step, no overlap).
    frame_step:  every k-th frame inside a window: the window of 5 at step 4 spans 16 frames
                 (32 degrees in our renders), a baseline wide enough for the landmark and
                 photometric terms to see depth; consecutive frames 2 degrees apart barely
                 move a landmark by more than the detector's error.
    frame_step_max: training samples draw their step from frame_step..frame_step_max (None:
                 always frame_step), so the pose network sees motions of different sizes;
                 validation uses frame_step.
    reverse:     probability that a training window runs backwards in time (the pose network
                 must read the direction of motion from the images).
    augment:     sequence-consistent augmentation (colour jitter, zoom, shift) on training data.
    val_samples: at most this many samples are validated (None = all).
    """

    image_size: int = 128
    landmarks: int = 68
    window: int | None = 5
    stride: int | None = None
    frame_step: int = 1
    frame_step_max: int | None = None
    reverse: float = 0.0
    augment: bool = True
    val_samples: int | None = 8

    def __post_init__(self):
        if self.image_size < 32 or self.image_size % 32:
            raise InputError(
                f"data.image_size must be a positive multiple of 32, got {self.image_size}"
            )
        if self.window is not None and self.window < 2:
            raise InputError(f"data.window must be >= 2 frames (or null), got {self.window}")
        if self.frame_step < 1:
            raise InputError(f"data.frame_step must be >= 1, got {self.frame_step}")
        if self.frame_step_max is not None and self.frame_step_max < self.frame_step:
            raise InputError(f"data.frame_step_max ({self.frame_step_max}) must be >= "
                             f"data.frame_step ({self.frame_step})")
        if not 0 <= self.reverse <= 1:
            raise InputError(f"data.reverse must be in [0, 1], got {self.reverse}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings and run length (shared by both stages).

    batch_size:  samples per step per process (frames in stage 1, sequences in stage 2).
    epochs:      passes over the training data.
    max_steps:   stop after this many optimiser steps in total (None: no cap).
    grad_clip:   clip the global gradient norm (None: off).
    lr_schedule: "constant", or "cosine": the learning rate falls from ``lr`` to 0 along half a
                 cosine over the run's steps (a function of the step only, so ``--resume``
                 reaches the same weights).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    batch_size: int = 2
    epochs: int = 50
    max_steps: int | None = None
    grad_clip: float | None = 10.0
    lr_schedule: str = "constant"

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"optim.lr_schedule must be constant or cosine, "
                             f"got {self.lr_schedule!r}")
        if self.batch_size < 1:
            raise InputError(f"optim.batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise InputError(f"optim.epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise InputError(f"optim.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class LandmarkStageConfig:
    """Stage 1: the landmark detector (see :class:`facesfm.networks.LandmarkNetConfig`)."""

    variant: str = "heatmap"
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 96, 128)
    fc_dims: tuple[int, ...] = (256, 256)
    head_channels: int = 64
    visibility_weight: float = 0.1
    # probability of a face-crop training sample; > 0 also makes inference refine every
    # detection in a crop of side crop_margin x the landmarks' box (networks.detect_landmarks)
    face_crop: float = 0.0
    crop_margin: float = 1.25
    # inference: crops of that refinement fused (networks.detect_landmarks, CROP_VIEWS)
    crop_views: int = 1
    # heatmap variant: per-landmark visibility read under its own heatmap
    local_visibility: bool = False

    def __post_init__(self):
        if self.variant not in ("paper", "heatmap"):
            raise InputError(
                f"landmarks.variant must be 'paper' or 'heatmap', got {self.variant!r}"
            )
        if self.in_channels not in (1, 3):
            raise InputError(f"landmarks.in_channels must be 1 or 3, got {self.in_channels}")
        if not 0 <= self.face_crop <= 1:
            raise InputError(f"landmarks.face_crop must be in [0, 1], got {self.face_crop}")
        if not self.crop_margin > 1:
            raise InputError(f"landmarks.crop_margin must be > 1, got {self.crop_margin}")
        if not 1 <= self.crop_views <= len(CROP_VIEWS):
            raise InputError(f"landmarks.crop_views must be in 1..{len(CROP_VIEWS)}, "
                             f"got {self.crop_views}")


#: The stage-2 BA layer's defaults (``sfm.ba``; the class's own are the test-time solve's).
#: The depth parameterisation (equation 2 as written: the network's depth is the structure;
#: poses and per-frame depth scales are solved and the optimum is differentiated w.r.t. the
#: depth), over all co-visible pairs, 10 iterations, no depth corrections, implicit backward.
#: With an immature depth network it mis-places poses: a per-landmark depth error that differs
#: from frame to frame cannot be absorbed by per-frame scales (measured on 11-frame 120-degree
#: ICT windows from the factorised start: 15 deg -> 29 deg with GT landmarks and a flat depth),
#: which is why the ``small`` preset trains with "classical".
TRAINING_BA = BAConfig(parameterization=Parameterization.DEPTH, pairs=PairRule.ALL,
                       max_iterations=10, depth_corrections=False,
                       backward=BackwardMode.IMPLICIT)

#: Where the BA layer's solve starts (``sfm.ba_init``).
BA_INITS = ("network", "landmarks")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the stage-2 loss terms (0 switches a term off).

    landmark:     landmark BA loss (eq. 2, px) with the refined poses.
    spectral:     SSIM + L1 view synthesis (eq. 4) with the refined poses.
    depth:        multi-view depth consistency (eq. 5) with the refined poses.
    smooth:       edge-aware disparity smoothness.
    pose_distill: switches PoseNet's teacher on (0 = off). Without the BA layer, it weighs the
                  landmark BA loss of the learned poses (depth detached). With the layer on,
                  the refined poses do not depend on PoseNet at the optimum; PoseNet learns
                  from them instead (:func:`facesfm.training.sfm.motion_distillation`,
                  weighted by ``pose_distill_motion``): no ground truth, the BA is the teacher.
    pose_distill_motion: weight of that motion distillation (rotation ~ radians + translation
                  relative to the step length).
    """

    landmark: float = 0.02
    spectral: float = 1.0
    depth: float = 0.1
    smooth: float = 1e-3
    pose_distill: float = 0.02
    pose_distill_motion: float = 1.0


# Figure 10 / Table 1 of the paper: which terms each ablation keeps.
ABLATIONS: dict[str, dict] = {
    "full": {},
    "spectral": {"landmark": 0.0, "pose_distill": 0.0, "pose_distill_motion": 0.0},
    "landmark": {"spectral": 0.0, "depth": 0.0},
}


@dataclass(frozen=True)
class SfmStageConfig:
    """Stage 2: unsupervised depth and pose.

    ablation:          "full", "spectral" (no landmarks anywhere: BA off, spectral + depth
                       consistency + smoothness) or "landmark" (landmark BA only).
    landmark_source:   "detector" (the frozen stage-1 network) or "gt" (the rendered landmark
                       labels: an oracle-detector ablation; depth and pose GT are never used).
    min_visibility:    detections with a lower visibility probability get BA weight 0.
    checkpoint_frames: run DepthNet and PoseNet over chunks of this many frames (pairs), and
                       the spectral term over chunks of this many frame pairs, under
                       activation checkpointing: their activations are recomputed in the
                       backward pass instead of kept, so a step holds one chunk's activations
                       at a time (the same loss and gradients, at about one more forward's
                       cost). 0 = off.
    pose_norm:         GroupNorm in PoseNet's encoder; pose_difference: PoseNet also sees
                       source - target (see :mod:`facesfm.networks.pose` for why both are on).
                       Checkpoints written before these options have neither (see
                       :func:`upgrade_checkpoint_config`).
    pose_distill_pairs: with the BA layer on, PoseNet is also distilled on this many random
                       ordered frame pairs per sequence (one or two frames apart, either
                       direction), not only on the consecutive ones: a window's consecutive
                       pairs all move the same way, so they hardly tell PoseNet which way the
                       head turns. 0 = consecutive pairs only.
    ba:                the BA layer (:class:`facesfm.solvers.landmark_ba.BAConfig`, defaults
                       :data:`TRAINING_BA`).
    ba_init:           where its solve starts: "network" (the PoseNet chain) or "landmarks"
                       (a Tomasi-Kanade factorisation of the landmark tracks, the solve's
                       ``--poses-init landmarks``). Over a wide window an untrained PoseNet
                       (about identity) leaves the solver in a wrong minimum; the factorised
                       start does not depend on the networks. Either way the refined poses'
                       gradient comes from the optimum, not from the start.
    """

    ablation: str = "full"
    landmark_source: str = "detector"
    min_visibility: float = 0.5
    depth_channels: tuple[int, ...] = (16, 24, 32, 64, 96, 160)
    pose_channels: tuple[int, ...] = (16, 32, 64, 128, 192)
    pose_norm: bool = True
    pose_difference: bool = True
    pose_distill_pairs: int = 32
    min_depth_mm: float = 200.0
    max_depth_mm: float = 900.0
    checkpoint_frames: int = 0
    loss: LossWeights = field(default_factory=LossWeights)
    ba: BAConfig = field(default_factory=lambda: TRAINING_BA)
    ba_init: str = "network"

    def __post_init__(self):
        if self.ba_init not in BA_INITS:
            raise InputError(f"sfm.ba_init must be one of {list(BA_INITS)}, got "
                             f"{self.ba_init!r}")
        if self.ablation not in ABLATIONS:
            raise InputError(
                f"sfm.ablation must be one of {list(ABLATIONS)}, got {self.ablation!r}"
            )
        if self.pose_distill_pairs < 0:
            raise InputError(f"sfm.pose_distill_pairs must be >= 0, got {self.pose_distill_pairs}")
        if self.checkpoint_frames < 0:
            raise InputError(f"sfm.checkpoint_frames must be >= 0, got {self.checkpoint_frames}")
        if self.landmark_source not in ("detector", "gt"):
            raise InputError(
                f"sfm.landmark_source must be 'detector' or 'gt', got {self.landmark_source!r}"
            )

    def effective_weights(self) -> LossWeights:
        """The loss weights after applying the ablation."""
        d = to_dict(self.loss)
        d.update(ABLATIONS[self.ablation])
        return LossWeights(**d)

    def ba_active(self) -> bool:
        """The BA layer runs (it needs landmarks, which the spectral ablation does not use)."""
        return self.ba.enabled and self.ablation != "spectral"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data paths."""

    preset: str = "custom"
    seed: int = 0
    log_every: int = 1
    ckpt_every: int = 50
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    landmarks: LandmarkStageConfig = field(default_factory=LandmarkStageConfig)
    sfm: SfmStageConfig = field(default_factory=SfmStageConfig)

    def __post_init__(self):
        if self.log_every < 1 or self.ckpt_every < 1:
            raise InputError(f"log_every and ckpt_every must be >= 1 step, got "
                             f"{self.log_every} and {self.ckpt_every}")


PRESETS: dict[str, dict] = {
    "paper": {
        "preset": "paper",
        "ckpt_every": 500,
        "data": {
            "image_size": 384,
            "landmarks": 800,
            "window": None,
            "augment": True,
            "val_samples": 32,
        },
        "optim": {"lr": 1e-4, "betas": [0.9, 0.99], "batch_size": 2, "epochs": 50},
        "landmarks": {"variant": "paper", "in_channels": 1},
        # 2 whole sequences of 61 frames at 384 px: without checkpointing the stage-2 step
        # passes 20 GB; with chunks of 8 frames (pairs) the activations are recomputed
        # BA over log-spaced pairs: on 2 x 61 synthetic frames the layer takes 75 s (forward +
        # backward) and ends 0.48 deg from the truth, against 780 s / 0.27 deg over all pairs
        # (which made it 70% of the step) and 24 s / 0.80 deg over the 4 nearest
        # (bench/results/ba_layer.md)
        "sfm": {"ba": {"max_iterations": 20, "pairs": "log"}, "checkpoint_frames": 8},
    },
    "small": {
        "preset": "small",
        "ckpt_every": 100,
        "data": {
            "image_size": 128,
            "landmarks": 200,
            # 9 frames 8-14 degrees apart (64-112 degrees, see DataConfig.frame_step), in
            # either direction: the pose network sees motions of several sizes and signs
            "window": 9,
            "frame_step": 4,
            "frame_step_max": 7,
            "reverse": 0.5,
            "stride": 3,
            "augment": True,
            "val_samples": 8,
        },
        "optim": {"lr": 2e-4, "betas": [0.9, 0.99], "batch_size": 2, "epochs": 20},
        # local visibility and 7 fused crop views: the shipped ICT detector (3.06 -> 2.1 px,
        # F1 0.939 -> 0.946 on held-out faces, with 80 instead of 30 training faces)
        "landmarks": {"variant": "heatmap", "channels": [16, 32, 64, 96], "head_channels": 32,
                      "local_visibility": True, "crop_views": 7},
        "sfm": {
            "depth_channels": [8, 16, 24, 32, 64, 96],
            "pose_channels": [8, 16, 32, 64, 96],
            # measured: the depth parameterisation with an untrained depth network mis-places
            # the poses over a wide window; classical BA from the factorised tracks does not
            "ba": {"max_iterations": 8, "parameterization": "classical"},
            "ba_init": "landmarks",
        },
    },
    "tiny": {
        "preset": "tiny",
        "ckpt_every": 2,
        "data": {"image_size": 64, "landmarks": 68, "window": 3, "augment": True, "val_samples": 2},
        "optim": {"lr": 1e-3, "betas": [0.9, 0.99], "batch_size": 2, "epochs": 2},
        "landmarks": {
            "variant": "heatmap",
            "channels": [8, 8, 16, 16],
            "head_channels": 8,
            "fc_dims": [32, 32],
        },
        "sfm": {
            "depth_channels": [4, 8, 8, 16, 16, 16],
            "pose_channels": [4, 8, 8, 16, 16],
            "ba": {"max_iterations": 5},
        },
    },
}


def upgrade_checkpoint_config(d: dict) -> dict:
    """A checkpoint's stored config in today's schema, with the settings that options added
    later must take to rebuild the networks it holds:

    * checkpoints from before ``sfm.pose_norm`` and ``sfm.pose_difference`` hold the plain
      PoseNet, so those are False there;
    * the BA layer's settings from before the test-time and training BA shared one config:
      ``sfm.ba.huber_px`` (None: no kernel) becomes ``kernel``/``kernel_px``, ``sfm.ba.init``
      becomes ``sfm.ba_init``, and the one-valued ``backend`` ("lm") goes; the settings the
      old layer did not have take its fixed values (:data:`TRAINING_BA`'s)."""
    sfm = d.get("sfm") if isinstance(d, dict) else None
    if not isinstance(sfm, dict):
        return d
    sfm = dict(sfm)
    if "pose_norm" not in sfm:
        sfm.update(pose_norm=False, pose_difference=False)
    ba = sfm.get("ba")
    if isinstance(ba, dict) and ("huber_px" in ba or "init" in ba or "backend" in ba):
        ba = dict(ba)
        ba.pop("backend", None)
        if "init" in ba:
            sfm["ba_init"] = ba.pop("init")
        if "huber_px" in ba:
            huber = ba.pop("huber_px")
            if huber is None:
                ba["kernel"] = "none"
            else:
                ba.update(kernel="huber", kernel_px=huber)
        sfm["ba"] = {**to_dict(TRAINING_BA), **ba}
    return {**d, "sfm": sfm}


def preset_config(name: str, overrides: dict | None = None) -> TrainConfig:
    """The preset ``name`` with nested ``overrides`` applied (unknown keys are errors)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    d = merge(to_dict(TrainConfig()), PRESETS[name])
    if overrides:
        # validate the override keys against the schema first, for an error naming them
        from_dict(TrainConfig, merge(to_dict(TrainConfig()), overrides), "overrides")
        d = merge(d, overrides)
    return from_dict(TrainConfig, d, f"preset {name}")


def build_train_config(
    preset: str | None = None, config: str | None = None, overrides: dict | None = None,
    sets=(),
) -> TrainConfig:
    """Preset (default ``small``), then a YAML file's keys, then ``overrides``, then the
    dotted ``KEY=VALUE`` items of ``sets`` (``--set optim.lr=1e-4``)."""
    d = to_dict(preset_config(preset or "small"))
    if config is not None:
        raw = read_yaml(config)
        from_dict(TrainConfig, raw, str(config))  # unknown keys and bad values name the file
        d = merge(d, raw)
    if overrides:
        d = merge(d, overrides)
    if sets:
        d = merge(d, dotted_overrides(sets, d))
    return from_dict(TrainConfig, d, "config")
