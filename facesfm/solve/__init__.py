"""facesfm.solve: the test-time pipeline behind ``facesfm solve`` and ``facesfm compare``.

frames (:mod:`~facesfm.solve.inputs`) -> the stages of :mod:`~facesfm.solve.stages` (landmarks
-> depth and poses from networks, :mod:`~facesfm.training.inference`, or oracle stand-ins from
a sequence's ground truth -> the BA, :mod:`~facesfm.solvers.landmark_ba` -> fusion into a cloud
and a coloured mesh, :mod:`~facesfm.solve.fusion`), driven by :mod:`~facesfm.solve.pipeline`
with the options of :mod:`~facesfm.solve.config` -> files (:mod:`~facesfm.solve.outputs`);
:mod:`~facesfm.solve.compare` reports learned vs optimised poses.
"""

from facesfm.data.cameras import Cameras, read_cameras, write_cameras
from facesfm.solve.compare import Comparison, compare_cameras, format_comparison, plot_comparison
from facesfm.solve.config import SolveConfig, build_solve_config
from facesfm.solve.fusion import (
    FusionConfig,
    PointCloud,
    SurfaceMesh,
    fuse_depth_maps,
    mesh_from_depth,
    sample_depth,
)
from facesfm.solve.inputs import FrameSet, default_intrinsics, load_input
from facesfm.solve.pipeline import run_solve, solve_frames
from facesfm.solve.stages import SolveResult
from facesfm.solvers.landmark_ba import BAConfig

__all__ = [
    "BAConfig",
    "Cameras",
    "Comparison",
    "FrameSet",
    "FusionConfig",
    "PointCloud",
    "SolveConfig",
    "SolveResult",
    "SurfaceMesh",
    "build_solve_config",
    "compare_cameras",
    "default_intrinsics",
    "format_comparison",
    "fuse_depth_maps",
    "load_input",
    "mesh_from_depth",
    "plot_comparison",
    "read_cameras",
    "run_solve",
    "sample_depth",
    "solve_frames",
    "write_cameras",
]
