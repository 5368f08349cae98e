"""A solve's accuracy against the ground truth of the sequence it was run on.

``facesfm solve`` calls :func:`evaluate_against_gt` when its input is a sequence folder with
ground truth (``report.json``'s ``evaluation``). Inputs are the solve's plain arrays, in the
solve's world frame (mm): poses (F, 4, 4) ``cam_T_world`` of the frames it kept, landmark
points (N, 3), the fused cloud (P, 3) and the mesh vertices (V, 3).
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from facesfm.eval.align import AlignConfig, AlignmentError, align_reconstruction
from facesfm.eval.metrics import point_to_surface_distances, pose_errors
from facesfm.eval.now import now_errors
from facesfm.eval.results import AlignmentFit, Completeness, Distances, SolveEvaluation
from facesfm.geometry.multiview import depth_to_points
from facesfm.geometry.similarity import rms_radius, umeyama

__all__ = ["evaluate_against_gt", "gt_completeness"]


def evaluate_against_gt(seq, kept: np.ndarray, poses_initial: np.ndarray,
                        poses_optimised: np.ndarray, landmarks_xyz: np.ndarray,
                        landmark_ids: np.ndarray, cloud_points: np.ndarray,
                        mesh_vertices: np.ndarray, max_points: int = 5000,
                        mesh_faces: np.ndarray | None = None) -> SolveEvaluation:
    """Pose errors (initial and optimised vs GT) and cloud / mesh accuracy after Umeyama
    (landmarks) + point-to-surface ICP alignment to the GT mesh (mm); the cloud's accuracy
    also at the landmarks' scale with rigid ICP (``*_landmark_scale``). When the landmark IDs
    do not mark the sequence's points (a user mesh, the other model's detector: see
    ``alignment_start``), the alignment starts from the cameras' similarity to the GT
    cameras instead, and ``*_landmark_scale`` is at that similarity's scale. With
    ``mesh_faces`` and landmark IDs that mark the sequence's points, the mesh's errors under
    the NoW benchmark's protocol too (``now``: scale free, ``now_metric``: scale fixed;
    :mod:`facesfm.eval.now`).

    seq: the :class:`facesfm.data.format.Sequence` solved; kept: (F_in,) bool, its frames the
    solve used (the poses' rows); landmark_ids: (N,) the sequence's landmark ID of each row of
    ``landmarks_xyz`` (NaN rows: not reconstructed).
    """
    ev = SolveEvaluation()
    gt = seq.cam_T_world[kept]
    if len(gt) >= 3:
        for name, P in (("poses_initial", poses_initial), ("poses_optimised", poses_optimised)):
            try:
                setattr(ev, name, pose_errors(P, gt, "sim3"))
            except ValueError as e:
                ev.errors[name] = str(e)
    mesh_path = seq.root / "mesh.ply"
    if not mesh_path.is_file():
        return ev
    gm = trimesh.load(mesh_path, process=False)
    gv, gf = np.asarray(gm.vertices, dtype=np.float64), np.asarray(gm.faces, dtype=np.int64)
    init = _landmark_init(seq, landmarks_xyz, landmark_ids)
    rms = None if init is None else _pair_rms(init)
    # pairs that no similarity brings within 5 mm and a fifth of the GT landmarks' spread
    # cannot be the same points (the right model's detections: 1-3 mm; another model's IDs or
    # a user mesh's farthest-point samples: tens of mm): start from the cameras instead
    if init is None or rms > max(5.0, 0.2 * rms_radius(init[1])):
        ev.alignment_start_why = (
            "no landmark pairs" if init is None else
            f"the landmark IDs do not mark the sequence's points (RMS {rms:.1f} mm after a "
            f"similarity fit)")
        init = _camera_init(cloud_points, poses_optimised, gt)
        ev.alignment_start = "cameras" if init is not None else "centroids"
    else:
        ev.alignment_start = "landmarks"
        if mesh_faces is not None:
            for name, r in now_errors(seq.landmark_xyz, gv, gf, landmarks_xyz, landmark_ids,
                                      mesh_vertices, mesh_faces).items():
                if isinstance(r, str):
                    ev.errors[name] = r
                else:
                    setattr(ev, name, r)
    if init is not None:
        # Second protocol: the scale of the landmarks, rigid ICP. It cannot shrink a noisy
        # cloud (a free ICP scale does, which flatters it; down to a collapse).
        try:
            al_lm = align_reconstruction(
                cloud_points, gv, gf, init,
                AlignConfig(max_points=max_points, max_correspondence_mm=10.0, icp_scale=False))
        except AlignmentError as e:
            ev.errors["alignment_landmark_scale"] = str(e)
        else:
            ev.alignment_landmark_scale = _fit(al_lm)
            ev.cloud_landmark_scale = Distances.of(
                point_to_surface_distances(al_lm.aligned, gv, gf))
    try:
        al = align_reconstruction(cloud_points, gv, gf, init,
                                  AlignConfig(max_points=max_points, max_correspondence_mm=10.0))
    except AlignmentError as e:
        ev.errors["alignment"] = str(e)
        return ev
    ev.alignment = _fit(al)
    ev.cloud = Distances.of(point_to_surface_distances(al.aligned, gv, gf))
    ev.mesh = Distances.of(point_to_surface_distances(al.transform.apply(mesh_vertices), gv, gf))
    ev.completeness = gt_completeness(seq, kept, al.aligned)
    return ev


def _fit(al) -> AlignmentFit:
    return AlignmentFit(float(al.transform.s), al.fitness, al.inlier_rmse)


def _landmark_init(seq, X: np.ndarray, ids: np.ndarray):
    """(reconstructed, GT) landmark pairs, or None with fewer than 3 (IDs the sequence does
    not store are left out)."""
    ids = np.asarray(ids, dtype=np.int64)
    ok = np.all(np.isfinite(X), 1) & (ids >= 0) & (ids < len(seq.landmark_xyz))
    return (X[ok], seq.landmark_xyz[ids[ok]]) if ok.sum() >= 3 else None


def _pair_rms(pairs) -> float:
    S = umeyama(*pairs)
    return float(np.sqrt(np.mean(np.sum((S.apply(pairs[0]) - pairs[1]) ** 2, 1))))


def _camera_init(points: np.ndarray, poses: np.ndarray, gt: np.ndarray, n: int = 2000):
    """Point pairs that carry the similarity aligning the solve's cameras to the GT ones
    (None with fewer than 3 frames or a degenerate trajectory)."""
    if len(gt) < 3 or len(points) < 3:
        return None
    try:
        S = pose_errors(poses, gt, "sim3").gauge
    except ValueError:
        return None
    P = points[np.linspace(0, len(points) - 1, min(n, len(points))).astype(int)]
    return P, S.apply(P)


def gt_completeness(seq, kept: np.ndarray, aligned: np.ndarray, threshold_mm: float = 2.0,
                    stride: int = 4) -> Completeness:
    """How much of the face the cameras saw the cloud covers: the GT surface points of every
    used frame (``kept``: GT depth inside the GT face mask, every ``stride``-th pixel, placed
    with the GT poses) that have an ``aligned`` cloud point (P, 3, GT world) within
    ``threshold_mm``. The counterpart of the cloud's accuracy: a cloud that drops points gains
    accuracy and loses completeness."""
    K = seq.K
    pts = []
    for i in np.flatnonzero(kept):
        d = seq.depth(i)
        X, _, _ = depth_to_points(d, K, seq.mask(i) & (d > 0), stride, normals=False)
        R, t = seq.cam_T_world[i, :3, :3], seq.cam_T_world[i, :3, 3]
        pts.append((X - t) @ R)
    P = np.concatenate(pts) if pts else np.zeros((0, 3))
    if len(P) == 0:
        return Completeness(threshold_mm, float("nan"), 0)
    dist, _ = cKDTree(aligned).query(P)
    return Completeness(threshold_mm, float((dist < threshold_mm).mean()), len(P))
