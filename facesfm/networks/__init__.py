"""facesfm.networks: landmark detector, depth encoder-decoder, relative pose network."""

from facesfm.networks._common import count_parameters
from facesfm.networks.depth import DepthNet, DepthNetConfig
from facesfm.networks.landmark import (
    LandmarkNet,
    LandmarkNetConfig,
    LandmarkOutput,
    ba_weights,
    detect_landmarks,
    soft_argmax_2d,
)
from facesfm.networks.pose import (
    PoseNet,
    PoseNetConfig,
    PoseOutput,
    axis_angle_to_matrix,
    pose_vector_to_matrix,
)

__all__ = [
    "DepthNet",
    "DepthNetConfig",
    "LandmarkNet",
    "LandmarkNetConfig",
    "LandmarkOutput",
    "PoseNet",
    "PoseNetConfig",
    "PoseOutput",
    "axis_angle_to_matrix",
    "ba_weights",
    "count_parameters",
    "detect_landmarks",
    "pose_vector_to_matrix",
    "soft_argmax_2d",
]
