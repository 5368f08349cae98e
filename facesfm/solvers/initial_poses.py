"""Initial camera poses for the bundle adjustment without a pose network: a factorisation of
the landmark tracks (:func:`landmark_poses`), the built-in mean face posed per frame
(:func:`template_poses`), or ground truth moved by a known amount (:func:`perturbed_poses`).

Poses are (F, 4, 4) float64 ``cam_T_world`` (mm); NaN poses mark frames a method cannot place.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from facesfm.errors import InputError
from facesfm.geometry.similarity import rms_radius, umeyama
from facesfm.solvers.baselines import (
    SEMANTIC_LANDMARKS,
    factorization_baseline,
    template_landmarks,
)
from facesfm.solvers.landmark_ba import Landmarks
from facesfm.solvers.problem import BAState
from facesfm.solvers.synthetic import perturb_state

__all__ = ["landmark_poses", "perturbed_poses", "template_poses"]


def perturbed_poses(poses: np.ndarray, rot_deg: float, trans_mm: float, seed: int,
                    fixed_frame: int = 0) -> np.ndarray:
    """Every pose but ``fixed_frame`` moved by a random rotation of exactly ``rot_deg`` and a
    translation of ``trans_mm`` (camera frame), seeded (facesfm.solvers.synthetic)."""
    st = perturb_state(BAState(torch.as_tensor(poses, dtype=torch.float64)), seed=seed,
                       rot_deg=rot_deg, trans_mm=trans_mm, point_mm=0.0,
                       fixed_frame=fixed_frame)
    return st.poses.numpy()


def landmark_poses(K: np.ndarray, lm: Landmarks) -> np.ndarray:
    """(F, 4, 4) initial cam_T_world from the landmark tracks alone: Tomasi-Kanade
    factorisation (scaled orthographic, :func:`facesfm.solvers.baselines.factorization_baseline`)
    turned into weak-perspective poses, scaled to about mm.

    Both the depth reflection and the scale are taken from the built-in model's mean face
    (:func:`facesfm.solvers.baselines.template_landmarks`) over the 68 semantic landmarks (IDs
    below 68 mark the same facial point on every model; the dense IDs after them do not: on
    an ICT face a similarity fit over all 200 gave a scale of 0.21, over the 68 1.00). With
    fewer than 6 semantic landmarks factorised, the first N template landmarks resolve the
    reflection and the ratio of RMS radii gives the scale (only for IDs of the template; others,
    e.g. MediaPipe's, raise InputError then). The true scale is unknown; about
    mm is what fusion's voxel sizes assume.

    Frames the factorisation cannot place (too few landmarks shared with the others) get NaN
    poses. World frame: frame 0's camera axes, landmark centroid at the origin. Raises
    InputError when too few frames or landmarks are usable at all.
    """
    ids = np.asarray(lm.ids, dtype=np.int64)
    vis = lm.weight > 0
    semantic = np.full((len(ids), 3), np.nan)
    is_sem = (ids >= 0) & (ids < SEMANTIC_LANDMARKS)  # other IDs may lie beyond the template
    semantic[is_sem] = template_landmarks(SEMANTIC_LANDMARKS)[ids[is_sem]]
    sem_seen = np.isfinite(semantic).all(1) & (vis.sum(0) >= 2)
    use_sem = sem_seen.sum() >= 6

    def by_id():
        try:
            return template_landmarks(int(ids.max()) + 1)[ids]
        except ValueError:
            raise InputError(f"--poses-init landmarks: {int(sem_seen.sum())} semantic landmarks "
                             f"(IDs below {SEMANTIC_LANDMARKS}) seen twice or more, 6 needed, "
                             f"and the other IDs are not on the built-in model's template"
                             ) from None

    base = factorization_baseline(lm.uv, vis, K, semantic if use_sem else by_id())
    X = base.points
    ok = np.all(np.isfinite(X), 1)
    if ok.sum() < 4:
        raise InputError(f"--poses-init landmarks: only {int(ok.sum())} landmarks were "
                         f"factorised (>= 4 needed)")
    sel = ok & np.isfinite(semantic).all(1)
    if use_sem and sel.sum() >= 6:
        s = umeyama(X[sel], semantic[sel]).s
    else:
        s = rms_radius(by_id()[ok]) / rms_radius(X[ok])
    poses = base.cam_T_world.copy()
    poses[:, :3, 3] *= s
    return poses


def _rodrigues(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotation exp(w) (3, 3) of a rotation vector and its left Jacobian J_l(w), for which
    ``exp(w + dw) = exp(J_l(w) dw) exp(w)`` to first order (series near 0)."""
    th2 = float(w @ w)
    W = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    if th2 < 1e-10:
        A, B, C = 1.0 - th2 / 6.0, 0.5 - th2 / 24.0, 1.0 / 6.0 - th2 / 120.0
    else:
        th = np.sqrt(th2)
        A, B, C = np.sin(th) / th, (1.0 - np.cos(th)) / th2, (th - np.sin(th)) / (th2 * th)
    W2 = W @ W
    eye = np.eye(3)
    return eye + A * W + B * W2, eye + B * W + C * W2


def _reprojection(x: np.ndarray, X: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(2n,) pixel residuals of points X (n, 3) seen by the pose x = (rotation vector,
    translation) through K, against uv (n, 2)."""
    Xc = X @ _rodrigues(x[:3])[0].T + x[3:]
    z = np.maximum(Xc[:, 2], 1e-6)
    return (np.c_[K[0, 0] * Xc[:, 0] / z + K[0, 2], K[1, 1] * Xc[:, 1] / z + K[1, 2]]
            - uv).ravel()


def _reprojection_jacobian(x, X, uv, K) -> np.ndarray:
    """(2n, 6) exact Jacobian of :func:`_reprojection`: d(R X)/dw = -[R X]x J_l(w)."""
    R, Jl = _rodrigues(x[:3])
    RX = X @ R.T
    Xc = RX + x[3:]
    z = Xc[:, 2]
    zi = 1.0 / np.maximum(z, 1e-6)
    dzi = np.where(z > 1e-6, zi * zi, 0.0)  # the clamped depth has no derivative
    n = len(X)
    dproj = np.zeros((n, 2, 3))  # d(u, v)/d(camera point)
    dproj[:, 0, 0] = K[0, 0] * zi
    dproj[:, 0, 2] = -K[0, 0] * Xc[:, 0] * dzi
    dproj[:, 1, 1] = K[1, 1] * zi
    dproj[:, 1, 2] = -K[1, 1] * Xc[:, 1] * dzi
    hat_rx = np.zeros((n, 3, 3))
    hat_rx[:, 0, 1], hat_rx[:, 0, 2] = -RX[:, 2], RX[:, 1]
    hat_rx[:, 1, 0], hat_rx[:, 1, 2] = RX[:, 2], -RX[:, 0]
    hat_rx[:, 2, 0], hat_rx[:, 2, 1] = -RX[:, 1], RX[:, 0]
    J = np.concatenate([dproj @ (-hat_rx @ Jl), dproj], axis=2)  # (n, 2, 6)
    return J.reshape(2 * n, 6)


def template_poses(K: np.ndarray, lm: Landmarks, min_points: int = 6) -> np.ndarray:
    """(F, 4, 4) initial cam_T_world of each frame on its own: the pose of the built-in mean
    face (:func:`facesfm.solvers.baselines.template_landmarks`) that best explains the frame's
    semantic landmarks (IDs below 68, the same facial point on every face model).

    Per frame: an affine camera fitted to the template by least squares gives a
    weak-perspective pose (its rotation's first two rows, the third their cross product, so
    there is no depth reflection to resolve), refined by a robust perspective least squares
    (soft-L1, 3 px). The world is the mean face's frame, mm; the face's true shape differs, so
    these poses are a start for the BA, a few degrees off. Frames with fewer than
    ``min_points`` semantic landmarks get NaN poses.
    """
    ids = np.asarray(lm.ids, dtype=np.int64)
    sem = np.flatnonzero(ids < SEMANTIC_LANDMARKS)
    F = lm.uv.shape[0]
    out = np.full((F, 4, 4), np.nan)
    if len(sem) < min_points:
        return out
    tmpl = template_landmarks(SEMANTIC_LANDMARKS)[ids[sem]]
    f_, c = K[0, 0], K[:2, 2]
    for f in range(F):
        vis = lm.weight[f, sem] > 0
        if vis.sum() < min_points:
            continue
        X, uv = tmpl[vis], lm.uv[f, sem[vis]]
        P, *_ = np.linalg.lstsq(np.c_[X, np.ones(len(X))], uv, rcond=None)
        A, b = P[:3].T, P[3]
        U, S, Vt = np.linalg.svd(A, full_matrices=False)
        R2 = U @ Vt
        R = np.vstack([R2, np.cross(R2[0], R2[1])])
        scl = S.mean()
        if not scl > 0:
            continue
        t0 = np.r_[(b - c) / scl, f_ / scl]

        x0 = np.r_[Rotation.from_matrix(R).as_rotvec(), t0]
        sol = least_squares(_reprojection, x0, jac=_reprojection_jacobian, loss="soft_l1",
                            f_scale=3.0, max_nfev=50, args=(X, uv, K))
        T = np.eye(4)
        T[:3, :3] = _rodrigues(sol.x[:3])[0]
        T[:3, 3] = sol.x[3:]
        if T[2, 3] > 0:
            out[f] = T
    return out
