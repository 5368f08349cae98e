"""facesfm.solve: the test-time pipeline behind ``facesfm solve`` and ``facesfm compare``.

frames (:mod:`~facesfm.solve.inputs`) -> landmarks -> depth and poses (networks from training
checkpoints, :mod:`~facesfm.solve.learned`, or oracle stand-ins from a sequence's ground
truth) -> the BA layer -> fusion into a cloud and a coloured mesh (:mod:`~facesfm.solve.fusion`)
-> files (:mod:`~facesfm.solve.outputs`); :mod:`~facesfm.solve.compare` reports learned vs
optimised poses.
"""

from facesfm.solve.compare import Comparison, compare_cameras, format_comparison, plot_comparison
from facesfm.solve.fusion import (
    FusionConfig,
    PointCloud,
    SurfaceMesh,
    fuse_depth_maps,
    mesh_from_depth,
    sample_depth,
)
from facesfm.solve.inputs import FrameSet, default_intrinsics, load_input
from facesfm.solve.outputs import Cameras, read_cameras, write_cameras
from facesfm.solve.pipeline import (
    BAConfig,
    SolveConfig,
    SolveResult,
    build_solve_config,
    run_solve,
    solve_frames,
)

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
