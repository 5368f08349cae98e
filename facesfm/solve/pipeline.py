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

Bundle adjustment (:mod:`facesfm.solvers`, depth parameterisation, equation 2 of the paper):
landmark depths are sampled bilinearly from the depth maps at the landmark pixels; the first
usable frame fixes the gauge (its pose and depth scale are held); the optimised poses and the
per-frame log depth scales ``s_f`` feed fusion (depth maps times ``exp(s_f)``).

Frames where no face is found (fewer than ``min_face_landmarks`` landmarks with weight > 0)
are skipped with a warning; fewer than ``min_frames`` usable frames is an InputError.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facesfm.errors import InputError
from facesfm.solve.fusion import FusionConfig, PointCloud, SurfaceMesh
from facesfm.solve.inputs import FrameSet

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
    "evaluate_against_gt",
    "hull_masks",
    "landmark_points",
    "oracle_depth",
    "oracle_landmarks",
    "perturbed_poses",
    "reprojection_errors",
    "run_solve",
    "select_face_frames",
    "solve_frames",
]

POSE_INITS = ("network", "gt", "gt-perturbed")
KERNELS = ("huber", "cauchy", "none")


@dataclass(frozen=True)
class BAConfig:
    """Test-time bundle adjustment.

    enabled:            run it (off: the initial poses are final, depth scale 1).
    kernel, kernel_px:  robust kernel ("huber", "cauchy" or "none") and its scale in px.
    pairs_k:            each target frame pairs with the ``pairs_k`` most co-visible frames.
    depth_corrections:  also estimate per-landmark log depth corrections (held near 0 by
                        ``depth_prior_weight``).
    max_iterations:     LM iteration cap (it runs to convergence below it).
    """

    enabled: bool = True
    kernel: str = "huber"
    kernel_px: float = 2.0
    pairs_k: int = 4
    depth_corrections: bool = True
    depth_prior_weight: float = 1e3
    max_iterations: int = 100

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise InputError(f"ba.kernel={self.kernel!r} is not one of {list(KERNELS)}")
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
    oracle_depth:      GT depth maps and masks (sequence input only; an analysis switch).
    poses_init:        "network", "gt" or "gt-perturbed" (GT poses moved by a random
                       rotation of ``perturb_rot_deg`` and translation of ``perturb_trans_mm``
                       per frame, except the first, seeded by ``perturb_seed``).
    landmarks:         use landmark IDs 0..landmarks-1 (None: all the source has).
    min_face_landmarks: a frame with fewer observed landmarks has no face: skipped.
    min_frames:        fewer usable frames than this is an error.
    evaluate:          with GT (sequence input): pose errors and cloud/mesh accuracy.
    """

    checkpoint: str | None = None
    landmark_checkpoint: str | None = None
    oracle_landmarks: bool = False
    oracle_depth: bool = False
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

    def __post_init__(self):
        if self.poses_init not in POSE_INITS:
            raise InputError(f"--poses-init {self.poses_init}: choose one of {list(POSE_INITS)}")
        if self.min_frames < 2:
            raise InputError(f"min_frames must be >= 2, got {self.min_frames}")
        if self.landmarks is not None and self.landmarks < 1:
            raise InputError(f"--landmarks must be >= 1, got {self.landmarks}")

    @property
    def needs_sfm_networks(self) -> bool:
        return not self.oracle_depth or self.poses_init == "network"

    def stage_sources(self) -> dict:
        """Which stages are oracle (for reports and the benchmark)."""
        return {
            "landmarks": "oracle (GT landmarks.npz)" if self.oracle_landmarks else "network",
            "depth": "oracle (GT depth maps, masks)" if self.oracle_depth else "network",
            "initial_poses": {"network": "network (PoseNet)", "gt": "oracle (GT poses)",
                              "gt-perturbed": f"oracle (GT poses perturbed by "
                              f"{self.perturb_rot_deg} deg / {self.perturb_trans_mm} mm)"
                              }[self.poses_init],
            "ba": "LMSolver (depth parameterisation)" if self.ba.enabled else "off",
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
    """poses (F, 4, 4) optimised cam_T_world; log_scale (F,) depth log scales; and the
    solver's report (iterations, converged, message, costs, rms_px, seconds)."""

    poses: np.ndarray
    log_scale: np.ndarray
    depth_correction: np.ndarray | None
    iterations: int = 0
    converged: bool = False
    message: str = "not run"
    initial_cost: float = float("nan")
    final_cost: float = float("nan")
    rms_px: float = float("nan")
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"iterations": self.iterations, "converged": self.converged,
                "message": self.message, "initial_cost": self.initial_cost,
                "final_cost": self.final_cost, "rms_px": self.rms_px, "seconds": self.seconds,
                "depth_scale": np.exp(self.log_scale).tolist()}


@dataclass
class SolveResult:
    """Everything ``facesfm solve`` produced (the output folder holds the files).

    frames:         the usable frames (FrameSet after skipping frames without a face).
    kept:           (F_in,) bool, which input frames were used.
    landmarks, depth: stage outputs for the kept frames.
    poses_initial:  (F, 4, 4) learned (or oracle/perturbed) cam_T_world.
    poses_gt:       (F, 4, 4) GT cam_T_world or None.
    ba:             :class:`BAOutcome`.
    landmarks_xyz:  (N, 3) world landmark points (mean of their scaled lifts), NaN if unseen.
    reproj_initial_px, reproj_final_px: (F,) per-frame RMS reprojection error of those points.
    cloud, mesh:    the fused :class:`PointCloud` and :class:`SurfaceMesh`.
    timings:        seconds per stage.
    evaluation:     metrics against the ground truth (empty without GT).
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


def bundle_adjust(K: np.ndarray, lm: Landmarks, depth: DepthMaps, poses: np.ndarray,
                  cfg: BAConfig) -> BAOutcome:
    """Depth-parameterised BA from ``poses`` (F, 4, 4); frame 0 fixes the gauge.

    Landmarks without a valid depth sample (outside the depth map, on a silhouette) get
    weight 0. Raises :class:`facesfm.solvers.SolverError` if the problem is degenerate.
    """
    from facesfm.solve.fusion import sample_depth
    from facesfm.solvers import (
        BAProblem,
        BAState,
        CauchyKernel,
        HuberKernel,
        LMSolver,
        Parameterization,
        TopCovisible,
        TrivialKernel,
    )

    t0 = time.perf_counter()
    F = len(poses)
    z, valid = sample_depth(depth.depth, lm.uv)
    w = np.where(valid, lm.weight, 0.0)
    kernel = {"huber": HuberKernel(cfg.kernel_px), "cauchy": CauchyKernel(cfg.kernel_px),
              "none": TrivialKernel()}[cfg.kernel]
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


def landmark_points(K: np.ndarray, lm: Landmarks, depth: np.ndarray, poses: np.ndarray,
                    scale: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) world landmark points: the mean over observing frames of each landmark lifted
    with its (scaled) sampled depth; NaN where no frame has a valid depth for it."""
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
    cnt = ok.sum(0)
    X = (Xw * ok[..., None]).sum(0) / np.maximum(cnt, 1)[:, None]
    X[cnt == 0] = np.nan
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
        timings[name] = now - t
        t = now

    seq = frames.sequence
    if cfg.oracle_landmarks:
        _need_sequence(frames, "--oracle-landmarks")
    if cfg.oracle_depth:
        _need_sequence(frames, "--oracle-depth")
    if cfg.poses_init != "network":
        _need_sequence(frames, f"--poses-init {cfg.poses_init}")
    nets = None
    lm_ckpt = cfg.landmark_checkpoint
    if not cfg.oracle_landmarks and lm_ckpt is None and cfg.checkpoint is not None:
        from facesfm.solve.learned import recorded_detector

        lm_ckpt = recorded_detector(cfg.checkpoint)  # the detector the sfm stage used
    if not cfg.oracle_landmarks and lm_ckpt is None:
        raise InputError("no --landmark-checkpoint given: the landmark detector needs a trained "
                         "network (or use --oracle-landmarks with a sequence folder)")
    if cfg.needs_sfm_networks and cfg.checkpoint is None:
        raise InputError("no --checkpoint given: the depth/pose networks need a trained sfm "
                         "checkpoint (or use --oracle-depth and --poses-init gt|gt-perturbed "
                         "with a sequence folder)")
    if cfg.checkpoint is not None or lm_ckpt is not None:
        from facesfm.solve.learned import load_networks

        nets = load_networks(cfg.checkpoint if cfg.needs_sfm_networks else None,
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
    used = frames.select(keep)
    lm = lm.select(keep)
    lap("landmarks")

    if cfg.oracle_depth:
        dm = oracle_depth(frames)
        dm = DepthMaps(dm.depth[keep], dm.mask[keep], dm.source)
    else:
        from facesfm.solve.learned import run_depth

        d = run_depth(nets, used.images)
        mask = hull_masks(lm.uv, lm.weight, used.height, used.width)
        dm = DepthMaps(d, mask, "network")
    lap("depth")

    gt = None if seq is None else seq.cam_T_world[keep]
    if cfg.poses_init == "network":
        from facesfm.solve.learned import run_poses

        poses0 = run_poses(nets, used.images)
    elif cfg.poses_init == "gt":
        poses0 = gt.copy()
    else:
        poses0 = perturbed_poses(gt, cfg.perturb_rot_deg, cfg.perturb_trans_mm,
                                 cfg.perturb_seed)
    lap("poses")

    if cfg.ba.enabled:
        ba = bundle_adjust(used.K, lm, dm, poses0, cfg.ba)
    else:
        ba = BAOutcome(poses0.copy(), np.zeros(len(poses0)), None)
    lap("ba")

    scale = np.exp(ba.log_scale)
    X0 = landmark_points(used.K, lm, dm.depth, poses0)
    X1 = landmark_points(used.K, lm, dm.depth, ba.poses, scale)
    rep0 = reprojection_errors(used.K, lm, X0, poses0)
    rep1 = reprojection_errors(used.K, lm, X1, ba.poses)
    cloud = fuse_depth_maps(used.images, dm.depth, dm.mask, used.K, ba.poses, scale, cfg.fusion)
    lap("fusion")
    mesh = mesh_from_depth(used.images, dm.depth, dm.mask, used.K, ba.poses, scale, cloud,
                           cfg.fusion)
    lap("mesh")
    res = SolveResult(used, keep, lm, dm, poses0, gt, ba, X1, rep0, rep1, cloud, mesh,
                      timings, {}, cfg)
    if cfg.evaluate and seq is not None:
        res.evaluation = evaluate_against_gt(res)
        lap("evaluate")
    return res


def evaluate_against_gt(res: SolveResult, max_points: int = 5000) -> dict:
    """Pose errors (learned and optimised vs GT) and cloud / mesh accuracy after Umeyama
    (landmarks) + point-to-surface ICP alignment to the GT mesh (mm)."""
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
        out[f"{name}_to_gt_surface_mm"] = {
            "mean": float(d.mean()), "median": float(np.median(d)),
            "p95": float(np.percentile(d, 95)), "max": float(d.max()), "n": len(d)}
    return out


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
    ``options`` that are not None/False: checkpoint, landmark_checkpoint, oracle_landmarks, oracle_depth,
    oracle_poses, poses_init, perturb "DEG,MM", seed, landmarks, ba (bool), mesh_method."""
    from facesfm.config import from_dict, load_yaml, to_dict

    base = load_yaml(SolveConfig, config) if config is not None else SolveConfig()
    d = to_dict(base)
    o = {k: v for k, v in options.items() if v is not None and v is not False}
    allowed = {"checkpoint", "landmark_checkpoint", "oracle_landmarks", "oracle_depth", "oracle_poses", "poses_init",
               "perturb", "seed", "landmarks", "ba", "mesh_method"}
    if set(o) - allowed:
        raise TypeError(f"build_solve_config: unknown options {sorted(set(o) - allowed)}")
    for k in ("checkpoint", "landmark_checkpoint", "oracle_landmarks", "oracle_depth",
              "landmarks"):
        if k in o:
            d[k] = str(o[k]) if k.endswith("checkpoint") else o[k]
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
    return from_dict(SolveConfig, d, str(config) if config is not None else "options")
