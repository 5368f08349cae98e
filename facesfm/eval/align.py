"""Aligning a reconstruction to its ground truth: Umeyama similarity, then ICP.

Frames and units: every point set here is (N, 3) float64 in millimetres. A :class:`Sim3`
maps points of a *source* frame (the reconstruction, or an estimated trajectory) into the
*target* frame (the ground-truth world of ``facesfm.geometry.camera``):
``x_tgt = s * R @ x_src + t``.

The paper (sections 5.5-5.6) aligns each reconstructed point cloud to its ground-truth scan
with ICP before measuring point-to-point distances. We initialise ICP with a similarity
estimated from landmark correspondences when they are known (reconstructed landmark points
against the ground-truth landmark vertices), otherwise from the centroids, then refine with
ICP (optionally estimating scale) restricted to correspondences closer than a maximum
distance in mm. Three ICP flavours (:class:`AlignConfig` ``method``):

* ``point_to_surface`` (default): Gauss-Newton on the distance to the exact closest points
  of the GT *triangles*; unbiased by the mesh resolution and converges in a few steps.
* ``point_to_point``: the classic ICP against GT vertices (plus surface samples); open3d's
  ``registration_icp`` or an equivalent numpy loop, which give the same answer.
* ``point_to_plane``: rigid, linearised against GT vertex normals.

open3d (``pip install 'facesfm[open3d]'``) is optional: every method also runs on a numpy /
scipy reference path, used when open3d is missing or ``backend="numpy"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial import cKDTree

from facesfm.eval.surface import MeshClosestPoint
from facesfm.geometry.mesh import vertex_normals
from facesfm.geometry.similarity import Sim3, as_points, rms_radius, umeyama
from facesfm.optional import have_open3d, require_open3d

__all__ = [
    "AlignConfig",
    "AlignResult",
    "AlignmentError",
    "IcpResult",
    "Sim3",
    "align_reconstruction",
    "have_open3d",
    "icp",
    "icp_to_mesh",
    "require_open3d",
    "rms_radius",
    "surface_samples",
    "umeyama",
]

ICP_BACKENDS = ("auto", "open3d", "numpy")
ICP_METHODS = ("point_to_surface", "point_to_point", "point_to_plane")
@dataclass(frozen=True)
class AlignConfig:
    """How a reconstruction is registered to its ground truth.

    with_scale:          estimate a scale in the landmark initialisation and in ICP (a
                         monocular reconstruction is only defined up to scale).
    icp_scale:           with ``with_scale``: ICP refines the scale too (True, the default), or
                         keeps the scale of the landmark initialisation and refines only the
                         rotation and translation (False). A free ICP scale fits the cloud
                         best, but on a noisy cloud it can shrink it (down to a collapse); the
                         landmark scale cannot drift, and is the one the reconstruction's own
                         landmarks give (without ``init_pairs`` it is 1).
    max_correspondence_mm: ICP pairs farther apart than this are ignored.
    max_iterations:      ICP iteration cap.
    tolerance:           stop when the relative change of fitness and inlier RMSE both fall
                         below this.
    method:              "point_to_surface" (default): each reconstructed point is paired with
                         its closest point on the ground-truth *triangles*, then the similarity
                         is re-solved by Umeyama; exact for points lying on the surface.
                         "point_to_point" (the classic ICP, as in the paper): pairs with the
                         nearest target *point* (GT vertices plus ``target_samples`` surface
                         samples). "point_to_plane": rigid only, linearised against the GT
                         vertex normals. A bare point cloud (no faces) always uses
                         point_to_point.
    backend:             "auto" (open3d when installed), "open3d" or "numpy".
    target_samples:      extra points sampled evenly on the ground-truth surface and added to
                         its vertices as the ICP target, so that ICP is not biased towards the
                         vertex positions of a coarse mesh (0: vertices only).
    max_points:          ICP fits at most this many reconstruction points, a random subset
                         (0: all); the returned ``aligned`` points are always all of them,
                         and fitness / inlier_rmse describe the subset.
    seed:                seed of the surface sampling and of that subset.
    """

    with_scale: bool = True
    icp_scale: bool = True
    max_correspondence_mm: float = 10.0
    max_iterations: int = 100
    tolerance: float = 1e-10
    method: str = "point_to_surface"
    backend: str = "auto"
    target_samples: int = 20000
    max_points: int = 50000
    seed: int = 0

    def __post_init__(self):
        if self.method not in ICP_METHODS:
            raise ValueError(
                f"AlignConfig.method must be one of {ICP_METHODS}, got {self.method!r}"
            )
        if self.backend not in ICP_BACKENDS:
            raise ValueError(
                f"AlignConfig.backend must be one of {ICP_BACKENDS}, got {self.backend!r}"
            )
        if self.method == "point_to_plane" and self.with_scale:
            raise ValueError("AlignConfig: point_to_plane ICP is rigid; set with_scale=False")
        if not self.max_correspondence_mm > 0:
            raise ValueError("AlignConfig.max_correspondence_mm must be positive")
        if self.max_iterations < 1 or self.target_samples < 0 or self.max_points < 0:
            raise ValueError("AlignConfig: max_iterations >= 1 and target_samples >= 0 required")


@dataclass(frozen=True)
class IcpResult:
    """transform: source -> target :class:`Sim3`; fitness: fraction of source points with a
    target point within the max correspondence distance at the end; inlier_rmse: RMS distance
    (mm) of those pairs; iterations: ICP iterations run (numpy backend; open3d reports none, -1).
    """

    transform: Sim3
    fitness: float
    inlier_rmse: float
    iterations: int = -1


@dataclass(frozen=True)
class AlignResult:
    """transform: reconstruction -> ground-truth :class:`Sim3` after ICP; init: the
    initialisation it started from; aligned: (N, 3) reconstruction points in the GT frame (mm);
    fitness / inlier_rmse: as in :class:`IcpResult`.
    """

    transform: Sim3
    init: Sim3
    aligned: np.ndarray
    fitness: float
    inlier_rmse: float
    extra: dict = field(default_factory=dict)


def surface_samples(vertices, faces, count: int, seed: int = 0) -> np.ndarray:
    """(count, 3) points drawn uniformly by area on a triangle mesh (deterministic in seed)."""
    v = as_points(vertices, "vertices")
    f = np.asarray(faces, dtype=np.int64)
    if count <= 0 or f.size == 0:
        return np.zeros((0, 3))
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(f), size=count, p=area / area.sum())
    r1 = np.sqrt(rng.random(count))
    r2 = rng.random(count)
    a, b, c = tri[idx, 0], tri[idx, 1], tri[idx, 2]
    return (1 - r1)[:, None] * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * c


def _icp_numpy(src, dst, init: Sim3, cfg: AlignConfig, dst_normals=None) -> IcpResult:
    tree = cKDTree(dst)
    T = init
    prev = None
    it = 0
    for it in range(1, cfg.max_iterations + 1):
        x = T.apply(src)
        d, j = tree.query(x, distance_upper_bound=cfg.max_correspondence_mm)
        ok = np.isfinite(d)
        if ok.sum() < 3:
            break
        fitness = ok.mean()
        rmse = float(np.sqrt(np.mean(d[ok] ** 2)))
        if cfg.method == "point_to_point":
            # Solve for the full transform from the original source points, like open3d.
            T = umeyama(src[ok], dst[j[ok]], with_scale=cfg.with_scale)
        else:
            T = _point_to_plane_step(x[ok], dst[j[ok]], dst_normals[j[ok]]) @ T
        if prev is not None:
            df = abs(fitness - prev[0]) / max(prev[0], 1e-300)
            dr = abs(rmse - prev[1]) / max(prev[1], 1e-300)
            if df < cfg.tolerance and dr < cfg.tolerance:
                break
        prev = (fitness, rmse)
    x = T.apply(src)
    d, _ = tree.query(x, distance_upper_bound=cfg.max_correspondence_mm)
    ok = np.isfinite(d)
    rmse = float(np.sqrt(np.mean(d[ok] ** 2))) if ok.any() else float("inf")
    return IcpResult(T, float(ok.mean()), rmse, it)


def icp_to_mesh(
    src, vertices, faces, init: Sim3 | None = None, config: AlignConfig = AlignConfig()
) -> IcpResult:
    """Point-to-surface ICP: pair each source point with its closest point on the target
    *triangles* and take a Gauss-Newton step on the point-to-plane residuals
    ``n_tri . (s R x + t - q)`` (with the log-scale as a 7th unknown when
    ``config.with_scale``); repeat until the step vanishes.

    Because the pairs are exact closest points on the surface (not the nearest vertex), the
    alignment is unbiased by the mesh resolution, and Gauss-Newton converges in a handful of
    iterations where point-to-point ICP creeps along the surface.

    src: (N, 3) source points; vertices (V, 3), faces (T, 3): the target mesh (same units).
    The closest points come from :class:`facesfm.eval.surface.MeshClosestPoint` with
    ``config.backend``. Returns an :class:`IcpResult` (fitness and inlier_rmse measured to the
    surface).
    """
    src = as_points(src, "icp src")
    v = as_points(vertices, "vertices")
    f = np.asarray(faces, dtype=np.int64)
    query = MeshClosestPoint(v, f, config.backend)
    tri = v[f]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-300)
    T = Sim3.identity() if init is None else init
    # open3d answers in float32: steps below ~1e-7 are its round-off, not progress.
    tol = max(config.tolerance, 1e-7) if query.backend == "open3d" else config.tolerance
    # below this distance (relative to the cloud's extent) the closest point's direction is
    # round-off (float32 in open3d), so the face normal is used
    near_rel = 1e-4 if query.backend == "open3d" else 1e-9
    it = 0
    for it in range(1, config.max_iterations + 1):
        x = T.apply(src)
        q, d, ti = query(x)
        ok = d <= config.max_correspondence_mm
        if ok.sum() < 7:
            break
        # Gauss-Newton on the true distance: its gradient is the unit vector from the closest
        # point, which stays continuous as the closest point crosses edges (face normals do
        # not, and make ICP dither on a faceted mesh). On the surface it is undefined; there
        # the face normal is the limit of the same residual from either side.
        diff = x[ok] - q[ok]
        n = fn[ti[ok]]
        dd = d[ok]
        far = dd > near_rel * max(float(np.ptp(x[ok], axis=0).max()), 1e-300)
        n[far] = diff[far] / dd[far, None]
        step = _surface_step(x[ok], q[ok], n, config.with_scale)
        T = step @ T
        extent = max(float(np.ptp(x[ok], axis=0).max()), 1e-300)
        size = max(
            step.rotation_angle_deg() * np.pi / 180,
            abs(np.log(step.s)),
            float(np.linalg.norm(step.t)) / extent,
        )
        if size < tol:
            break
    _, d, _ = query(T.apply(src))
    ok = d <= config.max_correspondence_mm
    rmse = float(np.sqrt(np.mean(d[ok] ** 2))) if ok.any() else float("inf")
    return IcpResult(T, float(ok.mean()), rmse, it)


def _surface_step(x, q, n, with_scale: bool) -> Sim3:
    """Gauss-Newton similarity update (applied after the current one) for the residuals
    ``n . (x' - q)``, with ``x' = e^sigma R x + t`` linearised at the identity; scale and
    rotation act about the centroid of x, which keeps the normal equations well conditioned."""
    c = x.mean(axis=0)
    xc = x - c
    cols = [np.cross(xc, n), n]
    if with_scale:
        cols.append(np.sum(xc * n, axis=1, keepdims=True))
    A = np.concatenate(cols, axis=1)
    b = np.sum((q - x) * n, axis=1)
    xi, *_ = np.linalg.lstsq(A, b, rcond=None)
    R = _exp_so3(xi[:3])
    s = float(np.exp(xi[6])) if with_scale else 1.0
    # x' = s R (x - c) + c + t
    return Sim3(R, c + xi[3:6] - s * R @ c, s)


def _exp_so3(w: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(w))
    K = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    if th < 1e-12:
        return np.eye(3) + K
    K = K / th
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def _point_to_plane_step(x, y, n) -> Sim3:
    """Linearised rigid update minimising sum ((R x + t - y) . n)^2 (small-angle Gauss-Newton)."""
    A = np.concatenate([np.cross(x, n), n], axis=1)  # (M, 6): d/d(omega, t)
    b = np.sum((y - x) * n, axis=1)
    xi, *_ = np.linalg.lstsq(A, b, rcond=None)
    return Sim3(_exp_so3(xi[:3]), xi[3:], 1.0)


def _icp_open3d(src, dst, init: Sim3, cfg: AlignConfig, dst_normals=None) -> IcpResult:
    o3d = require_open3d()
    reg = o3d.pipelines.registration
    ps = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(src))
    pd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(dst))
    if cfg.method == "point_to_point":
        est = reg.TransformationEstimationPointToPoint(with_scaling=cfg.with_scale)
    else:
        pd.normals = o3d.utility.Vector3dVector(dst_normals)
        est = reg.TransformationEstimationPointToPlane()
    crit = reg.ICPConvergenceCriteria(
        relative_fitness=cfg.tolerance,
        relative_rmse=cfg.tolerance,
        max_iteration=cfg.max_iterations,
    )
    res = reg.registration_icp(ps, pd, cfg.max_correspondence_mm, init.matrix(), est, crit)
    return IcpResult(
        Sim3.from_matrix(np.asarray(res.transformation)),
        float(res.fitness),
        float(res.inlier_rmse),
        -1,
    )


def icp(
    src, dst, init: Sim3 | None = None, config: AlignConfig = AlignConfig(), dst_normals=None
) -> IcpResult:
    """Refine ``init`` (source -> target) by ICP between point sets ("point_to_point" or
    "point_to_plane"; for "point_to_surface" use :func:`icp_to_mesh`).

    src: (N, 3) source points (the reconstruction), mm.
    dst: (M, 3) target points (the ground truth), mm.
    dst_normals: (M, 3) unit normals of the target, needed by ``point_to_plane``.
    """
    src = as_points(src, "icp src")
    dst = as_points(dst, "icp dst")
    if config.method == "point_to_surface":
        raise ValueError("icp() matches points to points; use icp_to_mesh for point_to_surface")
    if config.method == "point_to_plane":
        if dst_normals is None:
            raise ValueError("point_to_plane ICP needs dst_normals")
        dst_normals = as_points(dst_normals, "icp dst_normals")
        if dst_normals.shape != dst.shape:
            raise ValueError("icp: dst_normals must match dst in shape")
    init = Sim3.identity() if init is None else init
    backend = config.backend
    if backend == "auto":
        backend = "open3d" if have_open3d() else "numpy"
    if backend == "open3d":
        return _icp_open3d(src, dst, init, config, dst_normals)
    return _icp_numpy(src, dst, init, config, dst_normals)


#: an aligned reconstruction whose RMS radius is below this share of the ground truth's is
#: a collapsed alignment (:class:`AlignmentError`), not a good one.
MIN_SPREAD_RATIO = 0.1


class AlignmentError(ValueError):
    """The alignment degenerated (e.g. a free scale shrank the reconstruction to a point)."""


def align_reconstruction(
    points, gt_mesh_vertices, gt_faces=None, init_pairs=None, config: AlignConfig = AlignConfig()
) -> AlignResult:
    """Register a reconstructed point cloud to a ground-truth mesh (landmark init + ICP).

    points:           (N, 3) reconstruction, in its own frame (mm, or arbitrary scale when
                      ``config.with_scale``).
    gt_mesh_vertices: (V, 3) ground-truth vertices in the world frame, mm.
    gt_faces:         (T, 3) triangles of the ground truth, or None for a bare point cloud
                      (then ICP is point-to-point against the vertices).
    init_pairs:       optional ``(src (L, 3), dst (L, 3))`` corresponding points, e.g. the
                      reconstructed landmarks and the GT landmark vertices, for the Umeyama
                      initialisation. Without them ICP starts from the centroid offset (scale
                      1), which converges only for roughly pre-aligned, complete inputs: a
                      partial reconstruction (one side of the head) needs ``init_pairs``.
    Returns an :class:`AlignResult` whose ``transform`` maps reconstruction -> GT frame.
    """
    pts = as_points(points, "points")
    gv = as_points(gt_mesh_vertices, "gt_mesh_vertices")
    if init_pairs is not None:
        a, b = init_pairs
        init = umeyama(a, b, with_scale=config.with_scale)
    else:
        init = Sim3(np.eye(3), gv.mean(axis=0) - pts.mean(axis=0), 1.0)
    all_pts = pts
    fixed_scale = config.with_scale and not config.icp_scale
    s0 = 1.0
    if fixed_scale:
        # Fix the landmark scale: ICP aligns the pre-scaled cloud rigidly.
        s0 = init.s
        pts = pts * s0
        init = Sim3(init.R, init.t, 1.0)
        config = replace(config, with_scale=False)
    if config.max_points and len(pts) > config.max_points:
        rng = np.random.default_rng(config.seed)
        pts = pts[np.sort(rng.choice(len(pts), config.max_points, replace=False))]
    if gt_faces is None:
        if config.method == "point_to_plane":
            raise ValueError("point_to_plane alignment needs gt_faces (for normals)")
        cfg = (
            config
            if config.method == "point_to_point"
            else replace(config, method="point_to_point")
        )
        res = icp(pts, gv, init, cfg)
    else:
        gf = np.asarray(gt_faces, dtype=np.int64)
        if gf.ndim != 2 or gf.shape[1] != 3:
            raise ValueError(f"gt_faces must be (T, 3), got {gf.shape}")
        if config.method == "point_to_surface":
            res = icp_to_mesh(pts, gv, gf, init, config)
        elif config.method == "point_to_plane":
            res = icp(pts, gv, init, config, vertex_normals(gv, gf))
        else:
            target = gv
            if config.target_samples:
                extra = surface_samples(gv, gf, config.target_samples, config.seed)
                target = np.concatenate([gv, extra])
            res = icp(pts, target, init, config)
    if fixed_scale:
        T = res.transform
        res = replace(res, transform=Sim3(T.R, T.t, T.s * s0))
        init = Sim3(init.R, init.t, s0)
    aligned = res.transform.apply(all_pts)
    if config.with_scale:
        # ICP with a free scale can shrink a badly initialised cloud towards a point, where
        # every residual vanishes: a fake perfect score. A face cloud spreads over a good
        # share of its head (a one-sided partial face ~0.4x the head's RMS radius).
        spread = rms_radius(aligned)
        head = rms_radius(gv)
        if not spread >= MIN_SPREAD_RATIO * head:
            raise AlignmentError(
                f"alignment collapsed: the aligned reconstruction spreads {spread:.3g} mm "
                f"(RMS radius) against {head:.3g} mm for the ground truth (scale "
                f"{res.transform.s:.3g}); the reconstruction or its landmarks are unusable")
    return AlignResult(
        res.transform,
        init,
        aligned,
        res.fitness,
        res.inlier_rmse,
        {"iterations": res.iterations, "method": config.method},
    )
