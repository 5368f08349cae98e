"""A solve's evaluation is typed in memory and keeps its report.json form."""

import json

import numpy as np

from facesfm.eval.metrics import pose_errors
from facesfm.eval.now import NowResult
from facesfm.eval.results import AlignmentFit, Completeness, Distances, SolveEvaluation
from facesfm.geometry.camera import look_at


def test_report_form_of_figures_failures_and_figures_not_computed():
    poses = np.stack([look_at(np.array([400.0 * np.sin(a), 0.0, 400.0 * np.cos(a)]),
                              np.zeros(3)) for a in np.radians([-20, 0, 20])])
    ev = SolveEvaluation(
        poses_initial=pose_errors(poses, poses, "sim3"),
        alignment_start="cameras", alignment_start_why="no landmark pairs",
        alignment_landmark_scale=AlignmentFit(1.0, 0.9, 0.5),
        cloud_landmark_scale=Distances.of(np.array([1.0, 2.0, 3.0, 10.0])),
        completeness=Completeness(2.0, 0.75, 400),
        now=NowResult(1.0, 1.2, 0.3, 1.01, 0.8, 5000, False),
        errors={"alignment": "ICP collapsed", "poses_optimised": "degenerate"})
    d = json.loads(json.dumps(ev.to_dict()))  # plain JSON
    assert d["alignment"] == {"error": "ICP collapsed"}
    assert d["poses_optimised"] == {"error": "degenerate"}
    assert d["alignment_start"] == {"from": "cameras", "why": "no landmark pairs"}
    assert d["poses_initial"]["rotation_max_deg"] < 1e-6 and d["poses_initial"]["gauge"] == "sim3"
    assert d["cloud_to_gt_surface_mm_landmark_scale"] == {
        "mean": 4.0, "median": 2.5, "p95": np.percentile([1, 2, 3, 10], 95), "max": 10.0, "n": 4}
    assert d["alignment_landmark_scale"] == {"scale": 1.0, "fitness": 0.9, "inlier_rmse_mm": 0.5}
    assert d["completeness"] == {"threshold_mm": 2.0, "fraction": 0.75, "gt_points": 400}
    assert d["now"]["median_mm"] == 1.0 and "metric" not in d["now"]
    # not computed, and no reason given: left out
    for key in ("cloud_to_gt_surface_mm", "mesh_to_gt_surface_mm", "now_metric"):
        assert key not in d
    assert SolveEvaluation().to_dict() == {}
