"""The stages of ``facesfm solve`` and the values they pass: each stage is a function of plain
values (:class:`~facesfm.solvers.landmark_ba.Landmarks`,
:class:`~facesfm.solvers.landmark_ba.DepthMaps`, poses, :class:`~facesfm.solvers.landmark_ba.BAOutcome`)
that :func:`facesfm.solve.pipeline.solve_frames` calls in order; the run ends in a
:class:`SolveResult`.

Each learned stage has an *oracle* stand-in read from a sequence folder's ground truth
(:func:`oracle_landmarks`, :func:`oracle_depth`, ``--poses-init gt``), so the pipeline runs end
to end before the networks are trained. Two stages also run without any network beyond the
landmark detector: initial poses from a factorisation of the landmark tracks
(:func:`facesfm.solvers.initial_poses.landmark_poses`) and depth maps interpolated from the
bundle-adjusted landmark points (:func:`landmark_depth_maps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.interpolate import griddata
from scipy.spatial import QhullError

from facesfm.errors import InputError, warn
from facesfm.eval.results import SolveEvaluation
from facesfm.geometry.camera import project, transform
from facesfm.geometry.multiview import hull_masks
from facesfm.solve.checks import ResultChecks
from facesfm.solve.config import SolveConfig
from facesfm.solve.frontend import (
    FaceTrack,
    KeyframeFinder,
    crop_frames,
    face_agreement,
    find_faces,
    frame_crops,
    keyframes,
    mediapipe_landmarks,
    person_masks,
    view_homography,
    view_to_image,
    warp_view,
)
from facesfm.solve.fusion import (
    PointCloud,
    SurfaceMesh,
    consistent_masks,
    fuse_depth_maps,
    mesh_from_depth,
)
from facesfm.solve.inputs import FrameSet, video_frame_name
from facesfm.solve.register import Registration
from facesfm.solvers.focal import FocalEstimate
from facesfm.solvers.initial_poses import landmark_poses, perturbed_poses, template_poses
from facesfm.solvers.landmark_ba import (
    BAOutcome,
    DepthMaps,
    Landmarks,
    bundle_adjust,
    classical_bundle_adjust,
    landmark_points,
    reprojection_errors,
)
from facesfm.solvers.problem import SolverError
from facesfm.training.inference import (
    Networks,
    load_networks,
    recorded_detector,
    run_depth,
    run_landmarks,
    run_poses,
)
from facesfm.weights import resolve_weights

__all__ = [
    "SolveResult",
    "adjust",
    "detect_landmarks",
    "face_frames",
    "factorised_start",
    "find_faces_and_crop",
    "first_pass_views",
    "fuse",
    "initial_poses",
    "landmark_depth_maps",
    "landmark_reprojection",
    "load_stage_networks",
    "make_depth_maps",
    "need_sequence",
    "oracle_depth",
    "oracle_landmarks",
    "person_region",
    "points_depth_maps",
    "redetect_keyframes",
    "select_face_frames",
    "within",
]


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
    evaluation:     :class:`facesfm.eval.results.SolveEvaluation` against the ground truth
                    (None without GT, or with ``evaluate`` off).
    photometric:    summaries of the photometric stages that ran: "tracks"
                    (:meth:`Tracks.summary`) and "stereo" (:meth:`StereoResult.summary`).
    checks:         :class:`ResultChecks`, what :func:`facesfm.solve.checks.check_result`
                    measured and found wrong (a solve with any problem is written only with
                    ``--keep-unreliable``, marked unreliable).
    input_sha256:   :func:`facesfm.data.format.frames_digest` of the input frames as read
                    (set by :func:`facesfm.solve.pipeline.run_solve`).
    focal:          the focal-length estimate where K was only a guess (None: K was given,
                    or the estimate did not run).
    keyframes:      (F,) bool, the frames the joint stages (BA, tracks, plane sweep, fusion)
                    ran on where there were more than ``joint_frames``; ``depth`` then holds
                    theirs only, and the others were registered to their reconstruction
                    (``registration``, :mod:`facesfm.solve.register`). None: all frames.
    registration:   the :class:`~facesfm.solve.register.Registration` of the other frames, or
                    None.
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
    evaluation: SolveEvaluation | None
    config: SolveConfig
    out: Path | None = None
    photometric: dict = field(default_factory=dict)
    checks: ResultChecks = field(default_factory=lambda: ResultChecks([]))
    input_sha256: str = ""
    focal: FocalEstimate | None = None
    keyframes: np.ndarray | None = None
    registration: Registration | None = None

    @property
    def problems(self) -> list[str]:
        return self.checks.problems

    @property
    def status(self) -> str:
        """"ok", or "unreliable" when :func:`facesfm.solve.checks.check_result` found problems
        (kept only with ``--keep-unreliable``)."""
        return "unreliable" if self.problems else "ok"


def oracle_landmarks(frames: FrameSet, count: int | None = None) -> Landmarks:
    """GT landmarks of a sequence input: uv and weight = visible (F, N)."""
    seq = need_sequence(frames, "--oracle-landmarks")
    n = len(seq.landmark_ids) if count is None else int(count)
    if n > len(seq.landmark_ids):
        raise InputError(f"--landmarks {n}: {seq.root} stores only {len(seq.landmark_ids)}")
    return Landmarks(seq.uv[:, :n].copy(), seq.visible[:, :n].astype(np.float64),
                     seq.landmark_ids[:n].copy(), "oracle")


def oracle_depth(frames: FrameSet) -> DepthMaps:
    """GT depth maps and face masks of a sequence input."""
    seq = need_sequence(frames, "--oracle-depth")
    depth = np.stack([seq.depth(i) for i in range(len(seq))])
    mask = np.stack([seq.mask(i) for i in range(len(seq))])
    return DepthMaps(depth, mask & (depth > 0), "oracle")


def select_face_frames(lm: Landmarks, min_landmarks: int,
                       min_relative_confidence: float = 0.0) -> np.ndarray:
    """(F,) bool: frames with at least ``min_landmarks`` observed landmarks (a face) and,
    for a detector's landmarks, a mean BA weight of them (the detector's confidence: visibility
    over predicted spread) of at least ``min_relative_confidence`` times the median frame's.
    Measured with both shipped detectors on the demo render: face frames 0.135-0.17, a blank
    frame 0.000, noise 0.001-0.002, a photograph of coffee cups 0.005-0.026."""
    seen = lm.weight > 0
    keep = seen.sum(1) >= min_landmarks
    if min_relative_confidence > 0 and lm.source == "network" and keep.any():
        conf = (lm.weight * seen).sum(1) / np.maximum(seen.sum(1), 1)  # 0 where none seen
        keep &= conf >= min_relative_confidence * np.median(conf[keep])
    return keep


def landmark_depth_maps(K: np.ndarray, lm: Landmarks, points: np.ndarray, poses: np.ndarray,
                        height: int, width: int, names=None) -> DepthMaps:
    """Sparse-to-dense depth without a network: each frame's depth map linearly interpolates
    (scipy ``griddata``) the camera depths of the landmark points it observes, at their
    projections, inside the convex hull of those projections (the mask, :func:`hull_masks`).

    points: (N, 3) world (NaN rows unused); poses: (F, 4, 4) cam_T_world. Raises InputError
    naming a frame with fewer than 3 usable landmarks (or all on one line).
    """
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


def need_sequence(frames: FrameSet, option: str):
    """The input's :class:`~facesfm.data.format.Sequence`, or an InputError saying that
    ``option`` needs a sequence folder."""
    if frames.sequence is None:
        raise InputError(f"{option} needs a facesfm sequence folder as input, got {frames.path} "
                         f"({frames.source})")
    return frames.sequence


def _names(frames: FrameSet, idx) -> str:
    return _listed([frames.names[i] for i in idx])


def _listed(names: list[str]) -> str:
    return f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"


def find_faces_and_crop(frames: FrameSet, cfg: SolveConfig, echo,
                        reading: KeyframeFinder | None = None) -> tuple[FrameSet, np.ndarray]:
    """The face front end (``cfg.face_crop``, :mod:`facesfm.solve.frontend`): returns the
    frames with a face, cropped to it, and (F,) bool which of ``frames`` they are. Frames
    without a face are named in a warning; InputError when fewer than ``cfg.min_frames``
    have one. Off: the frames as they are, all kept. ``reading``: the finder that chose a
    video's keyframes while it was read (``frames`` are those keyframes, with their face
    meshes): its faces are used, and only the ``cfg.max_frames`` cap is left to apply."""
    everything = np.ones(frames.num_frames, dtype=bool)
    if cfg.face_crop == "off" or (cfg.face_crop == "auto" and frames.sequence is not None):
        return frames, everything
    if frames.sequence is not None:
        raise InputError("--face-crop on: not for a sequence folder (its frames are framed "
                         "already and its ground truth is in their pixels)")
    if reading is not None:
        if reading.missing:
            warn(echo, f"no face found in {len(reading.missing)} frame(s), skipped: "
                       f"{_listed([video_frame_name(i) for i in reading.missing])}")
        seen, track = len(reading.found), FaceTrack(everything, frames.face_mesh)
        found = everything
    else:
        track = find_faces(frames.images)
        found = track.found
        if not found.all():
            idx = np.flatnonzero(~found)
            warn(echo, f"no face found in {len(idx)} frame(s), skipped: {_names(frames, idx)}")
        seen = int(found.sum())
    if seen < cfg.min_frames:
        total = len(found) if reading is None else reading.decoded
        raise InputError(f"{frames.path}: a face was found in only {seen} of {total} frames; "
                         f"at least {cfg.min_frames} needed")
    track = track.select(found)
    if frames.source == "video" and cfg.keyframe_deg > 0:
        # read keyframe by keyframe, the turn is chosen already: only the cap is left
        key = keyframes(track.mesh, 0.0 if reading is not None else cfg.keyframe_deg,
                        cfg.max_frames)
        if echo is not None:
            echo(f"video: {int(key.sum())} keyframe(s) of the {seen} frames with a face "
                 f"(a new one every {cfg.keyframe_deg:g} deg of head turn"
                 + (f", at most {cfg.max_frames}" if cfg.max_frames else "") + ")")
        if key.sum() < cfg.min_frames:
            raise InputError(f"{frames.path}: the head turns too little for structure from "
                             f"motion: {int(key.sum())} keyframe(s) {cfg.keyframe_deg:g} deg "
                             f"apart; at least {cfg.min_frames} needed")
        found = found.copy()
        found[np.flatnonzero(found)[~key]] = False
        track = track.select(key)
    crop, own = frame_crops(track, frames.width, frames.height, cfg.crop_size)
    return crop_frames(frames.select(found), crop, track, own), found


def person_region(used: FrameSet, cfg: SolveConfig) -> np.ndarray | None:
    """(F, H, W) bool the person in each used frame (``cfg.person_mask``), or None when off
    ("auto": on for photo folders and videos, off for sequence folders)."""
    if cfg.person_mask == "off" or (cfg.person_mask == "auto" and used.sequence is not None):
        return None
    return person_masks(used.images)


def points_depth_maps(used: FrameSet, lm: Landmarks, ba: BAOutcome,
                      region: np.ndarray | None) -> DepthMaps:
    """``--depth landmarks``: the depth maps of the BA's landmark points
    (:func:`landmark_depth_maps`) with their masks cut to ``region`` (:func:`within`)."""
    return within(landmark_depth_maps(used.K, lm, ba.points, ba.poses, used.height,
                                      used.width, used.names), region)


def within(dm: DepthMaps | None, region: np.ndarray | None) -> DepthMaps | None:
    """``dm`` with its masks cut to ``region`` (F, H, W) bool (None: as it is); ground-truth
    depth keeps its own masks."""
    if dm is None or region is None or dm.source == "oracle":
        return dm
    return DepthMaps(dm.depth, dm.mask & region, dm.source)


def load_stage_networks(frames: FrameSet, cfg: SolveConfig) -> Networks | None:
    """Check that every oracle stage has a sequence to read, and load the networks the other
    stages need (None when every stage is an oracle); InputError when one is missing."""
    if cfg.oracle_landmarks:
        need_sequence(frames, "--oracle-landmarks")
    if cfg.depth == "oracle":
        need_sequence(frames, "--oracle-depth")
    if cfg.poses_init in ("gt", "gt-perturbed"):
        need_sequence(frames, f"--poses-init {cfg.poses_init}")
    sfm_ckpt = resolve_weights(cfg.checkpoint, "sfm")  # a path, or "ict" = shipped
    lm_ckpt = resolve_weights(cfg.landmark_checkpoint, "landmarks")
    detector = cfg.landmarks_from == "detector"
    if detector and lm_ckpt is None and sfm_ckpt is not None:
        lm_ckpt = recorded_detector(sfm_ckpt)  # the detector the sfm stage used
    if detector and lm_ckpt is None:
        raise InputError("no --landmark-checkpoint given: the landmark detector needs a trained "
                         "network (or use --landmarks-from mediapipe, or --oracle-landmarks "
                         "with a sequence folder)")
    if cfg.needs_sfm_networks and sfm_ckpt is None:
        raise InputError("no --checkpoint given: the depth/pose networks need a trained sfm "
                         "checkpoint (or use --depth landmarks and --poses-init landmarks; "
                         "or --oracle-depth and --poses-init gt|gt-perturbed with a sequence "
                         "folder)")
    lm_ckpt = lm_ckpt if detector else None
    sfm_ckpt = sfm_ckpt if cfg.needs_sfm_networks else None
    if sfm_ckpt is None and lm_ckpt is None:
        return None
    return load_networks(sfm_ckpt, lm_ckpt, cfg.device)


def detect_landmarks(frames: FrameSet, cfg: SolveConfig, nets: Networks | None,
                     views: int | None = None) -> Landmarks:
    """Every frame's landmarks: the detector's (the first ``cfg.landmarks`` IDs; ``views``
    crop views fused, default the checkpoint's), the face mesh's (``landmarks_from=
    "mediapipe"``: the front end's meshes, else MediaPipe run on the frames as they are) or
    the sequence's own (``"oracle"``)."""
    if cfg.landmarks_from == "oracle":
        return oracle_landmarks(frames, cfg.landmarks)
    if cfg.landmarks_from == "mediapipe":
        mesh = frames.face_mesh if frames.face_mesh is not None else find_faces(frames.images).mesh
        return mediapipe_landmarks(mesh)
    uv, w = _detected(nets, frames, np.arange(frames.num_frames), views)
    n = uv.shape[1] if cfg.landmarks is None else min(cfg.landmarks, uv.shape[1])
    return Landmarks(uv[:, :n], w[:, :n], np.arange(n, dtype=np.int64), "network")


def _detected(nets: Networks, frames: FrameSet, index: np.ndarray, views: int | None = None):
    """The detector's landmarks (uv, weight) of the frames ``index``, in the frames' pixels:
    detected in the images, or where the frames have their own crops (``frames.
    detector_crops``), in views of those turned to face them
    (:func:`facesfm.solve.frontend.view_homography`), and brought back (a weight is an
    inverse variance per pixel^2, so it scales with the square of the view's pixels per
    image pixel at its centre)."""
    if frames.detector_crops is None:
        return run_landmarks(nets, frames.images[index], crop_views=views)
    crops = [frames.detector_crops[i] for i in index]
    Hs = [view_homography(c, frames.K) for c in crops]
    images = np.stack([warp_view(frames.images[i], H, c.size)
                       for i, H, c in zip(index, Hs, crops)])
    uv, w = run_landmarks(nets, images, crop_views=views)
    for k, (c, H) in enumerate(zip(crops, Hs)):
        uv[k] = view_to_image(uv[k], H)
        w[k] *= c.scale ** 2
    return uv, w


def first_pass_views(frames: FrameSet, cfg: SolveConfig, nets: Networks | None) -> int | None:
    """1 when a long sequence's frames are best detected in two passes, else None (one pass,
    every crop view the checkpoint fuses). With more frames than ``cfg.joint_frames`` most
    are only registered to the keyframes' reconstruction (and refined there by tracks): one
    crop view each finds the face and places them, and only the keyframes, once chosen, are
    detected again with every view (:func:`redetect_keyframes`). On a 601-frame sequence the
    7 views of every frame took 13 s of a 37 s solve."""
    if cfg.landmarks_from != "detector" or nets is None or nets.landmark_views <= 1 or \
            cfg.joint_frames is None or len(frames.names) <= cfg.joint_frames:
        return None
    return 1


def redetect_keyframes(frames: FrameSet, joint: np.ndarray, lm: Landmarks,
                       nets: Networks) -> Landmarks:
    """``lm`` with the ``joint`` frames' rows detected again with every crop view the
    checkpoint fuses."""
    uv, w = _detected(nets, frames, np.flatnonzero(joint))
    n = lm.uv.shape[1]
    uv_all, w_all = lm.uv.copy(), lm.weight.copy()
    uv_all[joint], w_all[joint] = uv[:, :n], w[:, :n]
    return Landmarks(uv_all, w_all, lm.ids, lm.source)


def face_frames(frames: FrameSet, lm: Landmarks, cfg: SolveConfig, echo) -> np.ndarray:
    """(F,) bool: the frames with a face (:func:`select_face_frames`) whose semantic landmarks
    agree with the face the front end found, where it ran (within ``cfg.face_agreement`` of
    the face's size, :func:`facesfm.solve.frontend.face_agreement`); the others are named
    in a warning; InputError when fewer than ``cfg.min_frames`` are left."""
    keep = select_face_frames(lm, cfg.min_face_landmarks, cfg.min_relative_confidence)
    if not keep.all():
        idx = np.flatnonzero(~keep)
        what = ("the landmark detector is not confident of the face in"
                if frames.face_mesh is not None else "no face found in")  # (the finder saw one)
        warn(echo, f"{what} {len(idx)} frame(s), skipped: {_names(frames, idx)}")
    if frames.face_mesh is not None and lm.source != "mediapipe":  # (not against itself)
        off = face_agreement(lm.uv, lm.weight, lm.ids, frames.face_mesh)
        bad = keep & (off > cfg.face_agreement)  # NaN (too few semantic points): no verdict
        if bad.any():
            idx = np.flatnonzero(bad)
            warn(echo, f"the landmarks of {len(idx)} frame(s) do not lie on the face found "
                       f"there (median {np.median(off[idx]):.0%} of the face's size off, "
                       f"more than {cfg.face_agreement:.0%}), skipped: {_names(frames, idx)}")
            keep = keep & ~bad
    if keep.sum() < cfg.min_frames:
        raise InputError(
            f"{frames.path}: a face was found in only {int(keep.sum())} of {len(keep)} frames "
            f"(>= {cfg.min_face_landmarks} landmarks each"
            f"{', on the face found there' if frames.face_mesh is not None else ''}); "
            f"at least {cfg.min_frames} needed")
    return keep


def factorised_start(frames: FrameSet, keep: np.ndarray, lm: Landmarks, cfg: SolveConfig,
                     echo) -> tuple[np.ndarray, np.ndarray]:
    """``--poses-init landmarks``: (F_kept', 4, 4) poses from the factorisation of the kept
    frames' landmark tracks, and ``keep`` without the frames it could not place (warned)."""
    factorised = landmark_poses(frames.K, lm.select(keep))
    placed = np.all(np.isfinite(factorised.reshape(len(factorised), -1)), 1)
    if placed.all():
        return factorised, keep
    idx = np.flatnonzero(keep)[~placed]
    warn(echo, f"the landmark factorisation could not place {len(idx)} frame(s), "
               f"skipped: {_names(frames, idx)}")
    keep = keep.copy()
    keep[idx] = False
    if keep.sum() < cfg.min_frames:
        raise InputError(f"{frames.path}: the landmark factorisation placed only "
                         f"{int(keep.sum())} frames; at least {cfg.min_frames} needed")
    return factorised[placed], keep


def make_depth_maps(frames: FrameSet, keep: np.ndarray, used: FrameSet, lm: Landmarks,
                    cfg: SolveConfig, nets: Networks | None) -> DepthMaps | None:
    """The kept frames' depth maps before the BA: ground truth (``depth="oracle"``), or the
    depth network's with the landmark hulls as masks; None for ``depth="landmarks"`` (built
    from the BA's points afterwards)."""
    if cfg.depth == "oracle":
        dm = oracle_depth(frames)
        return DepthMaps(dm.depth[keep], dm.mask[keep], dm.source)
    if cfg.depth == "network":
        d = run_depth(nets, used.images)
        return DepthMaps(d, hull_masks(lm.uv, lm.weight, used.height, used.width), "network")
    return None


def initial_poses(used: FrameSet, cfg: SolveConfig, nets: Networks | None,
                  gt: np.ndarray | None, factorised: np.ndarray | None) -> np.ndarray:
    """(F, 4, 4) start of the BA: PoseNet's chain, the landmark factorisation (computed
    before, since it may drop frames), ground truth or perturbed ground truth."""
    if cfg.poses_init == "network":
        return run_poses(nets, used.images)
    if cfg.poses_init == "landmarks":
        return factorised
    if cfg.poses_init == "gt":
        return gt.copy()
    return perturbed_poses(gt, cfg.perturb_rot_deg, cfg.perturb_trans_mm, cfg.perturb_seed)


def _classical_from(used: FrameSet, lm: Landmarks, dm: DepthMaps | None, start: np.ndarray,
                    cfg: SolveConfig) -> tuple[BAOutcome | None, str | None]:
    """The classical BA from ``start``, or None and why when the start leaves a frame with
    too few landmarks placed (e.g. a degenerate factorisation: too few to triangulate)."""
    try:
        return classical_bundle_adjust(used.K, lm, dm, start, cfg.ba), None
    except (SolverError, InputError) as e:
        return None, str(e)


def adjust(used: FrameSet, lm: Landmarks, dm: DepthMaps | None, poses0: np.ndarray,
           cfg: SolveConfig) -> tuple[BAOutcome, np.ndarray, bool]:
    """The bundle adjustment from ``poses0``: returns (outcome, the start it kept, whether it
    was the classical parameterisation). With the BA off it is pure fusion (depth scale 1)
    unless the depth maps are to be built from triangulated landmarks. InputError (one line)
    when the BA can start from none of its starts."""
    classical = cfg.ba.classical and (cfg.ba.enabled or dm is None)
    if classical:
        start = "factorisation" if cfg.poses_init == "landmarks" else cfg.poses_init
        ba, why = _classical_from(used, lm, dm, poses0, cfg)
        if ba is not None:
            ba.start = start
        if cfg.poses_init == "landmarks" and cfg.ba.enabled:
            # the factorisation can land in the wrong basin (a depth reflection it resolved
            # the wrong way, a bad scale, a degenerate solution); the mean face's per-frame
            # poses cannot: the BA runs from both and keeps the lower cost
            tp = template_poses(used.K, lm)
            if np.all(np.isfinite(tp)):
                alt, _ = _classical_from(used, lm, dm, tp, cfg)
                if alt is not None and (ba is None or alt.final_cost < ba.final_cost):
                    ba, poses0 = alt, tp
                    ba.start = "template"
        if ba is None:
            raise InputError(f"the bundle adjustment could not start from the {start}: "
                             f"{why.removeprefix('bundle adjustment: ')}")
    elif cfg.ba.enabled:
        ba = bundle_adjust(used.K, lm, dm, poses0, cfg.ba)
    else:
        ba = BAOutcome(poses0.copy(), np.zeros(len(poses0)), None)
    return ba, poses0, classical


def fuse(used: FrameSet, dm: DepthMaps, ba: BAOutcome, cfg: SolveConfig, lap
         ) -> tuple[PointCloud, SurfaceMesh]:
    """The scaled depth maps fused with the optimised poses into a cloud and a mesh (only
    pixels seen consistently by ``consistent_views`` frames, when set)."""
    scale = np.exp(ba.log_scale)
    fmask = dm.mask
    if cfg.fusion.consistent_views > 0:
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
    return cloud, mesh


def landmark_reprojection(used: FrameSet, lm: Landmarks, dm: DepthMaps,
                                 poses0: np.ndarray, X0: np.ndarray | None, ba: BAOutcome,
                                 classical: bool):
    """(landmark points (N, 3), per-frame RMS reprojection error at the start, after the BA):
    the classical BA's own points, or for the depth parameterisation the median lift of each
    landmark with its (scaled) depth."""
    if classical:
        X1 = ba.points
    else:
        X0 = landmark_points(used.K, lm, dm.depth, poses0)
        X1 = landmark_points(used.K, lm, dm.depth, ba.poses, np.exp(ba.log_scale))
    return (X1, reprojection_errors(used.K, lm, X0, poses0),
            reprojection_errors(used.K, lm, X1, ba.poses))
