"""Camera projection, rigid transforms and image-space geometry (OpenCV convention)."""

from facesfm.geometry.camera import (
    backproject,
    camera_center,
    intrinsics,
    invert_pose,
    look_at,
    project,
    transform,
)

__all__ = [
    "backproject",
    "camera_center",
    "intrinsics",
    "invert_pose",
    "look_at",
    "project",
    "transform",
]
