"""facesfm.render: camera trajectories, offscreen rendering and writing sequences with ground
truth (images, depth, face masks, landmark tracks, COLMAP model)."""

from facesfm.render.config import (
    AppearanceConfig,
    BatchConfig,
    CameraEffectsConfig,
    LightingConfig,
    PhotoBackgroundConfig,
    RenderConfig,
    TrajectoryConfig,
)
from facesfm.render.trajectory import Trajectory, make_trajectory
from facesfm.render.visibility import landmark_visibility, sample_depth, vertex_normals

__all__ = [
    "AppearanceConfig",
    "BatchConfig",
    "CameraEffectsConfig",
    "FaceRenderer",
    "LightingConfig",
    "PhotoBackgroundConfig",
    "RenderConfig",
    "Trajectory",
    "TrajectoryConfig",
    "landmark_visibility",
    "make_trajectory",
    "render_sequence",
    "sample_depth",
    "vertex_normals",
]


def __getattr__(name):
    # pyrender (OpenGL) loads only when rendering is actually used
    if name == "render_sequence":
        from facesfm.render.writer import render_sequence

        return render_sequence
    if name == "FaceRenderer":
        from facesfm.render.renderer import FaceRenderer

        return FaceRenderer
    raise AttributeError(name)
