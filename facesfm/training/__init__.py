"""facesfm.training: stage 1 (landmark detector, supervised on rendered labels) and stage 2
(depth and pose, unsupervised, with the bundle-adjustment layer in the graph); resumable
atomic checkpoints, CSV/JSONL/PNG metrics, torchrun/DDP."""

from facesfm.training.ba_layer import refine_poses
from facesfm.training.checkpoint import (
    TrainState,
    code_version,
    load_checkpoint,
    save_checkpoint,
)
from facesfm.training.config import (
    ABLATIONS,
    PRESETS,
    TRAINING_BA,
    DataConfig,
    LandmarkStageConfig,
    LossWeights,
    OptimConfig,
    SfmStageConfig,
    TrainConfig,
    build_train_config,
    preset_config,
)
from facesfm.training.landmarks import LandmarkTask, load_landmark_net, train_landmarks
from facesfm.training.loop import TrainingInterrupted, TrainResult, epoch_order, run_training
from facesfm.training.sfm import SfmInputs, SfmNets, SfmTask, sfm_losses, train_sfm

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "TRAINING_BA",
    "DataConfig",
    "LandmarkStageConfig",
    "LandmarkTask",
    "LossWeights",
    "OptimConfig",
    "SfmInputs",
    "SfmNets",
    "SfmStageConfig",
    "SfmTask",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingInterrupted",
    "build_train_config",
    "code_version",
    "epoch_order",
    "load_checkpoint",
    "load_landmark_net",
    "preset_config",
    "refine_poses",
    "run_training",
    "save_checkpoint",
    "sfm_losses",
    "train_landmarks",
    "train_sfm",
]
