"""facesfm.eval: aligning reconstructions to ground truth, metrics, the factorisation
baseline and result tables."""

from facesfm.eval.align import (
    AlignConfig,
    AlignResult,
    IcpResult,
    Sim3,
    align_reconstruction,
    icp,
    icp_to_mesh,
    umeyama,
)
from facesfm.eval.factorization import (
    FactorizationConfig,
    FactorizationResult,
    factorize,
    resolve_reflection,
    weak_perspective_poses,
)
from facesfm.eval.metrics import (
    ClassificationScores,
    DepthMetrics,
    ErrorStats,
    PoseErrors,
    ReconstructionMetrics,
    RpeStats,
    align_trajectories,
    ate,
    depth_metrics,
    error_stats,
    evaluate_reconstruction,
    landmark_errors,
    nearest_vertex_distances,
    point_to_surface_distances,
    pose_errors,
    poses_in_frame,
    reconstruction_metrics,
    rotation_angle_deg,
    rpe,
    scores_from_counts,
    visibility_scores,
)
from facesfm.eval.surface import MeshClosestPoint, closest_points_on_mesh
from facesfm.eval.tables import (
    PAPER_COLUMN,
    PAPER_TABLE1,
    PAPER_TABLE2,
    Table,
    comparison_table,
    landmark_sweep_table,
    plot_landmark_sweep,
    plot_pose_errors,
    write_table,
)

__all__ = [
    "AlignConfig", "AlignResult", "IcpResult", "Sim3", "align_reconstruction", "icp",
    "icp_to_mesh", "umeyama",
    "FactorizationConfig", "FactorizationResult", "factorize", "resolve_reflection",
    "weak_perspective_poses",
    "ClassificationScores", "DepthMetrics", "ErrorStats", "PoseErrors", "ReconstructionMetrics",
    "RpeStats", "align_trajectories", "ate", "depth_metrics", "error_stats",
    "evaluate_reconstruction", "landmark_errors", "nearest_vertex_distances",
    "point_to_surface_distances", "pose_errors", "poses_in_frame", "reconstruction_metrics",
    "rotation_angle_deg", "rpe", "scores_from_counts", "visibility_scores",
    "MeshClosestPoint", "closest_points_on_mesh",
    "PAPER_COLUMN", "PAPER_TABLE1", "PAPER_TABLE2", "Table", "comparison_table",
    "landmark_sweep_table", "plot_landmark_sweep", "plot_pose_errors", "write_table",
]
