"""The NoW benchmark's error measure, on our ground truth.

The NoW benchmark (Sanyal et al., CVPR 2019) measures a reconstructed face mesh against a
scan: the scan is cropped to the face, the mesh is aligned to it by a similarity estimated from
7 corresponding landmarks (the four eye corners, the nose tip and the two mouth corners), the
alignment's rotation and translation are refined by minimising the scan-to-mesh distance, and
the error is the distance of every scan point to the aligned mesh's surface, summarised by its
median, mean and standard deviation in mm. Its metric variant (for methods that claim a metric
scale) takes no scale from the landmarks either: the scale is 1 throughout.

The refinement keeps the landmarks' scale. A free scale has a trivial optimum in the
scan-to-mesh direction: the scan shrunk onto a patch of the mesh is at distance 0 (measured on
a solve of a held-out face: with a free scale ICP ended at a scale of 1.7e7 with an 80 mm crop,
and at 1.23, not the landmarks' 1.0, with a 100 mm one).

Here the "scan" is the sequence's ground-truth mesh: points drawn uniformly by area on it
(:func:`facesfm.eval.align.surface_samples`), cropped to a sphere around its nose tip
(``NowConfig.crop_radius_mm``). The refinement is our point-to-surface ICP
(:func:`facesfm.eval.align.icp_to_mesh`) of the scan points onto the reconstructed mesh, with
pairs farther than ``NowConfig.max_correspondence_mm`` left out of the fit (a reconstruction
covers only what the cameras saw); every cropped scan point counts in the error. The crop
radius and that cut-off are ours: the benchmark ships its scans cropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesfm.eval.align import AlignConfig, icp_to_mesh, surface_samples
from facesfm.eval.surface import MeshClosestPoint
from facesfm.geometry.similarity import Sim3, umeyama

__all__ = ["NOW_LANDMARK_IDS", "NowConfig", "NowResult", "now_error", "now_errors", "now_scan"]

# our semantic IDs (the 68-point iBUG layout) of NoW's 7 landmarks: right eye outer and inner
# corner, left eye inner and outer corner, nose tip, right and left mouth corner
NOW_LANDMARK_IDS = (36, 39, 42, 45, 30, 48, 54)
NOSE_TIP_ID = 30


@dataclass(frozen=True)
class NowConfig:
    """crop_radius_mm: the scan is cut to this sphere around its nose tip; samples: scan
    points drawn on the ground-truth mesh before the crop; max_correspondence_mm: scan points
    farther than this from the mesh are left out of the refinement (not of the error);
    max_iterations, tolerance: of the refinement (it stops when a step moves the scan by less
    than ``tolerance`` of its size); seed: of the sampling."""

    crop_radius_mm: float = 100.0
    samples: int = 15000
    max_correspondence_mm: float = 10.0
    max_iterations: int = 50
    tolerance: float = 1e-6
    seed: int = 0

    def __post_init__(self):
        if not (self.crop_radius_mm > 0 and self.samples > 0 and self.max_correspondence_mm > 0
                and self.max_iterations >= 1):
            raise ValueError("NowConfig: crop_radius_mm, samples, max_correspondence_mm and "
                             "max_iterations must be positive")


@dataclass(frozen=True)
class NowResult:
    """median_mm, mean_mm, std_mm: the cropped scan's distances to the aligned mesh (mm, the
    scan's units); scale: of the alignment (1 for the metric variant); landmark_rms_mm: the 7
    landmarks' RMS distance after the landmark similarity alone; points: cropped scan points;
    metric: which variant."""

    median_mm: float
    mean_mm: float
    std_mm: float
    scale: float
    landmark_rms_mm: float
    points: int
    metric: bool

    def summary(self) -> dict:
        return {"median_mm": self.median_mm, "mean_mm": self.mean_mm, "std_mm": self.std_mm,
                "scale": self.scale, "landmark_rms_mm": self.landmark_rms_mm,
                "points": self.points}


def now_scan(vertices, faces, nose_tip, cfg: NowConfig = NowConfig()) -> np.ndarray:
    """(P, 3) the "scan": ``cfg.samples`` points drawn by area on the ground-truth mesh
    (vertices (V, 3), faces (T, 3)), those within ``cfg.crop_radius_mm`` of ``nose_tip``."""
    pts = surface_samples(vertices, faces, cfg.samples, cfg.seed)
    return pts[np.linalg.norm(pts - np.asarray(nose_tip, dtype=np.float64), axis=1)
               <= cfg.crop_radius_mm]


def now_error(scan, scan_landmarks, vertices, faces, landmarks, metric: bool = False,
              cfg: NowConfig = NowConfig()) -> NowResult:
    """The NoW error of a reconstructed mesh (vertices (V, 3), faces (T, 3), its 7
    ``landmarks`` (7, 3) in :data:`NOW_LANDMARK_IDS` order) against ``scan`` (P, 3) with its
    ``scan_landmarks`` (7, 3): the landmarks' similarity (``metric``: rigid), then rigid
    point-to-surface ICP of the scan onto the mesh. A ValueError when a landmark is
    not finite, the mesh is empty or no scan point is given."""
    scan = np.asarray(scan, dtype=np.float64)
    lm_scan = np.asarray(scan_landmarks, dtype=np.float64)
    lm = np.asarray(landmarks, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if lm.shape != (len(NOW_LANDMARK_IDS), 3) or lm_scan.shape != lm.shape:
        raise ValueError(f"NoW needs its {len(NOW_LANDMARK_IDS)} landmarks on both sides, got "
                         f"{lm.shape} and {lm_scan.shape}")
    if not (np.isfinite(lm).all() and np.isfinite(lm_scan).all()):
        raise ValueError("NoW needs all 7 landmarks (eye and mouth corners, nose tip); some "
                         "were not reconstructed")
    if len(f) == 0 or len(scan) == 0:
        raise ValueError("NoW needs a mesh with triangles and a non-empty scan")
    # the mesh is aligned to the scan; the ICP below moves the scan onto the mesh, i.e. runs
    # the inverse of that similarity, and the distances are scaled back into the scan's mm
    S0 = umeyama(lm, lm_scan, with_scale=not metric)
    lm_rms = float(np.sqrt(np.mean(np.sum((S0.apply(lm) - lm_scan) ** 2, 1))))
    icp = icp_to_mesh(scan, v, f, S0.inverse(),
                      AlignConfig(with_scale=False,
                                  max_correspondence_mm=cfg.max_correspondence_mm,
                                  max_iterations=cfg.max_iterations,
                                  tolerance=cfg.tolerance))
    T: Sim3 = icp.transform  # scan -> mesh
    _, d, _ = MeshClosestPoint(v, f)(T.apply(scan))
    d = d / T.s
    return NowResult(float(np.median(d)), float(d.mean()), float(d.std()), float(1.0 / T.s),
                     lm_rms, len(scan), metric)


def now_errors(gt_landmark_xyz, gt_vertices, gt_faces, landmarks_xyz, landmark_ids, vertices,
               faces, cfg: NowConfig = NowConfig()) -> dict[str, NowResult | str]:
    """Both variants on a sequence's ground truth: {"now": scale from the landmarks,
    "now_metric": scale 1}, each a :class:`NowResult` or why there is none.

    gt_landmark_xyz: (L, 3) the ground-truth point of each landmark ID; gt_vertices,
    gt_faces: the ground-truth mesh (the scan is drawn on it); landmarks_xyz (N, 3) and
    landmark_ids (N,): the reconstruction's landmark points (NaN rows: not reconstructed);
    vertices, faces: its mesh."""
    gt_lm = np.asarray(gt_landmark_xyz, dtype=np.float64)
    rows = {int(k): i for i, k in enumerate(np.asarray(landmark_ids))}
    if not all(k in rows for k in NOW_LANDMARK_IDS) or max(NOW_LANDMARK_IDS) >= len(gt_lm):
        why = "the landmarks do not include the 7 NoW landmarks"
        return {"now": why, "now_metric": why}
    lm = np.asarray(landmarks_xyz, dtype=np.float64)[[rows[k] for k in NOW_LANDMARK_IDS]]
    scan = now_scan(gt_vertices, gt_faces, gt_lm[NOSE_TIP_ID], cfg)
    out = {}
    for name, metric in (("now", False), ("now_metric", True)):
        try:
            out[name] = now_error(scan, gt_lm[list(NOW_LANDMARK_IDS)], vertices, faces, lm,
                                  metric, cfg)
        except ValueError as e:
            out[name] = str(e)
    return out
