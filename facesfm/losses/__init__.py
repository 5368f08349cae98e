"""facesfm.losses: pure loss functions returning ``(loss, metrics)`` with detached metrics."""

from facesfm.losses.depth_consistency import depth_consistency_loss
from facesfm.losses.landmark_ba import (
    all_pairs,
    landmark_ba_loss,
    landmark_reprojection,
    sample_depth_at,
)
from facesfm.losses.landmark_detection import landmark_detection_loss
from facesfm.losses.smoothness import smoothness_loss
from facesfm.losses.spectral import (
    erode_mask,
    photometric_error,
    spectral_loss,
    view_synthesis_loss,
)

__all__ = [
    "all_pairs",
    "depth_consistency_loss",
    "erode_mask",
    "landmark_ba_loss",
    "landmark_detection_loss",
    "landmark_reprojection",
    "photometric_error",
    "sample_depth_at",
    "smoothness_loss",
    "spectral_loss",
    "view_synthesis_loss",
]
