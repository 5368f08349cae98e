"""Classical baselines that reconstruct a face's 3D landmarks (and cameras) from landmark
TRACKS only (no networks), for ``facesfm eval``.

``factorization``
    Tomasi-Kanade factorisation with missing data (:func:`facesfm.solvers.factorization.factorize`,
    the paper's related work [14]) on the tracks, scaled-orthographic cameras. Its depth
    reflection (Necker ambiguity) is resolved against a *template*: the landmarks of the
    built-in model's neutral shape (``BuiltinFaceModel().template``), never the evaluated face.
    Shape units are pixels of an average frame (scale unknown); the cameras are turned into
    perspective poses by :func:`facesfm.solvers.factorization.weak_perspective_poses`.
``colmap_ba``
    A COLMAP user's pipeline on the same tracks: the factorisation poses above as the
    initialisation, DLT triangulation of every landmark from its widest baseline, then Ceres
    bundle adjustment through pycolmap (:class:`facesfm.solvers.colmap_baseline.ColmapBaseline`,
    first camera fixed, intrinsics fixed). Metric scale is unknown (gauge of the
    initialisation); evaluate after a Sim3 alignment.

Both return a :class:`BaselineResult` in their own world frame (unknown similarity).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

from facesfm.errors import InputError
from facesfm.faces.builtin import BuiltinFaceModel
from facesfm.solvers.factorization import factorize, resolve_reflection, weak_perspective_poses
from facesfm.solvers.problem import BAProblem, BAState, SolverError

__all__ = [
    "METHODS",
    "BaselineResult",
    "colmap_ba",
    "factorization_baseline",
    "run_baseline",
    "template_landmarks",
]


@dataclass(frozen=True)
class BaselineResult:
    """A landmark-track reconstruction, in the method's own frame (unknown similarity).

    method:      method name.
    points:      (L, 3) landmark positions for landmark ids 0..L-1; NaN rows = not
                 reconstructed (seen in < 2 usable frames).
    cam_T_world: (F, 4, 4) camera poses (OpenCV, cam_T_world) or None; NaN for frames left
                 out.
    timings:     seconds per step ({"total": ...} at least).
    info:        scalars about the fit (reprojection RMS px, iterations, ...).
    """

    method: str
    points: np.ndarray
    cam_T_world: np.ndarray | None
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _check_tracks(uv, visible, K):
    uv = np.asarray(uv, dtype=np.float64)
    vis = np.asarray(visible, dtype=bool)
    K = np.asarray(K, dtype=np.float64)
    if uv.ndim != 3 or uv.shape[2] != 2:
        raise ValueError(f"uv must be (F, L, 2), got {uv.shape}")
    if vis.shape != uv.shape[:2]:
        raise ValueError(f"visible must be {uv.shape[:2]}, got {vis.shape}")
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    if not np.all(np.isfinite(uv[vis])):
        raise ValueError("visible landmark observations must be finite")
    return uv, vis, K


@functools.lru_cache(maxsize=1)
def _builtin_template() -> np.ndarray:
    m = BuiltinFaceModel(texture_size=0)
    return m.template[m.landmark_vertices].copy()


#: landmark IDs below this mark the same facial point on every face model
SEMANTIC_LANDMARKS = 68


def template_landmarks(count: int) -> np.ndarray:
    """(count, 3) mm: landmarks 0..count-1 of the built-in model's neutral shape (identity and
    expression coefficients zero), the reflection template of the factorisation. It is a mean
    face, not the ground truth of any evaluated face (sampled faces have random identity)."""
    t = _builtin_template()
    if not 1 <= count <= len(t):
        raise ValueError(f"template has {len(t)} landmarks, asked for {count}")
    return t[:count]


def factorization_baseline(uv, visible, K, template=None) -> BaselineResult:
    """Tomasi-Kanade factorisation of the landmark tracks (scaled orthographic).

    uv: (F, L, 2) pixels; visible: (F, L) bool; K: (3, 3) intrinsics (for the approximate
    perspective poses). template: (L, 3) shape to resolve the depth reflection, NaN rows ignored
    (default: the mean face over the 68 semantic landmarks,
    :func:`template_landmarks`). Returns points (L, 3) in pixel-of-an-average-frame units and
    weak-perspective cam_T_world (F, 4, 4).
    """
    uv, vis, K = _check_tracks(uv, visible, K)
    t0 = time.perf_counter()
    if template is None:
        # only the 68 semantic IDs are the same facial point on every face model; the dense
        # IDs after them are model-specific, so they must not vote on the depth flip
        template = template_landmarks(uv.shape[1]).copy()
        if len(template) > SEMANTIC_LANDMARKS:
            template[SEMANTIC_LANDMARKS:] = np.nan
    else:
        template = np.asarray(template)
    try:
        res = factorize(np.where(vis[..., None], uv, np.nan), vis)
    except ValueError as e:
        raise InputError(f"factorization: {e}") from None
    res = resolve_reflection(res, template)
    poses = weak_perspective_poses(res, K)
    poses[~res.frame_ok] = np.nan
    dt = time.perf_counter() - t0
    return BaselineResult(
        "factorization", res.points.copy(), poses, {"total": dt},
        {"residual_px": res.residual_px, "affine_residual_px": res.affine_residual_px,
         "iterations": res.iterations, "frames_used": int(res.frame_ok.sum()),
         "landmarks_used": int(res.point_ok.sum())},
    )


def colmap_ba(uv, visible, K, template=None, max_iterations: int = 100) -> BaselineResult:
    """Triangulation + Ceres BA (pycolmap) of the landmark tracks, initialised by
    :func:`factorization_baseline` (its usable frames; the first of them is held fixed).

    uv: (F, L, 2) pixels; visible: (F, L) bool; K: (3, 3). Returns points (L, 3) and cam_T_world
    (F, 4, 4) in the initialisation's frame and scale; NaN where not reconstructed.
    Raises InputError without pycolmap (install hint) and when too little is seen.
    """
    import torch

    from facesfm.solvers.colmap_baseline import ColmapBaseline

    uv, vis, K = _check_tracks(uv, visible, K)
    t0 = time.perf_counter()
    init = factorization_baseline(uv, vis, K, template)
    t_init = time.perf_counter() - t0
    fok = np.all(np.isfinite(init.cam_T_world.reshape(len(uv), -1)), axis=1)
    v = vis & fok[:, None]
    pok = v.sum(0) >= 2
    if fok.sum() < 2 or pok.sum() < 3:
        raise InputError(f"colmap_ba: too few usable frames ({int(fok.sum())}) or landmarks "
                         f"seen twice ({int(pok.sum())})")
    fi, pi = np.nonzero(fok)[0], np.nonzero(pok)[0]
    sub_uv = np.where(v[fi][:, pi, None], uv[fi][:, pi], 0.0)
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)
    problem = BAProblem(K=T(np.repeat(K[None], len(fi), 0)), uv=T(sub_uv),
                        weight=T(v[fi][:, pi].astype(np.float64)))
    pts0 = np.nan_to_num(init.points[pi])  # ignored: ColmapBaseline triangulates
    try:
        res = ColmapBaseline(max_iterations=max_iterations).solve(
            problem, BAState(T(init.cam_T_world[fi]), T(pts0)))
    except SolverError as e:
        raise InputError(f"colmap_ba: {e}") from None
    points = np.full((uv.shape[1], 3), np.nan)
    points[pi] = res.state.points.numpy()
    poses = np.full((len(uv), 4, 4), np.nan)
    poses[fi] = res.state.poses.numpy()
    timings = {"init": t_init, **{k: float(x) for k, x in res.timings.items()},
               "total": time.perf_counter() - t0}
    return BaselineResult(
        "colmap_ba", points, poses, timings,
        {"rms_px": res.rms_px, "iterations": res.iterations, "converged": res.converged,
         "init_residual_px": init.info["residual_px"], "frames_used": len(fi),
         "landmarks_used": len(pi)},
    )


METHODS = {"colmap_ba": colmap_ba, "factorization": factorization_baseline}


def run_baseline(method: str, uv, visible, K) -> BaselineResult:
    """Run the baseline named ``method`` (a key of :data:`METHODS`) on landmark tracks."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[method](uv, visible, K)
