"""Factorisation Structure-from-Motion for landmark tracks: the classical baseline.

The paper's related work [14] (Liang et al.) reconstructs a face from 68 detected landmarks
with Tomasi-Kanade factorisation. This module implements that baseline for landmark tracks
with missing entries (self-occluded landmarks).

Camera model (scaled orthographic, a.k.a. weak perspective), for frame f and landmark p::

    uv[f, p] = s_f * R_f[:2] @ X_p + o_f          (pixels)

with R_f a world -> camera rotation (rows: image u axis, image v axis, viewing direction; the
OpenCV axes of ``facesfm.geometry.camera``), s_f > 0 in pixels per shape unit and o_f (2,)
pixels.

Method
1. Affine factorisation. With every landmark visible this is Tomasi-Kanade: centre each
   image row and take the rank-3 SVD of the (2F, P) measurement matrix. With missing
   entries (the usual case for a turning head) we minimise the same affine objective
   ``sum_visible |uv - (M_f X_p + o_f)|^2`` by alternating least squares (ALS): solve every
   frame's affine camera (M_f (2, 3), o_f) given the points, then every point given the
   cameras, each a small linear least-squares problem; every step lowers the objective.
   ALS starts incrementally: Tomasi-Kanade on the largest fully visible block of frames x
   landmarks, then landmarks seen in >= 2 solved frames are triangulated and frames seeing
   >= 4 solved landmarks are resected, in turn, each only when its linear system is well
   posed. (Starting instead from the SVD of the measurement matrix with missing entries
   filled by their frame's mean, the fallback when there is no such block, leaves ALS in a
   wrong valley once about half the entries are missing.) Frames with fewer than 4 visible
   landmarks and landmarks seen in fewer than 2 frames are left out (flagged in the result).
2. Metric upgrade. Find the symmetric L = Q Q^T with ``m1^T L m1 = m2^T L m2`` and
   ``m1^T L m2 = 0`` for every frame (scaled orthographic rows are orthogonal and of equal
   norm), a homogeneous linear system in the 6 entries of L solved by SVD; an indefinite L
   from noisy data is projected onto the positive definite cone. Then M_f Q = s_f R_f[:2]
   (rows orthonormalised by polar decomposition) and X = Q^-1 X.
3. Gauge. The world frame is rotated so that R_0 = I (frame 0's camera axes), the shape is
   centred on its centroid, and scaled so that mean(s_f) = 1: the shape is measured in the
   pixels of an average frame. The result is therefore defined up to a
   similarity, **and a reflection**: orthographic images cannot tell a shape from its mirror
   image in depth (the Necker ambiguity). :meth:`FactorizationResult.mirrored` gives the
   other solution and :func:`resolve_reflection` picks the one closer to a template shape
   (for faces, e.g. the mean landmark positions of a morphable model).

The metric model is the projection of the affine least-squares fit; it is not re-optimised
under the rotation constraints (with noise-free data both coincide).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from facesfm.geometry.similarity import umeyama

__all__ = [
    "FactorizationConfig",
    "FactorizationResult",
    "factorize",
    "resolve_reflection",
    "weak_perspective_poses",
]


@dataclass(frozen=True)
class FactorizationConfig:
    """max_iterations / tolerance: ALS stops when the RMS residual changes by less than
    ``tolerance`` (relative) or after ``max_iterations`` sweeps (not run with full
    visibility, where the SVD is already optimal).
    camera: "scaled_orthographic" (a scale per frame) or "orthographic" (one scale for all).
    """

    max_iterations: int = 2000
    tolerance: float = 1e-12
    camera: str = "scaled_orthographic"

    def __post_init__(self):
        if self.camera not in ("scaled_orthographic", "orthographic"):
            raise ValueError(
                f"FactorizationConfig.camera must be scaled_orthographic or orthographic, "
                f"got {self.camera!r}"
            )
        if self.max_iterations < 0 or not self.tolerance >= 0:
            raise ValueError("FactorizationConfig: max_iterations and tolerance must be >= 0")


@dataclass(frozen=True)
class FactorizationResult:
    """A scaled-orthographic reconstruction of landmark tracks.

    points:    (P, 3) shape, centred, world frame = frame 0's camera axes (x right, y down,
               z away from the camera), in the pixel units of an average frame. Rows of
               landmarks left out (``point_ok`` False) are NaN.
    rotations: (F, 3, 3) world -> camera rotations (det +1); identity for frame 0.
    scales:    (F,) pixels per shape unit; offsets: (F, 2) pixels (image of the centroid).
    point_ok, frame_ok: (P,), (F,) bool, what took part in the fit.
    residual_px: RMS reprojection error (px) over the visible entries used.
    affine_residual_px: the same for the affine fit (before the metric upgrade).
    iterations: ALS sweeps run (0 with full visibility).
    """

    points: np.ndarray
    rotations: np.ndarray
    scales: np.ndarray
    offsets: np.ndarray
    point_ok: np.ndarray
    frame_ok: np.ndarray
    residual_px: float
    affine_residual_px: float
    iterations: int

    def project(self) -> np.ndarray:
        """(F, P, 2) image positions predicted by the model."""
        x = np.einsum("fij,pj->fpi", self.rotations[:, :2], self.points)
        return self.scales[:, None, None] * x + self.offsets[:, None, :]

    def mirrored(self) -> FactorizationResult:
        """The depth-reversed twin (same images): X -> diag(1, 1, -1) X and each camera's
        first two rows r -> diag(1, 1, -1) r."""
        D = np.array([1.0, 1.0, -1.0])
        pts = self.points * D
        r12 = self.rotations[:, :2] * D
        R = np.concatenate([r12, np.cross(r12[:, 0], r12[:, 1])[:, None]], axis=1)
        return replace(self, points=pts, rotations=R)


def _check_tracks(uv, visible):
    uv = np.asarray(uv.detach().cpu().numpy() if hasattr(uv, "detach") else uv, dtype=np.float64)
    if uv.ndim != 3 or uv.shape[2] != 2:
        raise ValueError(f"uv must be (F, P, 2) landmark tracks, got {uv.shape}")
    if visible is None:
        vis = np.ones(uv.shape[:2], dtype=bool)
    else:
        vis = np.asarray(
            visible.detach().cpu().numpy() if hasattr(visible, "detach") else visible, dtype=bool
        )
        if vis.shape != uv.shape[:2]:
            raise ValueError(f"visible must be {uv.shape[:2]}, got {vis.shape}")
    vis = vis & np.all(np.isfinite(uv), axis=2)
    return uv, vis


def _usable(vis: np.ndarray):
    """Frames with >= 4 landmarks and landmarks in >= 2 frames, pruned until stable."""
    fok = np.ones(vis.shape[0], dtype=bool)
    pok = np.ones(vis.shape[1], dtype=bool)
    while True:
        v = vis & fok[:, None] & pok[None, :]
        nf = v.sum(axis=1) >= 4
        np_ = v.sum(axis=0) >= 2
        if np.array_equal(nf, fok) and np.array_equal(np_, pok):
            return fok, pok
        fok, pok = nf & fok, np_ & pok


def _rms(uv, vis, M, o, X) -> float:
    pred = np.einsum("fij,pj->fpi", M, X) + o[:, None, :]
    r = (pred - uv)[vis]
    return float(np.sqrt(np.mean(np.sum(r * r, axis=1))))


def _svd_init(uv, vis):
    """Tomasi-Kanade on the measurement matrix with missing entries mean-imputed."""
    F, P, _ = uv.shape
    w = vis[:, :, None].astype(np.float64)
    o = (uv * w).sum(axis=1) / w.sum(axis=1)  # (F, 2) centroid of the visible landmarks
    filled = np.where(vis[:, :, None], uv, o[:, None, :]) - o[:, None, :]
    W = filled.transpose(0, 2, 1).reshape(2 * F, P)
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    r = np.sqrt(S[:3])
    M = (U[:, :3] * r).reshape(F, 2, 3)
    X = Vt[:3].T * r
    return M, o, X


def _seed_block(vis: np.ndarray, min_common: int):
    """Frames and landmarks of a fully visible block to start from: grown greedily from each
    frame (adding the frame that keeps most common landmarks), scored by frames x landmarks
    with >= 3 frames and >= ``min_common`` landmarks. None if there is no such block."""
    F = vis.shape[0]
    best, best_score = None, 0
    for start in range(F):
        frames = [start]
        common = vis[start].copy()
        while True:
            counts = np.where(np.isin(np.arange(F), frames), -1, (vis & common).sum(axis=1))
            g = int(np.argmax(counts))
            if counts[g] < min_common:
                break
            frames.append(g)
            common &= vis[g]
            if len(frames) >= 3 and len(frames) * counts[g] > best_score:
                best, best_score = (sorted(frames), common.copy()), len(frames) * counts[g]
    return best


def _tk_block(uv, frames, points):
    """Tomasi-Kanade (rank-3 SVD) on a fully visible block: M (n, 2, 3), o (n, 2), X (m, 3)."""
    W = uv[np.ix_(frames, points)]  # (n, m, 2)
    o = W.mean(axis=1)
    Wc = (W - o[:, None]).transpose(0, 2, 1).reshape(2 * len(frames), -1)
    U, S, Vt = np.linalg.svd(Wc, full_matrices=False)
    r = np.sqrt(S[:3])
    return (U[:, :3] * r).reshape(len(frames), 2, 3), o, Vt[:3].T * r


def _well_posed(A: np.ndarray) -> np.ndarray:
    """Whether each symmetric PSD matrix (..., k, k) is far from singular."""
    ev = np.linalg.eigvalsh(A)
    return ev[..., 0] > 1e-8 * np.maximum(ev[..., -1], 1e-300)


def _incremental_init(uv, vis):
    """Start from the best fully visible block (Tomasi-Kanade), then alternately triangulate
    landmarks seen in >= 2 solved frames and resect frames seeing >= 4 solved landmarks, each
    only when its linear system is well posed. Returns None when no seed block exists or some
    frame or landmark stays unsolved (the caller falls back to mean imputation)."""
    seed = _seed_block(vis, min_common=6)
    if seed is None:
        return None
    frames, common = seed
    F, P = vis.shape
    M = np.zeros((F, 2, 3))
    o = np.zeros((F, 2))
    X = np.zeros((P, 3))
    fk = np.zeros(F, dtype=bool)
    pk = np.zeros(P, dtype=bool)
    pts = np.flatnonzero(common)
    M[frames], o[frames], X[pts] = _tk_block(uv, frames, pts)
    fk[frames] = True
    pk[pts] = True
    while not (fk.all() and pk.all()):
        w = (vis & fk[:, None]).astype(np.float64)
        B = np.einsum("fp,fki,fkj->pij", w, M, M)
        c = np.einsum("fp,fki,fpk->pi", w, M, uv - o[:, None, :])
        newp = ~pk & (w.sum(axis=0) >= 2) & _well_posed(B)
        if newp.any():
            X[newp] = np.linalg.solve(B[newp], c[newp][:, :, None])[:, :, 0]
            pk |= newp
        w = (vis & pk[None, :]).astype(np.float64)
        Xh = np.concatenate([X, np.ones((P, 1))], axis=1)
        A = np.einsum("fp,pi,pj->fij", w, Xh, Xh)
        b = np.einsum("fp,pi,fpk->fik", w, Xh, uv)
        newf = ~fk & (w.sum(axis=1) >= 4) & _well_posed(A)
        if newf.any():
            sol = np.linalg.solve(A[newf], b[newf])
            M[newf] = sol[:, :3].transpose(0, 2, 1)
            o[newf] = sol[:, 3]
            fk |= newf
        if not (newp.any() or newf.any()):
            return None
    return M, o, X


def _normalise_gauge(M, o, X):
    """Centre and whiten X (keeps ALS well conditioned); the images are unchanged."""
    mu = X.mean(axis=0)
    o = o + M @ mu
    Xc = X - mu
    C = Xc.T @ Xc / len(Xc)
    Lc = np.linalg.cholesky(C + 1e-300 * np.eye(3))
    X = np.linalg.solve(Lc, Xc.T).T
    M = M @ Lc
    return M, o, X


def _als(uv, vis, M, o, X, max_iterations, tolerance):
    w = vis.astype(np.float64)
    prev = _rms(uv, vis, M, o, X)
    it = 0
    for it in range(1, max_iterations + 1):
        # cameras: [M_f | o_f] from sum_p w (uv - M X - o)^2, a 4x4 system per frame
        Xh = np.concatenate([X, np.ones((len(X), 1))], axis=1)  # (P, 4)
        A = np.einsum("fp,pi,pj->fij", w, Xh, Xh)
        b = np.einsum("fp,pi,fpk->fik", w, Xh, uv)  # (F, 4, 2)
        sol = np.linalg.solve(A, b)  # (F, 4, 2)
        M = sol[:, :3].transpose(0, 2, 1)
        o = sol[:, 3]
        # points: X_p from sum_f w |M_f X_p - (uv - o_f)|^2, a 3x3 system per point
        B = np.einsum("fp,fki,fkj->pij", w, M, M)
        c = np.einsum("fp,fki,fpk->pi", w, M, uv - o[:, None, :])
        X = np.linalg.solve(B, c[:, :, None])[:, :, 0]
        M, o, X = _normalise_gauge(M, o, X)
        cur = _rms(uv, vis, M, o, X)
        if abs(prev - cur) <= tolerance * max(prev, 1e-300) or cur < 1e-12:
            break
        prev = cur
    return M, o, X, it


def _sym_coeffs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows c with c @ [L11, L12, L13, L22, L23, L33] = a^T L b for symmetric L; a, b (n, 3)."""
    return np.stack(
        [
            a[:, 0] * b[:, 0],
            a[:, 0] * b[:, 1] + a[:, 1] * b[:, 0],
            a[:, 0] * b[:, 2] + a[:, 2] * b[:, 0],
            a[:, 1] * b[:, 1],
            a[:, 1] * b[:, 2] + a[:, 2] * b[:, 1],
            a[:, 2] * b[:, 2],
        ],
        axis=1,
    )


def _metric_upgrade(M: np.ndarray, camera: str) -> np.ndarray:
    """Q (3, 3) with M_f Q ~ s_f * (2 orthonormal rows) for every frame."""
    m1, m2 = M[:, 0], M[:, 1]
    if camera == "scaled_orthographic":
        A = np.concatenate([_sym_coeffs(m1, m1) - _sym_coeffs(m2, m2), _sym_coeffs(m1, m2)])
    else:  # one scale for all frames: every row has the norm of frame 0's first row
        r0 = np.repeat(m1[:1], len(M), axis=0)
        A = np.concatenate(
            [
                _sym_coeffs(m1, m1) - _sym_coeffs(r0, r0),
                _sym_coeffs(m2, m2) - _sym_coeffs(r0, r0),
                _sym_coeffs(m1, m2),
            ]
        )
    _, _, Vt = np.linalg.svd(A)
    l = Vt[-1]
    L = np.array([[l[0], l[1], l[2]], [l[1], l[3], l[4]], [l[2], l[4], l[5]]])
    if np.trace(L) < 0:
        L = -L
    ev, V = np.linalg.eigh(L)
    ev = np.maximum(ev, ev.max() * 1e-9)  # project onto the positive definite cone
    return V * np.sqrt(ev)


def factorize(
    uv, visible=None, config: FactorizationConfig = FactorizationConfig()
) -> FactorizationResult:
    """Scaled-orthographic factorisation SfM of landmark tracks with missing data.

    uv:      (F, P, 2) landmark pixel positions (u right, v down); entries of landmarks not
             seen in a frame are ignored (may be NaN).
    visible: (F, P) bool, which entries were observed (None: all finite entries).
    Returns a :class:`FactorizationResult` (shape up to similarity and depth reflection).
    """
    uv_all, vis_all = _check_tracks(uv, visible)
    fok, pok = _usable(vis_all)
    if fok.sum() < 3 or pok.sum() < 4:
        raise ValueError(
            f"factorize needs >= 3 frames with >= 4 landmarks and >= 4 landmarks seen twice; "
            f"usable: {int(fok.sum())} frames, {int(pok.sum())} landmarks"
        )
    uv = uv_all[fok][:, pok]
    vis = vis_all[fok][:, pok]
    uv = np.where(vis[:, :, None], uv, 0.0)
    init = None if vis.all() else _incremental_init(uv, vis)
    M, o, X = _svd_init(uv, vis) if init is None else init
    M, o, X = _normalise_gauge(M, o, X)
    iters = 0
    if not vis.all():
        M, o, X, iters = _als(uv, vis, M, o, X, config.max_iterations, config.tolerance)
    affine_rms = _rms(uv, vis, M, o, X)

    Q = _metric_upgrade(M, config.camera)
    Mq = M @ Q
    Xq = np.linalg.solve(Q, X.T).T
    U, S, Vt = np.linalg.svd(Mq)  # polar decomposition of each 2x3 camera
    r12 = U @ Vt[:, :2]  # (F, 2, 3), orthonormal rows
    s = S.mean(axis=1) if config.camera == "scaled_orthographic" else np.full(len(S), S.mean())
    R = np.concatenate([r12, np.cross(r12[:, 0], r12[:, 1])[:, None]], axis=1)
    # gauge: frame 0's axes, centroid at the origin, mean scale 1
    R0 = R[0].copy()
    R = R @ R0.T
    mu = Xq.mean(axis=0)
    o = o + s[:, None] * np.einsum("fij,j->fi", r12, mu)
    Xq = (Xq - mu) @ R0.T
    k = s.mean()
    Xq = Xq * k
    s = s / k

    F, P = vis_all.shape
    pts = np.full((P, 3), np.nan)
    pts[pok] = Xq
    rot = np.tile(np.eye(3), (F, 1, 1))
    rot[fok] = R
    scales = np.full(F, np.nan)
    scales[fok] = s
    offs = np.full((F, 2), np.nan)
    offs[fok] = o
    res = FactorizationResult(pts, rot, scales, offs, pok, fok, float("nan"), affine_rms, iters)
    pred = res.project()[fok][:, pok]
    r = (pred - uv)[vis]
    return replace(res, residual_px=float(np.sqrt(np.mean(np.sum(r * r, axis=1)))))


def resolve_reflection(result: FactorizationResult, template) -> FactorizationResult:
    """Pick, of ``result`` and its mirror image, the one a similarity maps closer onto
    ``template`` (P, 3) (same landmark order, any frame and scale; NaN rows ignored)."""
    t = np.asarray(template, dtype=np.float64)
    if t.shape != result.points.shape:
        raise ValueError(f"template must be {result.points.shape}, got {t.shape}")
    ok = result.point_ok & np.all(np.isfinite(t), axis=1)

    def cost(r: FactorizationResult) -> float:
        S = umeyama(r.points[ok], t[ok])
        return float(np.sum((S.apply(r.points[ok]) - t[ok]) ** 2))

    mirror = result.mirrored()
    return result if cost(result) <= cost(mirror) else mirror


def weak_perspective_poses(result: FactorizationResult, K) -> np.ndarray:
    """Perspective cam_T_world (F, 4, 4) approximating each weak-perspective camera.

    A camera at depth Z_f = fx / s_f (shape units) whose principal ray meets the shape's
    centroid at its image ``offsets[f]``: ``t = Z_f * ((o - c) / f, 1)``. K: (3, 3) intrinsics
    (square pixels assumed: fx is used for both axes). Frames not fitted get NaN poses.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {K.shape}")
    f, c = K[0, 0], K[:2, 2]
    Z = f / result.scales
    T = np.tile(np.eye(4), (len(Z), 1, 1))
    T[:, :3, :3] = result.rotations
    T[:, :2, 3] = (result.offsets - c) / f * Z[:, None]
    T[:, 2, 3] = Z
    return T
