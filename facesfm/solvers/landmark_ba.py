"""The test-time bundle adjustment of landmark observations, as ``facesfm solve`` and the
training's classical BA layer run it: typed inputs (:class:`Landmarks`, :class:`DepthMaps`),
:class:`BAConfig`, and the outcome (:class:`BAOutcome`), around :class:`LMSolver`.

Either parameterisation:

* ``depth`` (equation 2 of the paper): landmark depths are sampled bilinearly from the depth
  maps at the landmark pixels; the first frame fixes the gauge (its pose and depth scale are
  held); the optimised per-frame log depth scales ``s_f`` feed fusion (:func:`bundle_adjust`).
* ``classical``: poses and 3D landmark points, the points initialised by linear triangulation
  from the initial poses (:func:`triangulate_landmarks`); afterwards each frame's depth scale is
  the median ratio between its triangulated landmark depths and its depth map there
  (:func:`depth_scales`) (:func:`classical_bundle_adjust`; with photometric point tracks
  beside the landmarks, :func:`track_bundle_adjust`).

Arrays are numpy float64: K (3, 3) px; poses (F, 4, 4) ``cam_T_world`` (mm); points (N, 3)
world mm; uv (F, N, 2) OpenCV pixels.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import numpy as np
import torch

from facesfm.errors import InputError
from facesfm.geometry.camera import project, transform
from facesfm.geometry.multiview import sample_depth
from facesfm.solvers.lm import BackwardMode, LMSolver
from facesfm.solvers.problem import (
    AllPairs,
    BAProblem,
    BAState,
    CauchyKernel,
    HuberKernel,
    Kernel,
    LogSpaced,
    PairSelection,
    Parameterization,
    TopCovisible,
    TrivialKernel,
)

__all__ = [
    "BAConfig",
    "BAOutcome",
    "DepthMaps",
    "KernelKind",
    "Landmarks",
    "PairRule",
    "bundle_adjust",
    "classical_bundle_adjust",
    "depth_scales",
    "initial_points",
    "landmark_points",
    "reprojection_errors",
    "track_bundle_adjust",
    "triangulate_landmarks",
]


class KernelKind(enum.Enum):
    """The robust kernel of the landmark residuals (:meth:`BAConfig.make_kernel`)."""

    HUBER = "huber"
    CAUCHY = "cauchy"
    NONE = "none"


class PairRule(enum.Enum):
    """Which frame pairs the depth parameterisation compares (:meth:`BAConfig.make_pairs`):
    every co-visible pair, each frame's ``pairs_k`` most co-visible frames, or frames 1, 2,
    4, 8, ... apart."""

    ALL = "all"
    TOP = "top"
    LOG = "log"


@dataclass(frozen=True)
class BAConfig:
    """The landmark bundle adjustment, at test time (``facesfm solve``, whose defaults these
    are) and as the training graph's BA layer (``sfm.ba``, whose defaults are
    :data:`facesfm.training.config.TRAINING_BA`).

    enabled:            run it. Test time, off: the initial poses are final, depth scale 1
                        (with ``--depth landmarks`` the landmarks are still triangulated).
                        Training, off: the ablation with learned poses only.
    parameterization:   "depth" (equation 2: poses + per-frame log depth scales; landmark
                        depths sampled from the depth maps) or "classical" (poses + 3D landmark
                        points; needed by ``--depth landmarks``). Test-time default
                        "classical", by measurement: on the 61-frame 384 px ICT validation
                        sequence 00000_00 with GT depth, from GT poses perturbed by 3 deg /
                        10 mm, the mean rotation error after BA is 0.000 deg (classical) vs
                        0.094 deg (depth: bilinear landmark depths) with exact GT landmarks,
                        0.34 vs 1.05 deg with 1 px noise on them, and 1.6 vs 7.0 deg with
                        detected landmarks (2.4 px error); from the landmark factorisation,
                        classical reaches the same 1.6 deg and depth 10.8 deg. (Only on the
                        9-frame 160 px test sequence with 1 px noise did "depth" with GT depth
                        do better: 0.51 vs 0.93 deg.) In training, "classical" refines poses
                        that do not depend on the depth; their translation is scaled to the
                        network depth's scale, the only path a gradient takes through it.
    kernel, kernel_px:  robust kernel (:class:`KernelKind`) and its scale in px.
    pairs, pairs_k:     "depth": which frame pairs the problem compares (:class:`PairRule`;
                        "all" grows with F^2, measured in bench/results/ba_layer.md) and the k
                        of "top".
    depth_corrections:  "depth": also estimate per-landmark log depth corrections (held near 0
                        by ``depth_prior_weight``).
    max_iterations:     LM iteration cap (it runs to convergence below it).
    ftol:               stop when an accepted step lowers the cost by less than this fraction.
    backward:           how a gradient passes the solve (:class:`BackwardMode`); only the
                        training layer differentiates it ("none" at test time).
    float64:            the training layer solves in float64 and casts the poses back to the
                        training dtype; the test-time solve is float64 always.
    """

    enabled: bool = True
    parameterization: Parameterization = Parameterization.CLASSICAL
    kernel: KernelKind = KernelKind.HUBER
    kernel_px: float = 2.0
    pairs: PairRule = PairRule.TOP
    pairs_k: int = 4
    depth_corrections: bool = True
    depth_prior_weight: float = 1e3
    max_iterations: int = 100
    ftol: float = 1e-10
    backward: BackwardMode = BackwardMode.NONE
    float64: bool = True

    def __post_init__(self):
        for name, kind in (("parameterization", Parameterization), ("kernel", KernelKind),
                           ("pairs", PairRule), ("backward", BackwardMode)):
            if not isinstance(getattr(self, name), kind):
                raise InputError(f"ba.{name} must be a {kind.__name__}, got "
                                 f"{getattr(self, name)!r}")
        if self.pairs_k < 1 or self.max_iterations < 1 or not self.kernel_px > 0:
            raise InputError("ba: pairs_k and max_iterations must be >= 1, kernel_px > 0")

    @property
    def classical(self) -> bool:
        return self.parameterization is Parameterization.CLASSICAL

    def make_kernel(self) -> Kernel:
        """The solver's kernel object."""
        if self.kernel is KernelKind.NONE:
            return TrivialKernel()
        return {KernelKind.HUBER: HuberKernel, KernelKind.CAUCHY: CauchyKernel}[self.kernel](
            self.kernel_px)

    def make_pairs(self) -> PairSelection:
        """The depth parameterisation's pair selection object."""
        return {PairRule.ALL: AllPairs(), PairRule.TOP: TopCovisible(self.pairs_k),
                PairRule.LOG: LogSpaced()}[self.pairs]

    def make_solver(self) -> LMSolver:
        """The LM solver with this iteration cap, tolerance and backward mode."""
        return LMSolver(max_iterations=self.max_iterations, ftol=self.ftol,
                        backward=self.backward)


@dataclass(frozen=True)
class Landmarks:
    """uv (F, N, 2) OpenCV pixels; weight (F, N) >= 0 (0 = unseen); ids (N,) landmark IDs."""

    uv: np.ndarray
    weight: np.ndarray
    ids: np.ndarray
    source: str

    def select(self, keep) -> Landmarks:
        return Landmarks(self.uv[keep], self.weight[keep], self.ids, self.source)


@dataclass(frozen=True)
class DepthMaps:
    """depth (F, H, W) float32 camera z in mm (0 = none); mask (F, H, W) bool face region."""

    depth: np.ndarray
    mask: np.ndarray
    source: str


@dataclass
class BAOutcome:
    """poses (F, 4, 4) optimised cam_T_world; log_scale (F,) depth log scales; points (N, 3)
    world landmark points of the classical parameterisation (NaN: not reconstructed) or None,
    and points_initial their start (in the start poses' frame); and the solver's report
    (iterations, converged, message, costs, rms_px, seconds; start: which initial poses it
    ran from: "factorisation", "template", the --poses-init name, "+ tracks" when re-run
    with photometric tracks)."""

    poses: np.ndarray
    log_scale: np.ndarray
    depth_correction: np.ndarray | None
    points: np.ndarray | None = None
    points_initial: np.ndarray | None = None
    iterations: int = 0
    converged: bool = False
    message: str = "not run"
    initial_cost: float = float("nan")
    final_cost: float = float("nan")
    rms_px: float = float("nan")
    seconds: float = 0.0
    start: str = ""

    def summary(self) -> dict:
        return {"start": self.start, "iterations": self.iterations, "converged": self.converged,
                "message": self.message, "initial_cost": self.initial_cost,
                "final_cost": self.final_cost, "rms_px": self.rms_px, "seconds": self.seconds,
                "depth_scale": np.exp(self.log_scale).tolist()}


def triangulate_landmarks(K: np.ndarray, lm: Landmarks, poses: np.ndarray,
                          min_views: int = 2, max_condition: float = 1e6) -> np.ndarray:
    """(N, 3) world points: linear triangulation of each landmark from every frame observing it.

    Each observation with weight w constrains the point to its viewing ray; the point
    minimises the weighted sum of squared distances to the rays (a 3x3 linear system per
    landmark). NaN rows: landmarks seen in fewer than ``min_views`` frames, nearly parallel
    rays (condition number of the system above ``max_condition``), or a point behind a camera
    observing it. K: (3, 3); poses: (F, 4, 4) cam_T_world.
    """
    F, N = lm.weight.shape
    if poses.shape != (F, 4, 4):
        raise ValueError(f"poses must be ({F}, 4, 4), got {poses.shape}")
    obs = lm.weight > 0
    w = np.where(obs, lm.weight, 0.0)
    w = w / max(float(w.max(initial=0.0)), 1e-300)
    R, t = poses[:, :3, :3], poses[:, :3, 3]
    C = -np.einsum("fba,fb->fa", R, t)  # camera centres
    uv1 = np.concatenate([np.where(obs[..., None], lm.uv, 0.0), np.ones((F, N, 1))], -1)
    ray = np.einsum("ab,fnb->fna", np.linalg.inv(K), uv1)
    d = np.einsum("fba,fnb->fna", R, ray)  # R^T ray: world directions
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    P = np.eye(3) - d[..., :, None] * d[..., None, :]  # (F, N, 3, 3) projectors off the rays
    A = np.einsum("fn,fnab->nab", w, P)
    b = np.einsum("fn,fnab,fb->na", w, P, C)
    ev = np.linalg.eigvalsh(A)  # ascending
    good = (obs.sum(0) >= min_views) & (ev[:, 0] > ev[:, 2] / max_condition)
    X = np.full((N, 3), np.nan)
    if good.any():
        X[good] = np.linalg.solve(A[good], b[good][..., None])[..., 0]
    z = np.einsum("fab,nb->fna", R, np.nan_to_num(X))[..., 2] + t[:, None, 2]
    X[(obs & (z <= 0)).any(0)] = np.nan
    return X


def initial_points(K: np.ndarray, lm: Landmarks, poses: np.ndarray,
                   depth: DepthMaps | None = None) -> np.ndarray:
    """(N, 3) start of the classical BA's points: :func:`triangulate_landmarks` from ``poses``,
    or where that fails (nearly parallel rays, e.g. a zero-baseline start) and ``depth`` is
    given, the landmark lifted with its sampled depth (:func:`landmark_points`). NaN rows:
    landmarks seen in fewer than 2 frames, or with neither."""
    X = triangulate_landmarks(K, lm, poses)
    seen2 = (lm.weight > 0).sum(0) >= 2
    if depth is not None:
        lifted = landmark_points(K, lm, depth.depth, poses)
        miss = ~np.all(np.isfinite(X), 1) & seen2
        X[miss] = lifted[miss]
    X[~seen2] = np.nan
    return X


def landmark_points(K: np.ndarray, lm: Landmarks, depth: np.ndarray, poses: np.ndarray,
                    scale: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) world landmark points: the median over observing frames (per coordinate) of
    each landmark lifted with its (scaled) sampled depth; NaN where no frame has a valid depth
    for it. The median, because a landmark on an occlusion edge (the jaw line over the neck, a
    lid over the eyeball) samples a depth mixed with the surface behind in some frames: on
    ground-truth depth such a frame's lift is off by up to 14 mm, which the mean kept."""

    F, N = lm.weight.shape
    z, valid = sample_depth(depth, lm.uv)
    ok = valid & (lm.weight > 0)
    s = np.ones(F) if scale is None else np.asarray(scale)
    z = z * s[:, None]
    Kinv = np.linalg.inv(K)
    uv1 = np.concatenate([np.where(ok[..., None], lm.uv, 0.0), np.ones((F, N, 1))], -1)
    Xc = np.einsum("ab,fnb->fna", Kinv, uv1) * z[..., None]
    R, t = poses[:, :3, :3], poses[:, :3, 3]
    Xw = np.einsum("fba,fnb->fna", R, Xc - t[:, None])  # R^T (X - t)
    Xw[~ok] = np.nan
    X = np.full((N, 3), np.nan)
    seen = ok.any(0)
    X[seen] = np.nanmedian(Xw[:, seen], axis=0)
    return X


def depth_scales(K: np.ndarray, lm: Landmarks, points: np.ndarray, poses: np.ndarray,
                 depth: np.ndarray, nan_missing: bool = False) -> np.ndarray:
    """(F,) log depth scales: per frame, log of the median ratio between the camera depths of
    ``points`` (N, 3) at ``poses`` and the depth maps (F, H, W) sampled at the landmarks it
    observes (0, or NaN with ``nan_missing``, for a frame with no usable landmark)."""

    zmap, valid = sample_depth(depth, lm.uv)
    fin = np.all(np.isfinite(points), 1)
    zp = np.einsum("fab,nb->fna", poses[:, :3, :3], np.nan_to_num(points))[..., 2]
    zp = zp + poses[:, None, :3, 3][..., 2]
    ok = valid & (lm.weight > 0) & fin[None] & (zp > 0)
    out = np.full(len(poses), np.nan)
    for f in range(len(poses)):
        if ok[f].any():
            out[f] = float(np.log(np.median(zp[f, ok[f]] / zmap[f, ok[f]])))
    return out if nan_missing else np.nan_to_num(out)


def reprojection_errors(K: np.ndarray, lm: Landmarks, X: np.ndarray,
                        poses: np.ndarray) -> np.ndarray:
    """(F,) RMS pixel distance between observed landmarks and the projections of X (N, 3)
    (observations with weight > 0 and a finite point; NaN for a frame with none)."""

    F = len(poses)
    out = np.full(F, np.nan)
    fin = np.all(np.isfinite(X), 1)
    for f in range(F):
        sel = (lm.weight[f] > 0) & fin
        if not sel.any():
            continue
        uv = project(K, transform(poses[f], X[sel]))
        out[f] = float(np.sqrt(np.mean(np.sum((uv - lm.uv[f, sel]) ** 2, -1))))
    return out


def bundle_adjust(K: np.ndarray, lm: Landmarks, depth: DepthMaps | None, poses: np.ndarray,
                  cfg: BAConfig) -> BAOutcome:
    """BA from ``poses`` (F, 4, 4) in ``cfg.parameterization``; frame 0 fixes the gauge.

    "depth": landmarks without a valid depth sample (outside the depth map, on a silhouette)
    get weight 0; ``depth`` is required. "classical": see :func:`classical_bundle_adjust`
    (``depth`` may be None). Raises :class:`facesfm.solvers.SolverError` if the problem is
    degenerate.
    """
    if cfg.classical:
        return classical_bundle_adjust(K, lm, depth, poses, cfg)
    if depth is None:
        raise InputError("the depth-parameterised BA needs depth maps")

    t0 = time.perf_counter()
    F = len(poses)
    z, valid = sample_depth(depth.depth, lm.uv)
    w = np.where(valid, lm.weight, 0.0)
    T = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)
    uv = np.where(w[..., None] > 0, lm.uv, 0.0)
    problem = BAProblem(
        K=T(np.repeat(K[None], F, 0)), uv=T(uv), weight=T(w), depth=T(np.where(w > 0, z, 1.0)),
        parameterization=Parameterization.DEPTH, kernel=cfg.make_kernel(),
        pairs=cfg.make_pairs(), depth_corrections=cfg.depth_corrections,
        depth_prior_weight=cfg.depth_prior_weight, fixed_frame=0)
    with torch.no_grad():
        res = cfg.make_solver().solve(problem, BAState(T(poses)))
    st = res.state
    return BAOutcome(
        poses=st.poses.numpy().copy(),
        log_scale=st.log_scale.numpy().copy(),
        depth_correction=None if st.depth_correction is None else st.depth_correction.numpy(),
        iterations=res.iterations, converged=res.converged, message=res.message,
        initial_cost=float(res.cost[0]), final_cost=res.final_cost, rms_px=res.rms_px,
        seconds=time.perf_counter() - t0)


def classical_bundle_adjust(K: np.ndarray, lm: Landmarks, depth: DepthMaps | None,
                            poses: np.ndarray, cfg: BAConfig) -> BAOutcome:
    """Classical BA (poses + landmark points) from ``poses`` (F, 4, 4); frame 0 is held and
    the solver fixes the scale gauge.

    Points start from :func:`initial_points`; landmarks with no start (seen once, or not
    triangulable and without depth) are left out (NaN points). With ``depth``, the solution is
    then scaled about frame 0's camera centre so that the median per-frame depth scale is 1
    (the depth maps fix the metric scale the classical problem leaves free), and the
    per-frame log depth scales are :func:`depth_scales` of the optimised points (zeros
    without ``depth``). With ``cfg.enabled`` False only the points (and scales) are computed.
    ``points_initial`` of the outcome keeps the start points (in the start poses' frame).
    """

    t0 = time.perf_counter()
    F = len(poses)
    X = initial_points(K, lm, poses, depth)
    cols = np.all(np.isfinite(X), 1)
    if cols.sum() < 4:
        raise InputError(f"classical BA: only {int(cols.sum())} landmarks could be "
                         f"triangulated from the initial poses (>= 4 needed)")
    X = np.where(cols[:, None], X, np.nan)
    out = BAOutcome(poses.copy(), np.zeros(F), None, X.copy(), points_initial=X)
    if cfg.enabled:
        T = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)
        w = lm.weight[:, cols]
        problem = BAProblem(
            K=T(np.repeat(K[None], F, 0)), uv=T(np.where(w[..., None] > 0, lm.uv[:, cols], 0.0)),
            weight=T(w), parameterization=Parameterization.CLASSICAL, kernel=cfg.make_kernel(),
            fixed_frame=0)
        with torch.no_grad():
            res = cfg.make_solver().solve(problem, BAState(T(poses), T(X[cols])))
        out.poses = res.state.poses.numpy().copy()
        out.points[cols] = res.state.points.numpy()
        out.iterations, out.converged, out.message = res.iterations, res.converged, res.message
        out.initial_cost, out.final_cost = float(res.cost[0]), res.final_cost
        out.rms_px = res.rms_px
    if depth is not None:
        # the classical BA leaves the scale where the initial poses had it: take the depth
        # maps' instead (world scaled about frame 0's camera centre, which stays put)
        s = depth_scales(K, lm, out.points, out.poses, depth.depth, nan_missing=True)
        k = float(np.exp(-np.nanmedian(s))) if np.isfinite(s).any() else 1.0
        R, t = out.poses[:, :3, :3], out.poses[:, :3, 3]
        C = -np.einsum("fba,fb->fa", R, t)
        C0 = C[0].copy()
        out.poses[:, :3, 3] = -np.einsum("fab,fb->fa", R, C0 + k * (C - C0))
        out.points = C0 + k * (out.points - C0)
        out.log_scale = depth_scales(K, lm, out.points, out.poses, depth.depth)
    out.seconds = time.perf_counter() - t0
    return out


def track_bundle_adjust(K: np.ndarray, lm: Landmarks, tracks, depth: DepthMaps | None,
                        poses: np.ndarray, cfg: BAConfig, landmark_weight: float) -> BAOutcome:
    """:func:`classical_bundle_adjust` of the landmarks (weights x ``landmark_weight``) and the
    photometric ``tracks`` (weight 1) together, from ``poses``. ``tracks``: any value with
    ``uv`` (F, T, 2) and ``weight`` (F, T) (e.g. :class:`facesfm.solve.tracks.Tracks`). The
    outcome's points (and start points) are the landmarks' only; its report (RMS, costs)
    covers both."""
    N = lm.uv.shape[1]
    T = tracks.weight.shape[1]
    both = Landmarks(np.concatenate([lm.uv, tracks.uv], 1),
                     np.concatenate([lm.weight * landmark_weight, tracks.weight], 1),
                     np.concatenate([lm.ids, -1 - np.arange(T)]), lm.source)
    out = classical_bundle_adjust(K, both, depth, poses, cfg)
    out.points = out.points[:N]
    out.points_initial = out.points_initial[:N]
    return out
