"""``facesfm solve``: frames -> landmarks -> depth and poses -> BA -> fusion -> outputs.

Stages pass plain values (:class:`Landmarks`, :class:`DepthMaps`, :class:`BAOutcome`,
:class:`SolveResult`). Each learned stage has an *oracle* stand-in read from a sequence
folder's ground truth, so the pipeline runs end to end before the networks are trained:

=================  ==========================================  ===============================
stage              learned                                      oracle
=================  ==========================================  ===============================
landmarks          LandmarkNet (``--landmark-checkpoint``): uv, ``--oracle-landmarks``: the
                   BA weight where visibility >= 0.5            sequence's uv / visible
depth + mask       DepthNet (``--checkpoint``); mask = convex   ``--oracle-depth``: GT depth
                   hull of the frame's visible landmarks        maps and face masks
initial poses      PoseNet (``--checkpoint``) on consecutive    ``--poses-init gt`` (alias
                   usable frames, chained                       ``--oracle-poses``) or
                                                                ``gt-perturbed``
=================  ==========================================  ===============================

Two stages also run without any network beyond the landmark detector (``--depth landmarks``,
``--poses-init landmarks``): initial poses from a Tomasi-Kanade factorisation of the landmark
tracks (:func:`landmark_poses`), and depth maps interpolated from the bundle-adjusted landmark
points (:func:`landmark_depth_maps`).

Bundle adjustment (:mod:`facesfm.solvers`, :class:`BAConfig`), either parameterisation:

* ``depth`` (equation 2 of the paper): landmark depths are sampled bilinearly from the depth
  maps at the landmark pixels; the first usable frame fixes the gauge (its pose and depth scale
  are held); the optimised per-frame log depth scales ``s_f`` feed fusion.
* ``classical``: poses and 3D landmark points, the points initialised by linear triangulation
  from the initial poses (:func:`triangulate_landmarks`); afterwards each frame's depth scale is
  the median ratio between its triangulated landmark depths and its depth map there
  (:func:`depth_scales`).

Two optional photometric stages follow the BA: ``--tracks`` (:mod:`facesfm.solve.tracks`)
matches skin patches between neighbouring frames and runs the classical BA again with these
tracks beside the landmarks (:func:`track_bundle_adjust`); ``--stereo``
(:mod:`facesfm.solve.stereo`) refines the depth maps by a plane sweep before fusion. Either one
that finds nothing to match is skipped with a warning.

Fusion uses the optimised poses and the depth maps times ``exp(s_f)``.

Frames where no face is found (fewer than ``min_face_landmarks`` landmarks with weight > 0)
are skipped with a warning; fewer than ``min_frames`` usable frames is an InputError.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from facesfm.errors import InputError
from facesfm.solve.fusion import FusionConfig, PointCloud, SurfaceMesh
from facesfm.solve.inputs import FrameSet
from facesfm.solve.stereo import StereoConfig
from facesfm.solve.tracks import TrackConfig, Tracks

__all__ = [
    "POSE_INITS",
    "BAConfig",
    "BAOutcome",
    "DepthMaps",
    "Landmarks",
    "SolveConfig",
    "SolveResult",
    "build_solve_config",
    "bundle_adjust",
    "classical_bundle_adjust",
    "depth_scales",
    "evaluate_against_gt",
    "hull_masks",
    "initial_points",
    "landmark_depth_maps",
    "landmark_points",
    "landmark_poses",
    "oracle_depth",
    "oracle_landmarks",
    "perturbed_poses",
    "reprojection_errors",
    "run_solve",
    "select_face_frames",
    "solve_frames",
    "triangulate_landmarks",
]

POSE_INITS = ("network", "gt", "gt-perturbed", "landmarks")
DEPTH_SOURCES = ("network", "oracle", "landmarks")
KERNELS = ("huber", "cauchy", "none")
PARAMETERIZATIONS = ("depth", "classical")


@dataclass(frozen=True)
class BAConfig:
    """Test-time bundle adjustment.

    enabled:            run it (off: the initial poses are final, depth scale 1; with
                        ``--depth landmarks`` the landmarks are still triangulated).
    parameterization:   "depth" (poses + per-frame log depth scales; landmark depths from the
                        depth maps) or "classical" (poses + 3D landmark points; needed by
                        ``--depth landmarks``). Default "classical", by measurement: on the
                        61-frame 384 px ICT validation sequence 00000_00 with GT depth, from GT
                        poses perturbed by 3 deg / 10 mm, the mean rotation error after BA is
                        0.000 deg (classical) vs 0.094 deg (depth: bilinear landmark depths)
                        with exact GT landmarks, 0.34 vs 1.05 deg with 1 px noise on them, and
                        1.6 vs 7.0 deg with detected landmarks (2.4 px error); from the
                        landmark factorisation, classical reaches the same 1.6 deg and depth
                        10.8 deg. (Only on the 9-frame 160 px test sequence with 1 px noise
                        did "depth" with GT depth do better: 0.51 vs 0.93 deg.)
    kernel, kernel_px:  robust kernel ("huber", "cauchy" or "none") and its scale in px.
    pairs_k:            "depth": each target frame pairs with the ``pairs_k`` most co-visible
                        frames.
    depth_corrections:  "depth": also estimate per-landmark log depth corrections (held near 0
                        by ``depth_prior_weight``).
    max_iterations:     LM iteration cap (it runs to convergence below it).
    ftol:               stop when an accepted step lowers the cost by less than this fraction.
    """

    enabled: bool = True
    parameterization: str = "classical"
    kernel: str = "huber"
    kernel_px: float = 2.0
    pairs_k: int = 4
    depth_corrections: bool = True
    depth_prior_weight: float = 1e3
    max_iterations: int = 100
    ftol: float = 1e-10

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise InputError(f"ba.kernel={self.kernel!r} is not one of {list(KERNELS)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise InputError(f"ba.parameterization={self.parameterization!r} is not one of "
                             f"{list(PARAMETERIZATIONS)}")
        if self.pairs_k < 1 or self.max_iterations < 1 or not self.kernel_px > 0:
            raise InputError("ba: pairs_k and max_iterations must be >= 1, kernel_px > 0")


@dataclass(frozen=True)
class SolveConfig:
    """Options of ``facesfm solve``.

    checkpoint:        stage-2 ("sfm") training checkpoint: depth and pose networks
                       (:mod:`facesfm.solve.learned`); needed unless depth and poses are oracle.
    landmark_checkpoint: stage-1 ("landmarks") training checkpoint; needed unless
                       ``oracle_landmarks`` (default: the one recorded in ``checkpoint``).
    oracle_landmarks:  landmarks from the sequence's landmarks.npz (sequence input only).
    depth:             where the depth maps come from: "network" (DepthNet of ``checkpoint``),
                       "oracle" (GT depth maps and masks; sequence input only; an analysis
                       switch) or "landmarks" (interpolated from the bundle-adjusted landmark
                       points, masks = landmark hulls; no depth network; needs the "classical"
                       BA parameterisation). None: "oracle" if ``oracle_depth`` else "network".
    oracle_depth:      the same as ``depth="oracle"`` (kept in step with ``depth``).
    poses_init:        "network", "landmarks" (Tomasi-Kanade factorisation of the landmark
                       tracks, weak-perspective poses scaled to about mm by the mean-face
                       template; frames it cannot place are skipped; with the BA on it also
                       runs from :func:`template_poses` and keeps the lower cost), "gt" or
                       "gt-perturbed" (GT
                       poses moved by a random rotation of ``perturb_rot_deg`` and translation
                       of ``perturb_trans_mm`` per frame, except the first, seeded by
                       ``perturb_seed``).
    landmarks:         use landmark IDs 0..landmarks-1 (None: all the source has).
    min_face_landmarks: a frame with fewer observed landmarks has no face: skipped.
    min_frames:        fewer usable frames than this is an error.
    evaluate:          with GT (sequence input): pose errors and cloud/mesh accuracy.
    ba, fusion:        :class:`BAConfig`, :class:`FusionConfig`.
    tracks:            :class:`TrackConfig`: photometric point tracks re-run the classical BA
                       with the landmarks (``--tracks``).
    stereo:            :class:`StereoConfig`: photometric refinement of the depth maps before
                       fusion (``--stereo``).
    """

    checkpoint: str | None = None
    landmark_checkpoint: str | None = None
    oracle_landmarks: bool = False
    oracle_depth: bool = False
    depth: str | None = None
    poses_init: str = "network"
    perturb_rot_deg: float = 3.0
    perturb_trans_mm: float = 10.0
    perturb_seed: int = 0
    landmarks: int | None = None
    min_face_landmarks: int = 8
    min_frames: int = 2
    device: str = "cpu"
    evaluate: bool = True
    ba: BAConfig = field(default_factory=BAConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    stereo: StereoConfig = field(default_factory=StereoConfig)
    tracks: TrackConfig = field(default_factory=TrackConfig)

    def __post_init__(self):
        if self.tracks.enabled and not (self.ba.enabled
                                        and self.ba.parameterization == "classical"):
            raise InputError("--tracks adds photometric tracks to the classical bundle "
                             "adjustment: it needs the BA on and --ba-parameterization "
                             "classical")
        if self.poses_init not in POSE_INITS:
            raise InputError(f"--poses-init {self.poses_init}: choose one of {list(POSE_INITS)}")
        if self.depth is not None and self.depth not in DEPTH_SOURCES:
            raise InputError(f"--depth {self.depth}: choose one of {list(DEPTH_SOURCES)}")
        if self.oracle_depth and self.depth not in (None, "oracle"):
            raise InputError(f"--oracle-depth and --depth {self.depth} disagree")
        depth = self.depth or ("oracle" if self.oracle_depth else "network")
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "oracle_depth", depth == "oracle")
        if (depth == "landmarks" and self.ba.enabled
                and self.ba.parameterization != "classical"):
            raise InputError("--depth landmarks builds the depth maps from the BA's landmark "
                             "points: it needs --ba-parameterization classical")
        if depth == "landmarks" and self.landmarks is not None and self.landmarks < 4:
            raise InputError(f"--depth landmarks needs >= 4 landmarks (depth maps are "
                             f"interpolated between them), got --landmarks {self.landmarks}")
        if self.min_frames < 2:
            raise InputError(f"min_frames must be >= 2, got {self.min_frames}")
        if self.landmarks is not None and self.landmarks < 1:
            raise InputError(f"--landmarks must be >= 1, got {self.landmarks}")

    @property
    def needs_sfm_networks(self) -> bool:
        return self.depth == "network" or self.poses_init == "network"

    def stage_sources(self) -> dict:
        """Where each stage's values come from (for reports and the benchmark)."""
        return {
            "landmarks": "oracle (GT landmarks.npz)" if self.oracle_landmarks else "network",
            "depth": {"network": "network",
                      "oracle": "oracle (GT depth maps, masks)",
                      "landmarks": "landmarks (linear interpolation of the BA landmark points' "
                                   "depths, landmark-hull masks)"}[self.depth],
            "initial_poses": {"network": "network (PoseNet)", "gt": "oracle (GT poses)",
                              "gt-perturbed": f"oracle (GT poses perturbed by "
                              f"{self.perturb_rot_deg} deg / {self.perturb_trans_mm} mm)",
                              "landmarks": "landmarks (Tomasi-Kanade factorisation of the "
                                           "landmark tracks, weak-perspective poses, or the "
                                           "mean face's per-frame poses where the BA reaches "
                                           "a lower cost from them: see ba.start)",
                              }[self.poses_init],
            "ba": (f"LMSolver ({self.ba.parameterization} parameterisation)"
                   if self.ba.enabled else "off")
                  + (", then again with photometric point tracks" if self.tracks.enabled
                     else ""),
            "depth_refinement": ("photometric plane sweep (NCC) around the depth maps"
                                 if self.stereo.enabled else "none"),
        }


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


@dataclass
class SolveResult:
    """Everything ``facesfm solve`` produced (the output folder holds the files).

    frames:         the usable frames (FrameSet after skipping frames without a face).
    kept:           (F_in,) bool, which input frames were used.
    landmarks, depth: stage outputs for the kept frames.
    poses_initial:  (F, 4, 4) learned (or factorised, oracle, perturbed) cam_T_world.
    poses_gt:       (F, 4, 4) GT cam_T_world or None.
    ba:             :class:`BAOutcome`.
    landmarks_xyz:  (N, 3) world landmark points (classical BA: its points; depth BA: the
                    median of their scaled lifts), NaN if not reconstructed.
    reproj_initial_px, reproj_final_px: (F,) per-frame RMS reprojection error of those points.
    cloud, mesh:    the fused :class:`PointCloud` and :class:`SurfaceMesh`.
    timings:        seconds per stage.
    evaluation:     metrics against the ground truth (empty without GT).
    photometric:    summaries of the photometric stages that ran: "tracks"
                    (:meth:`Tracks.summary`) and "stereo" (:meth:`StereoResult.summary`).
    """

    frames: FrameSet
    kept: np.ndarray
    landmarks: Landmarks
    depth: DepthMaps
    poses_initial: np.ndarray
    poses_gt: np.ndarray | None
    ba: BAOutcome
    landmarks_xyz: np.ndarray
    reproj_initial_px: np.ndarray
    reproj_final_px: np.ndarray
    cloud: PointCloud
    mesh: SurfaceMesh
    timings: dict
    evaluation: dict
    config: SolveConfig
    out: Path | None = None
    photometric: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- stages


def oracle_landmarks(frames: FrameSet, count: int | None = None) -> Landmarks:
    """GT landmarks of a sequence input: uv and weight = visible (F, N)."""
    seq = _need_sequence(frames, "--oracle-landmarks")
    n = len(seq.landmark_ids) if count is None else int(count)
    if n > len(seq.landmark_ids):
        raise InputError(f"--landmarks {n}: {seq.root} stores only {len(seq.landmark_ids)}")
    return Landmarks(seq.uv[:, :n].copy(), seq.visible[:, :n].astype(np.float64),
                     seq.landmark_ids[:n].copy(), "oracle")


def oracle_depth(frames: FrameSet) -> DepthMaps:
    """GT depth maps and face masks of a sequence input."""
    seq = _need_sequence(frames, "--oracle-depth")
    depth = np.stack([seq.depth(i) for i in range(len(seq))])
    mask = np.stack([seq.mask(i) for i in range(len(seq))])
    return DepthMaps(depth, mask & (depth > 0), "oracle")


def select_face_frames(lm: Landmarks, min_landmarks: int) -> np.ndarray:
    """(F,) bool: frames with at least ``min_landmarks`` observed landmarks (a face)."""
    return (lm.weight > 0).sum(1) >= min_landmarks


def hull_masks(uv: np.ndarray, weight: np.ndarray, height: int, width: int,
               dilate_px: float = 0.0) -> np.ndarray:
    """(F, H, W) bool: pixels inside the convex hull of each frame's observed landmarks
    (the face region for a network depth map, which has no mask of its own)."""
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull, QhullError

    rr, cc = np.mgrid[0:height, 0:width]
    pix = np.stack([cc.ravel(), rr.ravel()], 1).astype(np.float64)
    out = np.zeros((len(uv), height, width), dtype=bool)
    for f in range(len(uv)):
        p = uv[f][weight[f] > 0]
        if len(p) < 3:
            continue
        try:
            hull = p[ConvexHull(p).vertices]
        except QhullError:
            continue
        out[f] = MplPath(hull).contains_points(pix, radius=dilate_px).reshape(height, width)
    return out


def perturbed_poses(poses: np.ndarray, rot_deg: float, trans_mm: float, seed: int,
                    fixed_frame: int = 0) -> np.ndarray:
    """Every pose but ``fixed_frame`` moved by a random rotation of exactly ``rot_deg`` and a
    translation of ``trans_mm`` (camera frame), seeded (facesfm.solvers.synthetic)."""
    from facesfm.solvers import BAState
    from facesfm.solvers.synthetic import perturb_state

    st = perturb_state(BAState(torch.as_tensor(poses, dtype=torch.float64)), seed=seed,
                       rot_deg=rot_deg, trans_mm=trans_mm, point_mm=0.0,
                       fixed_frame=fixed_frame)
    return st.poses.numpy()


def landmark_poses(K: np.ndarray, lm: Landmarks) -> np.ndarray:
    """(F, 4, 4) initial cam_T_world from the landmark tracks alone: Tomasi-Kanade
    factorisation (scaled orthographic, :func:`facesfm.eval.baselines.factorization_baseline`)
    turned into weak-perspective poses, scaled to about mm.

    Both the depth reflection and the scale are taken from the built-in model's mean face
    (:func:`facesfm.eval.baselines.template_landmarks`) over the 68 semantic landmarks (IDs
    below 68 mark the same facial point on every model; the dense IDs after them do not: on
    an ICT face a similarity fit over all 200 gave a scale of 0.21, over the 68 1.00). With
    fewer than 6 semantic landmarks factorised, the first N template landmarks resolve the
    reflection and the ratio of RMS radii gives the scale. The true scale is unknown; about
    mm is what fusion's voxel sizes assume.

    Frames the factorisation cannot place (too few landmarks shared with the others) get NaN
    poses. World frame: frame 0's camera axes, landmark centroid at the origin. Raises
    InputError when too few frames or landmarks are usable at all.
    """
    from facesfm.eval.align import rms_radius, umeyama
    from facesfm.eval.baselines import (
        SEMANTIC_LANDMARKS,
        factorization_baseline,
        template_landmarks,
    )

    ids = np.asarray(lm.ids, dtype=np.int64)
    vis = lm.weight > 0
    try:
        semantic = template_landmarks(int(ids.max()) + 1)[ids]
    except ValueError:  # IDs beyond the template's
        semantic = np.full((len(ids), 3), np.nan)
    semantic[ids >= SEMANTIC_LANDMARKS] = np.nan
    sem_seen = np.isfinite(semantic).all(1) & (vis.sum(0) >= 2)
    use_sem = sem_seen.sum() >= 6
    try:
        fallback = template_landmarks(len(ids))
    except ValueError as e:
        raise InputError(f"--poses-init landmarks: {e}") from None
    base = factorization_baseline(lm.uv, vis, K, semantic if use_sem else fallback)
    X = base.points
    ok = np.all(np.isfinite(X), 1)
    if ok.sum() < 4:
        raise InputError(f"--poses-init landmarks: only {int(ok.sum())} landmarks were "
                         f"factorised (>= 4 needed)")
    sel = ok & np.isfinite(semantic).all(1)
    if use_sem and sel.sum() >= 6:
        s = umeyama(X[sel], semantic[sel]).s
    else:
        s = rms_radius(fallback[ok]) / rms_radius(X[ok])
    poses = base.cam_T_world.copy()
    poses[:, :3, 3] *= s
    return poses


def template_poses(K: np.ndarray, lm: Landmarks, min_points: int = 6) -> np.ndarray:
    """(F, 4, 4) initial cam_T_world of each frame on its own: the pose of the built-in mean
    face (:func:`facesfm.eval.baselines.template_landmarks`) that best explains the frame's
    semantic landmarks (IDs below 68, the same facial point on every face model).

    Per frame: an affine camera fitted to the template by least squares gives a
    weak-perspective pose (its rotation's first two rows, the third their cross product, so
    there is no depth reflection to resolve), refined by a robust perspective least squares
    (soft-L1, 3 px). The world is the mean face's frame, mm; the face's true shape differs, so
    these poses are a start for the BA, a few degrees off. Frames with fewer than
    ``min_points`` semantic landmarks get NaN poses.
    """
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    from facesfm.eval.baselines import SEMANTIC_LANDMARKS, template_landmarks

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

        def resid(x, X, uv):
            Xc = Rotation.from_rotvec(x[:3]).apply(X) + x[3:]
            z = np.maximum(Xc[:, 2], 1e-6)
            return (np.c_[K[0, 0] * Xc[:, 0] / z + c[0], K[1, 1] * Xc[:, 1] / z + c[1]]
                    - uv).ravel()

        x0 = np.r_[Rotation.from_matrix(R).as_rotvec(), t0]
        sol = least_squares(resid, x0, loss="soft_l1", f_scale=3.0, max_nfev=50, args=(X, uv))
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(sol.x[:3]).as_matrix()
        T[:3, 3] = sol.x[3:]
        if T[2, 3] > 0:
            out[f] = T
    return out


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


def depth_scales(K: np.ndarray, lm: Landmarks, points: np.ndarray, poses: np.ndarray,
                 depth: np.ndarray, nan_missing: bool = False) -> np.ndarray:
    """(F,) log depth scales: per frame, log of the median ratio between the camera depths of
    ``points`` (N, 3) at ``poses`` and the depth maps (F, H, W) sampled at the landmarks it
    observes (0, or NaN with ``nan_missing``, for a frame with no usable landmark)."""
    from facesfm.solve.fusion import sample_depth

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


def landmark_depth_maps(K: np.ndarray, lm: Landmarks, points: np.ndarray, poses: np.ndarray,
                        height: int, width: int, names=None) -> DepthMaps:
    """Sparse-to-dense depth without a network: each frame's depth map linearly interpolates
    (scipy ``griddata``) the camera depths of the landmark points it observes, at their
    projections, inside the convex hull of those projections (the mask, :func:`hull_masks`).

    points: (N, 3) world (NaN rows unused); poses: (F, 4, 4) cam_T_world. Raises InputError
    naming a frame with fewer than 3 usable landmarks (or all on one line).
    """
    from scipy.interpolate import griddata
    from scipy.spatial import QhullError

    from facesfm.geometry.camera import project, transform

    F = len(poses)
    fin = np.all(np.isfinite(points), 1)
    depth = np.zeros((F, height, width), dtype=np.float32)
    mask = np.zeros((F, height, width), dtype=bool)
    for f in range(F):
        sel = (lm.weight[f] > 0) & fin
        Xc = transform(poses[f], points[sel])
        sel_z = Xc[:, 2] > 0
        Xc = Xc[sel_z]
        uv = project(K, Xc) if len(Xc) else np.zeros((0, 2))
        name = names[f] if names is not None else f"frame {f}"
        hull = (hull_masks(uv[None], np.ones((1, len(uv))), height, width)[0]
                if len(uv) >= 3 else np.zeros((height, width), dtype=bool))
        if not hull.any():
            raise InputError(
                f"--depth landmarks: {name} has {len(uv)} triangulated landmark(s) in view, "
                f"not enough for a depth map (>= 3, not all on a line)")
        rr, cc = np.nonzero(hull)
        try:
            z = griddata(uv, Xc[:, 2], np.stack([cc, rr], 1).astype(np.float64),
                         method="linear")
        except QhullError:
            raise InputError(f"--depth landmarks: the landmarks of {name} are degenerate "
                             f"(all on a line)") from None
        z = np.where(np.isfinite(z), z, 0.0)
        depth[f, rr, cc] = z
        mask[f] = hull & (depth[f] > 0)
    return DepthMaps(depth, mask, "landmarks")


def bundle_adjust(K: np.ndarray, lm: Landmarks, depth: DepthMaps | None, poses: np.ndarray,
                  cfg: BAConfig) -> BAOutcome:
    """BA from ``poses`` (F, 4, 4) in ``cfg.parameterization``; frame 0 fixes the gauge.

    "depth": landmarks without a valid depth sample (outside the depth map, on a silhouette)
    get weight 0; ``depth`` is required. "classical": see :func:`classical_bundle_adjust`
    (``depth`` may be None). Raises :class:`facesfm.solvers.SolverError` if the problem is
    degenerate.
    """
    if cfg.parameterization == "classical":
        return classical_bundle_adjust(K, lm, depth, poses, cfg)
    if depth is None:
        raise InputError("the depth-parameterised BA needs depth maps")
    from facesfm.solve.fusion import sample_depth
    from facesfm.solvers import BAProblem, BAState, LMSolver, Parameterization, TopCovisible

    t0 = time.perf_counter()
    F = len(poses)
    z, valid = sample_depth(depth.depth, lm.uv)
    w = np.where(valid, lm.weight, 0.0)
    kernel = _kernel(cfg)
    T = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)
    uv = np.where(w[..., None] > 0, lm.uv, 0.0)
    problem = BAProblem(
        K=T(np.repeat(K[None], F, 0)), uv=T(uv), weight=T(w), depth=T(np.where(w > 0, z, 1.0)),
        parameterization=Parameterization.DEPTH, kernel=kernel,
        pairs=TopCovisible(cfg.pairs_k), depth_corrections=cfg.depth_corrections,
        depth_prior_weight=cfg.depth_prior_weight, fixed_frame=0)
    solver = LMSolver(max_iterations=cfg.max_iterations)
    with torch.no_grad():
        res = solver.solve(problem, BAState(T(poses)))
    st = res.state
    return BAOutcome(
        poses=st.poses.numpy().copy(),
        log_scale=st.log_scale.numpy().copy(),
        depth_correction=None if st.depth_correction is None else st.depth_correction.numpy(),
        iterations=res.iterations, converged=res.converged, message=res.message,
        initial_cost=float(res.cost[0]), final_cost=res.final_cost, rms_px=res.rms_px,
        seconds=time.perf_counter() - t0)


def _kernel(cfg: BAConfig):
    """The solver kernel object named by ``cfg.kernel`` at scale ``cfg.kernel_px``."""
    from facesfm.solvers import CauchyKernel, HuberKernel, TrivialKernel

    return {"huber": HuberKernel, "cauchy": CauchyKernel,
            "none": lambda _: TrivialKernel()}[cfg.kernel](cfg.kernel_px)


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
    from facesfm.solvers import BAProblem, BAState, LMSolver, Parameterization

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
        kernel = _kernel(cfg)
        T = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)
        w = lm.weight[:, cols]
        problem = BAProblem(
            K=T(np.repeat(K[None], F, 0)), uv=T(np.where(w[..., None] > 0, lm.uv[:, cols], 0.0)),
            weight=T(w), parameterization=Parameterization.CLASSICAL, kernel=kernel,
            fixed_frame=0)
        with torch.no_grad():
            res = LMSolver(max_iterations=cfg.max_iterations, ftol=cfg.ftol).solve(
                problem, BAState(T(poses), T(X[cols])))
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


def track_bundle_adjust(K: np.ndarray, lm: Landmarks, tracks: Tracks, depth: DepthMaps | None,
                        poses: np.ndarray, cfg: BAConfig, landmark_weight: float) -> BAOutcome:
    """:func:`classical_bundle_adjust` of the landmarks (weights x ``landmark_weight``) and the
    photometric ``tracks`` (weight 1) together, from ``poses``. The outcome's points (and
    start points) are the landmarks' only; its report (RMS, costs) covers both."""
    N = lm.uv.shape[1]
    both = Landmarks(np.concatenate([lm.uv, tracks.uv], 1),
                     np.concatenate([lm.weight * landmark_weight, tracks.weight], 1),
                     np.concatenate([lm.ids, -1 - np.arange(len(tracks))]), lm.source)
    out = classical_bundle_adjust(K, both, depth, poses, cfg)
    out.points = out.points[:N]
    out.points_initial = out.points_initial[:N]
    return out


def landmark_points(K: np.ndarray, lm: Landmarks, depth: np.ndarray, poses: np.ndarray,
                    scale: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) world landmark points: the median over observing frames (per coordinate) of
    each landmark lifted with its (scaled) sampled depth; NaN where no frame has a valid depth
    for it. The median, because a landmark on an occlusion edge (the jaw line over the neck, a
    lid over the eyeball) samples a depth mixed with the surface behind in some frames: on
    ground-truth depth such a frame's lift is off by up to 14 mm, which the mean kept."""
    from facesfm.solve.fusion import sample_depth

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


def reprojection_errors(K: np.ndarray, lm: Landmarks, X: np.ndarray,
                        poses: np.ndarray) -> np.ndarray:
    """(F,) RMS pixel distance between observed landmarks and the projections of X (N, 3)
    (observations with weight > 0 and a finite point; NaN for a frame with none)."""
    from facesfm.geometry.camera import project, transform

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


# ----------------------------------------------------------------------------- pipeline


def _need_sequence(frames: FrameSet, option: str):
    if frames.sequence is None:
        raise InputError(f"{option} needs a facesfm sequence folder as input, got {frames.path} "
                         f"({frames.source})")
    return frames.sequence


def _warn(echo, msg: str) -> None:
    if echo is not None:
        echo(f"warning: {msg}")
    else:
        warnings.warn(msg, stacklevel=3)


def solve_frames(frames: FrameSet, cfg: SolveConfig, echo=None) -> SolveResult:
    """Run every stage on ``frames`` (no files written; see :func:`run_solve`)."""
    from facesfm.solve.fusion import fuse_depth_maps, mesh_from_depth

    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - t
        t = now

    seq = frames.sequence
    if cfg.oracle_landmarks:
        _need_sequence(frames, "--oracle-landmarks")
    if cfg.depth == "oracle":
        _need_sequence(frames, "--oracle-depth")
    if cfg.poses_init in ("gt", "gt-perturbed"):
        _need_sequence(frames, f"--poses-init {cfg.poses_init}")
    from facesfm.weights import resolve_weights

    nets = None
    sfm_ckpt = resolve_weights(cfg.checkpoint, "sfm")  # a path, or "ict" = shipped
    lm_ckpt = resolve_weights(cfg.landmark_checkpoint, "landmarks")
    if not cfg.oracle_landmarks and lm_ckpt is None and sfm_ckpt is not None:
        from facesfm.solve.learned import recorded_detector

        lm_ckpt = recorded_detector(sfm_ckpt)  # the detector the sfm stage used
    if not cfg.oracle_landmarks and lm_ckpt is None:
        raise InputError("no --landmark-checkpoint given: the landmark detector needs a trained "
                         "network (or use --oracle-landmarks with a sequence folder)")
    if cfg.needs_sfm_networks and sfm_ckpt is None:
        raise InputError("no --checkpoint given: the depth/pose networks need a trained sfm "
                         "checkpoint (or use --depth landmarks and --poses-init landmarks; "
                         "or --oracle-depth and --poses-init gt|gt-perturbed with a sequence "
                         "folder)")
    if sfm_ckpt is not None or lm_ckpt is not None:
        from facesfm.solve.learned import load_networks

        nets = load_networks(sfm_ckpt if cfg.needs_sfm_networks else None,
                             None if cfg.oracle_landmarks else lm_ckpt, cfg.device)
    lap("load")

    # landmarks, and which frames show a face
    if cfg.oracle_landmarks:
        lm = oracle_landmarks(frames, cfg.landmarks)
    else:
        from facesfm.solve.learned import run_landmarks

        uv, w = run_landmarks(nets, frames.images)
        n = uv.shape[1] if cfg.landmarks is None else min(cfg.landmarks, uv.shape[1])
        lm = Landmarks(uv[:, :n], w[:, :n], np.arange(n, dtype=np.int64), "network")
    keep = select_face_frames(lm, cfg.min_face_landmarks)
    if not keep.all():
        bad = [frames.names[i] for i in np.flatnonzero(~keep)]
        _warn(echo, f"no face found in {len(bad)} frame(s), skipped: {', '.join(bad[:10])}"
                    f"{' ...' if len(bad) > 10 else ''}")
    if keep.sum() < cfg.min_frames:
        raise InputError(
            f"{frames.path}: a face was found in only {int(keep.sum())} of {len(keep)} frames "
            f"(>= {cfg.min_face_landmarks} landmarks each); at least {cfg.min_frames} needed")
    lap("landmarks")

    factorised = None
    if cfg.poses_init == "landmarks":  # needs only the tracks: may drop frames before depth
        factorised = landmark_poses(frames.K, lm.select(keep))
        placed = np.all(np.isfinite(factorised.reshape(len(factorised), -1)), 1)
        if not placed.all():
            idx = np.flatnonzero(keep)[~placed]
            bad = [frames.names[i] for i in idx]
            _warn(echo, f"the landmark factorisation could not place {len(bad)} frame(s), "
                        f"skipped: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}")
            keep = keep.copy()
            keep[idx] = False
            factorised = factorised[placed]
            if keep.sum() < cfg.min_frames:
                raise InputError(f"{frames.path}: the landmark factorisation placed only "
                                 f"{int(keep.sum())} frames; at least {cfg.min_frames} needed")
        lap("poses")
    used = frames.select(keep)
    lm = lm.select(keep)

    dm = None
    if cfg.depth == "oracle":
        dm = oracle_depth(frames)
        dm = DepthMaps(dm.depth[keep], dm.mask[keep], dm.source)
    elif cfg.depth == "network":
        from facesfm.solve.learned import run_depth

        d = run_depth(nets, used.images)
        mask = hull_masks(lm.uv, lm.weight, used.height, used.width)
        dm = DepthMaps(d, mask, "network")
    lap("depth")

    gt = None if seq is None else seq.cam_T_world[keep]
    if cfg.poses_init == "network":
        from facesfm.solve.learned import run_poses

        poses0 = run_poses(nets, used.images)
    elif cfg.poses_init == "landmarks":
        poses0 = factorised
    elif cfg.poses_init == "gt":
        poses0 = gt.copy()
    else:
        poses0 = perturbed_poses(gt, cfg.perturb_rot_deg, cfg.perturb_trans_mm,
                                 cfg.perturb_seed)
    if cfg.poses_init != "landmarks":
        lap("poses")

    # BA off is pure fusion (depth scale 1, landmarks lifted from the depth maps), unless the
    # depth maps are to be built from triangulated landmarks
    classical = cfg.ba.parameterization == "classical" and (cfg.ba.enabled or dm is None)
    if classical:
        ba = classical_bundle_adjust(used.K, lm, dm, poses0, cfg.ba)
        ba.start = "factorisation" if cfg.poses_init == "landmarks" else cfg.poses_init
        if cfg.poses_init == "landmarks" and cfg.ba.enabled:
            # the factorisation can land in the wrong basin (a depth reflection it resolved
            # the wrong way, a bad scale); the mean face's per-frame poses cannot: the BA runs
            # from both and keeps the lower cost
            tp = template_poses(used.K, lm)
            if np.all(np.isfinite(tp)):
                alt = classical_bundle_adjust(used.K, lm, dm, tp, cfg.ba)
                if alt.final_cost < ba.final_cost:
                    ba, poses0 = alt, tp
                    ba.start = "template"
        X0 = ba.points_initial
    elif cfg.ba.enabled:
        ba = bundle_adjust(used.K, lm, dm, poses0, cfg.ba)
    else:
        ba = BAOutcome(poses0.copy(), np.zeros(len(poses0)), None)
    lap("ba")

    if dm is None:  # --depth landmarks: from the BA's points
        dm = landmark_depth_maps(used.K, lm, ba.points, ba.poses, used.height, used.width,
                                 used.names)
        lap("depth")
    photometric: dict = {}
    if cfg.tracks.enabled:
        from facesfm.solve.tracks import patch_tracks

        try:
            tracks = patch_tracks(used.images, dm.depth, dm.mask, used.K, ba.poses,
                                  np.exp(ba.log_scale), cfg.tracks)
        except InputError as e:  # nothing to match: the landmark-only BA stands
            tracks = None
            photometric["tracks"] = {"skipped": str(e)}
            _warn(echo, f"{e}; kept the landmark-only bundle adjustment")
        lap("tracks")
        if tracks is not None:
            photometric["tracks"] = tracks.summary()
            start = ba.start
            ba = track_bundle_adjust(used.K, lm, tracks,
                                     None if cfg.depth == "landmarks" else dm, ba.poses,
                                     replace(cfg.ba, ftol=cfg.tracks.ftol),
                                     cfg.tracks.landmark_weight)
            ba.start = f"{start} + tracks"
            lap("ba")
            if cfg.depth == "landmarks":
                dm = landmark_depth_maps(used.K, lm, ba.points, ba.poses, used.height,
                                         used.width, used.names)
                lap("depth")
    scale = np.exp(ba.log_scale)
    if classical:
        X1 = ba.points
    else:
        X0 = landmark_points(used.K, lm, dm.depth, poses0)
        X1 = landmark_points(used.K, lm, dm.depth, ba.poses, scale)
    rep0 = reprojection_errors(used.K, lm, X0, poses0)
    rep1 = reprojection_errors(used.K, lm, X1, ba.poses)
    if cfg.stereo.enabled:
        from facesfm.solve.stereo import refine_depth

        st = refine_depth(used.images, dm.depth, dm.mask, used.K, ba.poses, scale, cfg.stereo)
        if st.mask.any():
            photometric["stereo"] = st.summary(dm.mask)
            dm = DepthMaps(st.depth.astype(np.float32), st.mask, dm.source + "+stereo")
        else:  # fuse the unrefined maps rather than nothing
            msg = ("stereo: no pixel found a photometric match (the frames may be too far "
                   "apart, the face too flat in texture, or the poses wrong)")
            photometric["stereo"] = {"skipped": msg}
            _warn(echo, f"{msg}; fused the unrefined depth maps")
        lap("stereo")
    fmask = dm.mask
    if cfg.fusion.consistent_views > 0:
        from facesfm.solve.fusion import consistent_masks

        fmask = consistent_masks(dm.depth, dm.mask, used.K, ba.poses, scale,
                                 cfg.fusion.consistent_views, cfg.fusion.consistency_window,
                                 cfg.fusion.consistency_mm)
        if not fmask.any():
            raise InputError(f"fusion: no pixel is seen consistently by "
                             f"{cfg.fusion.consistent_views} frames (--consistent-views)")
    cloud = fuse_depth_maps(used.images, dm.depth, fmask, used.K, ba.poses, scale, cfg.fusion)
    lap("fusion")
    mesh = mesh_from_depth(used.images, dm.depth, fmask, used.K, ba.poses, scale, cloud,
                           cfg.fusion)
    lap("mesh")
    res = SolveResult(used, keep, lm, dm, poses0, gt, ba, X1, rep0, rep1, cloud, mesh,
                      timings, {}, cfg, photometric=photometric)
    if cfg.evaluate and seq is not None:
        res.evaluation = evaluate_against_gt(res)
        lap("evaluate")
    return res


def evaluate_against_gt(res: SolveResult, max_points: int = 5000) -> dict:
    """Pose errors (learned and optimised vs GT) and cloud / mesh accuracy after Umeyama
    (landmarks) + point-to-surface ICP alignment to the GT mesh (mm); the cloud's accuracy
    also at the landmarks' scale with rigid ICP (``*_landmark_scale``)."""
    import trimesh

    from facesfm.eval.align import AlignConfig, AlignmentError, align_reconstruction
    from facesfm.eval.metrics import point_to_surface_distances, pose_errors

    seq = res.frames.sequence
    out: dict = {}
    gt = res.poses_gt
    if len(gt) >= 3:
        for name, P in (("initial", res.poses_initial), ("optimised", res.ba.poses)):
            try:
                out[f"poses_{name}"] = pose_errors(P, gt, "sim3").summary()
            except ValueError as e:
                out[f"poses_{name}"] = {"error": str(e)}
    mesh_path = seq.root / "mesh.ply"
    if not mesh_path.is_file():
        return out
    gm = trimesh.load(mesh_path, process=False)
    gv, gf = np.asarray(gm.vertices, dtype=np.float64), np.asarray(gm.faces, dtype=np.int64)
    X = res.landmarks_xyz
    ids = res.landmarks.ids
    ok = np.all(np.isfinite(X), 1)
    init = None
    if ok.sum() >= 3:
        init = (X[ok], seq.landmark_xyz[ids[ok]])
    if init is not None:
        # Second protocol: the scale of the landmarks, rigid ICP. It cannot shrink a noisy
        # cloud (a free ICP scale does, which flatters it; down to a collapse).
        try:
            al_lm = align_reconstruction(
                res.cloud.points, gv, gf, init,
                AlignConfig(max_points=max_points, max_correspondence_mm=10.0, icp_scale=False))
        except AlignmentError as e:
            out["alignment_landmark_scale"] = {"error": str(e)}
        else:
            out["alignment_landmark_scale"] = {"scale": float(al_lm.transform.s),
                                               "fitness": al_lm.fitness,
                                               "inlier_rmse_mm": al_lm.inlier_rmse}
            out["cloud_to_gt_surface_mm_landmark_scale"] = _distance_stats(
                point_to_surface_distances(al_lm.aligned, gv, gf))
    try:
        al = align_reconstruction(res.cloud.points, gv, gf, init,
                                  AlignConfig(max_points=max_points, max_correspondence_mm=10.0))
    except AlignmentError as e:
        out["alignment"] = {"error": str(e)}
        return out
    d_cloud = point_to_surface_distances(al.aligned, gv, gf)
    d_mesh = point_to_surface_distances(al.transform.apply(res.mesh.vertices), gv, gf)
    S = al.transform
    out["alignment"] = {"scale": float(S.s), "fitness": al.fitness,
                        "inlier_rmse_mm": al.inlier_rmse}
    for name, d in (("cloud", d_cloud), ("mesh", d_mesh)):
        out[f"{name}_to_gt_surface_mm"] = _distance_stats(d)
    out["completeness"] = gt_completeness(res, al.aligned)
    return out


def _distance_stats(d: np.ndarray) -> dict:
    return {"mean": float(d.mean()), "median": float(np.median(d)),
            "p95": float(np.percentile(d, 95)), "max": float(d.max()), "n": len(d)}


def gt_completeness(res: SolveResult, aligned: np.ndarray, threshold_mm: float = 2.0,
                    stride: int = 4) -> dict:
    """How much of the face the cameras saw the cloud covers: the GT surface points of every
    used frame (GT depth inside the GT face mask, every ``stride``-th pixel, placed with the
    GT poses) that have an aligned cloud point within ``threshold_mm``. The counterpart of the
    cloud's accuracy: a cloud that drops points gains accuracy and loses completeness."""
    from scipy.spatial import cKDTree

    from facesfm.solve.fusion import depth_to_points

    seq = res.frames.sequence
    K = seq.K
    pts = []
    for f, i in enumerate(np.flatnonzero(res.kept)):
        d = seq.depth(i)
        X, _, _ = depth_to_points(d, K, seq.mask(i) & (d > 0), stride)
        R, t = res.poses_gt[f, :3, :3], res.poses_gt[f, :3, 3]
        pts.append((X - t) @ R)
    P = np.concatenate(pts) if pts else np.zeros((0, 3))
    if len(P) == 0:
        return {"threshold_mm": threshold_mm, "fraction": float("nan"), "gt_points": 0}
    dist, _ = cKDTree(aligned).query(P)
    return {"threshold_mm": threshold_mm, "fraction": float((dist < threshold_mm).mean()),
            "gt_points": len(P)}


def run_solve(input_path, out, cfg: SolveConfig = SolveConfig(), overwrite: bool = False,
              focal: float | None = None, intrinsics: str | None = None,
              echo=print, html: bool = True) -> SolveResult:
    """Read ``input_path``, run :func:`solve_frames` and write the output folder ``out``
    atomically (cloud.ply, mesh.ply, mesh.obj, cameras.json, colmap/, report.json,
    report.html). Nothing is left at ``out`` when any step fails."""
    from facesfm.io import atomic_dir
    from facesfm.solve.inputs import load_input
    from facesfm.solve.outputs import write_outputs

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output folder exists: {out} (pass --overwrite to replace it)")
    t0 = time.perf_counter()
    frames = load_input(input_path, focal=focal, intrinsics=intrinsics)
    t_in = time.perf_counter() - t0
    res = solve_frames(frames, cfg, echo=echo)
    res.timings = {"input": t_in, **res.timings}
    t1 = time.perf_counter()
    def final_timings():  # the reports' own writing is the only part they do not count
        res.timings["outputs"] = time.perf_counter() - t1
        res.timings["total"] = time.perf_counter() - t0

    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_outputs(tmp, res, html=html, before_reports=final_timings)
    res.out = out
    return res


def build_solve_config(config=None, **options) -> SolveConfig:
    """SolveConfig from defaults, then the YAML file ``config``, then the command-line
    ``options`` that are not None/False: checkpoint, landmark_checkpoint, oracle_landmarks,
    oracle_depth, depth, oracle_poses, poses_init, perturb "DEG,MM", seed, landmarks, ba (bool),
    ba_parameterization, mesh_method, consistent_views, tracks (bool), stereo (bool)."""
    from facesfm.config import from_dict, load_yaml, to_dict

    base = load_yaml(SolveConfig, config) if config is not None else SolveConfig()
    d = to_dict(base)
    o = {k: v for k, v in options.items() if v is not None and v is not False}
    allowed = {"checkpoint", "landmark_checkpoint", "oracle_landmarks", "oracle_depth",
               "depth", "oracle_poses", "poses_init", "perturb", "seed", "landmarks", "ba",
               "ba_parameterization", "mesh_method", "consistent_views", "tracks", "stereo"}
    if set(o) - allowed:
        raise TypeError(f"build_solve_config: unknown options {sorted(set(o) - allowed)}")
    for k in ("checkpoint", "landmark_checkpoint", "oracle_landmarks", "landmarks"):
        if k in o:
            d[k] = str(o[k]) if k.endswith("checkpoint") else o[k]
    if o.get("oracle_depth"):
        if o.get("depth", "oracle") != "oracle":
            raise InputError(f"--oracle-depth and --depth {o['depth']} disagree")
        d["depth"], d["oracle_depth"] = "oracle", True
    elif "depth" in o:
        d["depth"], d["oracle_depth"] = o["depth"], o["depth"] == "oracle"
    if "ba_parameterization" in o:
        d["ba"]["parameterization"] = o["ba_parameterization"]
    if o.get("oracle_poses"):
        if o.get("poses_init", "gt") != "gt":
            raise InputError(f"--oracle-poses and --poses-init {o['poses_init']} disagree")
        d["poses_init"] = "gt"
    elif "poses_init" in o:
        d["poses_init"] = o["poses_init"]
    if "perturb" in o:
        try:
            deg, mm = (float(x) for x in str(o["perturb"]).split(","))
        except ValueError:
            raise InputError(f"--perturb {o['perturb']}: expected DEG,MM, e.g. 3,10") from None
        if not (deg >= 0 and mm >= 0):
            raise InputError(f"--perturb {o['perturb']}: must be >= 0")
        d["perturb_rot_deg"], d["perturb_trans_mm"] = deg, mm
    if "seed" in o:
        d["perturb_seed"] = o["seed"]
    if "ba" in options and options["ba"] is not None:
        d["ba"]["enabled"] = bool(options["ba"])
    if "mesh_method" in o:
        d["fusion"]["mesh_method"] = o["mesh_method"]
    if "consistent_views" in o:
        d["fusion"]["consistent_views"] = o["consistent_views"]
    for k in ("tracks", "stereo"):
        if options.get(k) is not None:
            d[k]["enabled"] = bool(options[k])
    return from_dict(SolveConfig, d, str(config) if config is not None else "options")
