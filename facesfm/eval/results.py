"""Typed results of a solve's evaluation against the ground truth
(:func:`facesfm.eval.ground_truth.evaluate_against_gt`).

A figure that could not be computed is None, and :attr:`SolveEvaluation.errors` says why
under the figure's name. :meth:`SolveEvaluation.to_dict` is the ``evaluation`` section of a
solve's report.json (docs/format.md), where such a figure is written as ``{"error": why}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from facesfm.eval.metrics import PoseErrors
from facesfm.eval.now import NowResult

__all__ = ["AlignmentFit", "Completeness", "Distances", "SolveEvaluation"]


@dataclass(frozen=True)
class Distances:
    """Statistics of point-to-surface distances (mm) over ``n`` points."""

    mean: float
    median: float
    p95: float
    max: float
    n: int

    @classmethod
    def of(cls, d: np.ndarray) -> Distances:
        return cls(float(d.mean()), float(np.median(d)), float(np.percentile(d, 95)),
                   float(d.max()), len(d))


@dataclass(frozen=True)
class AlignmentFit:
    """How an ICP alignment to the GT surface ended: its scale, the fraction of points with a
    correspondence (fitness) and their RMS distance (mm)."""

    scale: float
    fitness: float
    inlier_rmse_mm: float


@dataclass(frozen=True)
class Completeness:
    """The fraction of the GT surface the cameras saw that has a cloud point within
    ``threshold_mm`` (NaN with no GT points), over ``gt_points`` surface points."""

    threshold_mm: float
    fraction: float
    gt_points: int


#: report.json names of :class:`SolveEvaluation`'s figures (attribute -> key)
_REPORT_KEYS = {"poses_initial": "poses_initial", "poses_optimised": "poses_optimised",
                "alignment_landmark_scale": "alignment_landmark_scale",
                "cloud_landmark_scale": "cloud_to_gt_surface_mm_landmark_scale",
                "now": "now", "now_metric": "now_metric", "alignment": "alignment",
                "cloud": "cloud_to_gt_surface_mm", "mesh": "mesh_to_gt_surface_mm",
                "completeness": "completeness"}


@dataclass
class SolveEvaluation:
    """A solve against its sequence's ground truth (mm, degrees).

    poses_initial, poses_optimised: camera errors after a similarity alignment of the start
                      and the bundle-adjusted cameras (None with fewer than 3 frames).
    alignment_start:  where the surface alignment started: "landmarks" (the landmark IDs mark
                      the sequence's points), "cameras" or "centroids" (they do not:
                      ``alignment_start_why``); None without a GT mesh.
    alignment, cloud, mesh, completeness: the ICP alignment with a free scale, and the
                      cloud's and mesh's distances to the GT surface under it, and the
                      cloud's completeness.
    alignment_landmark_scale, cloud_landmark_scale: the same at the landmarks' scale (rigid
                      ICP), which cannot shrink a noisy cloud.
    now, now_metric:  the NoW protocol (:mod:`facesfm.eval.now`), where it was asked for.
    errors:           why a figure above is None, under its report.json name (e.g.
                      ``alignment`` when the ICP failed).
    """

    poses_initial: PoseErrors | None = None
    poses_optimised: PoseErrors | None = None
    alignment_start: str | None = None
    alignment_start_why: str | None = None
    alignment: AlignmentFit | None = None
    cloud: Distances | None = None
    mesh: Distances | None = None
    completeness: Completeness | None = None
    alignment_landmark_scale: AlignmentFit | None = None
    cloud_landmark_scale: Distances | None = None
    now: NowResult | None = None
    now_metric: NowResult | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The report.json form: a figure as its mapping, a failed one as {"error": why}, one
        not computed left out."""
        out: dict = {}
        if self.alignment_start is not None:
            out["alignment_start"] = {"from": self.alignment_start}
            if self.alignment_start_why is not None:
                out["alignment_start"]["why"] = self.alignment_start_why
        for attr, key in _REPORT_KEYS.items():
            value = getattr(self, attr)
            if value is not None:
                out[key] = value.summary() if hasattr(value, "summary") else asdict(value)
            elif key in self.errors:
                out[key] = {"error": self.errors[key]}
        return out
