"""Long sequences: the joint stages run on keyframes, and every other frame is registered to
their reconstruction.

The joint stages (bundle adjustment, point tracks, plane sweep, fusion) cost more than
linearly in the frame count (the joint BA's dense layout holds every frame for every point),
and a dense video adds little to them: 601 frames of the paper's sweep are 0.2 degrees
apart. So a sequence of more than ``SolveConfig.joint_frames`` frames is solved on that many
keyframes, evenly spread over it (:func:`joint_keyframes`), and each other frame then gets
its camera from the finished reconstruction (:func:`register_frames`):

1. its start is interpolated on SE(3) between the keyframes before and after it;
2. its pose alone is fitted to its detected landmarks against the BA's landmark points
   (:func:`facesfm.solvers.resection.resect`, the BA's kernel);
3. with ``--tracks``, skin patches of both neighbouring keyframes, lifted with their refined
   depth maps, are matched into it as the tracks stage matches them
   (:func:`facesfm.solve.tracks.patch_tracks`), and its pose is fitted again to those points
   and the landmarks (the tracks' kernel and landmark weight).

The registered frames do not move the keyframes or the surface; they are not in the fused
cloud.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from facesfm.errors import InputError, warn
from facesfm.geometry.camera import backproject, invert_pose, transform
from facesfm.geometry.se3 import se3_exp, se3_log
from facesfm.solve.inputs import FrameSet
from facesfm.solve.tracks import patch_tracks
from facesfm.solvers.landmark_ba import BAOutcome, DepthMaps, Landmarks, reprojection_errors
from facesfm.solvers.resection import resect

__all__ = [
    "Registration",
    "interpolate_poses",
    "joint_keyframes",
    "keyframes_of",
    "register_frames",
    "register_others",
]

#: a registered frame needs at least this many observations (landmarks and track points)
MIN_OBSERVATIONS = 6
#: a registered frame whose landmarks reproject worse than this many times the keyframes'
#: median RMS (and worse than :data:`MISFIT_FLOOR_PX`) did not find its pose: on the
#: 601-frame built-in sweep the registered frames' RMS reached 3.3 px, the keyframes' too
#: (median 1.9 px for both)
MISFIT_FACTOR = 3.0
MISFIT_FLOOR_PX = 2.0


def joint_keyframes(n: int, joint_frames: int | None) -> np.ndarray | None:
    """(n,) bool: the frames the joint stages run on, ``joint_frames`` of the ``n`` evenly
    spread (the first and the last among them); None when all of them do."""
    if joint_frames is None or n <= joint_frames:
        return None
    key = np.zeros(n, dtype=bool)
    key[np.round(np.linspace(0, n - 1, joint_frames)).astype(int)] = True
    return key


def interpolate_poses(key_poses: np.ndarray, key_index: np.ndarray, n: int) -> np.ndarray:
    """(n, 4, 4) poses for frames 0..n-1: the keyframes' own at ``key_index`` (sorted), and
    between two keyframes the geodesic on SE(3) at the frame's share of the way; before the
    first and after the last keyframe, that keyframe's pose."""
    key_poses = np.asarray(key_poses, dtype=np.float64)
    idx = np.arange(n)
    right = np.clip(np.searchsorted(key_index, idx), 1, len(key_index) - 1)
    left = right - 1
    if len(key_index) == 1:
        return np.repeat(key_poses[:1], n, 0)
    a = (idx - key_index[left]) / (key_index[right] - key_index[left])
    a = np.clip(a, 0.0, 1.0)
    T0 = torch.as_tensor(key_poses[left])
    T1 = torch.as_tensor(key_poses[right])
    rel = se3_log(T1 @ torch.linalg.inv(T0))
    out = (se3_exp(torch.as_tensor(a)[:, None] * rel) @ T0).numpy()
    out[key_index] = key_poses
    return out


@dataclass
class Registration:
    """The registered frames' cameras: ``frames`` (R,) their positions among all the frames;
    ``start`` and ``poses`` (R, 4, 4) cam_T_world before and after; ``rms_px`` (R,) final
    RMS reprojection error of their landmarks against the landmark points; ``landmarks`` and ``track_points`` (R,)
    how many of each they were fitted to; ``failed`` (R,) bool, frames with fewer than
    :data:`MIN_OBSERVATIONS` observations or whose landmarks the fitted pose does not explain
    (RMS above :data:`MISFIT_FACTOR` x the keyframes' median): to be dropped; ``skipped`` the
    names of the frames dropped so."""

    frames: np.ndarray
    start: np.ndarray
    poses: np.ndarray
    rms_px: np.ndarray
    landmarks: np.ndarray
    track_points: np.ndarray
    failed: np.ndarray
    skipped: tuple[str, ...] = ()

    def summary(self) -> dict:
        ok = ~self.failed
        return {
            "frames": int(ok.sum()),
            "skipped": list(self.skipped),
            "median_rms_px": float(np.median(self.rms_px[ok])) if ok.any() else None,
            "median_landmarks": float(np.median(self.landmarks[ok])) if ok.any() else None,
            "median_track_points": float(np.median(self.track_points[ok]))
            if ok.any() else None,
        }


def _track_points(images, key_index, others, depth: DepthMaps, poses_all, ba: BAOutcome,
                  K, cfg):
    """For each registered frame (``others``, positions among all frames): world points (n, 3)
    lifted from the neighbouring keyframes' depth maps and where they were matched in the
    frame (n, 2), as lists."""
    pts = {int(g): [] for g in others}
    obs = {int(g): [] for g in others}
    scale = np.exp(ba.log_scale)
    for i, k in enumerate(key_index):
        lo = key_index[i - 1] if i > 0 else -1
        hi = key_index[i + 1] if i + 1 < len(key_index) else len(poses_all)
        targets = others[(others > lo) & (others < hi)]
        if len(targets) == 0:
            continue
        stack = np.r_[k, targets]
        m = len(targets)
        H, W = depth.depth.shape[1:]
        dep = np.zeros((m + 1, H, W), dtype=np.float64)
        dep[0] = depth.depth[i]
        msk = np.zeros((m + 1, H, W), dtype=bool)
        msk[0] = depth.mask[i]
        poses = poses_all[stack].copy()
        sc = np.ones(m + 1)
        sc[0] = scale[i]
        try:
            tr = patch_tracks(images[stack], dep, msk, K, poses, sc,
                              replace(cfg, keyframe_step=m + 1, neighbours=m, far_step=1))
        except InputError:  # nothing matched around this keyframe
            continue
        kp = tr.uv[0]
        ki = np.round(kp).astype(int)
        z = dep[0][ki[:, 1], ki[:, 0]] * sc[0]
        X = transform(invert_pose(poses[0]), backproject(K, kp, z))
        for j, g in enumerate(targets):
            seen = tr.weight[j + 1] > 0
            if seen.any():
                pts[int(g)].append(X[seen])
                obs[int(g)].append(tr.uv[j + 1][seen])
    return pts, obs


def register_frames(images: np.ndarray, K: np.ndarray, lm: Landmarks, key: np.ndarray,
                    depth: DepthMaps, ba: BAOutcome, landmark_xyz: np.ndarray,
                    cfg, key_rms_px: np.ndarray | None = None) -> Registration:
    """Cameras for the frames where ``key`` (F,) is False, registered to the keyframes'
    reconstruction (see the module docstring). ``images`` (F, H, W, 3) and ``lm`` cover all
    F frames; ``depth`` and ``ba`` the keyframes only, in order; ``landmark_xyz`` (N, 3) the
    landmarks' world points; ``cfg`` the :class:`~facesfm.solve.config.SolveConfig`;
    ``key_rms_px`` the keyframes' final landmark RMS (the bar a registered frame must meet;
    None: no bar)."""
    key_index = np.flatnonzero(key)
    others = np.flatnonzero(~key)
    F = len(key)
    start_all = interpolate_poses(ba.poses, key_index, F)
    start = start_all[others]
    X = np.asarray(landmark_xyz, dtype=np.float64)
    uv, w = lm.uv[others], lm.weight[others]
    first = resect(K, X, uv, w, start, kernel=cfg.ba.make_kernel())
    poses = first.poses
    n_lm = first.observed
    n_tr = np.zeros(len(others), dtype=int)
    if cfg.tracks.enabled:
        cur = start_all.copy()
        cur[others] = poses
        # twice as dense as the tracks stage's: a registered frame has no joint BA to
        # average its error with its neighbours'. On the 601-frame built-in sweep (61
        # keyframes), grid 16 / 8 / 5 px gave 71 / 212 / 454 points a frame and a mean
        # 0.36 / 0.31 / 0.29 deg
        tcfg = replace(cfg.tracks, grid_px=max(2, cfg.tracks.grid_px // 2))
        pts, obs = _track_points(images, key_index, others, depth, cur, ba, K, tcfg)
        n_tr = np.array([sum(len(p) for p in pts[int(g)]) for g in others])
        M = X.shape[0] + int(n_tr.max(initial=0))
        P = np.full((len(others), M, 3), np.nan)
        U = np.zeros((len(others), M, 2))
        Wt = np.zeros((len(others), M))
        N = X.shape[0]
        P[:, :N] = X
        U[:, :N] = uv
        Wt[:, :N] = w * cfg.tracks.landmark_weight
        for r, g in enumerate(others):
            if n_tr[r]:
                P[r, N:N + n_tr[r]] = np.concatenate(pts[int(g)])
                U[r, N:N + n_tr[r]] = np.concatenate(obs[int(g)])
                Wt[r, N:N + n_tr[r]] = 1.0
        kernel = replace(cfg.ba, kernel=cfg.tracks.kernel,
                         kernel_px=cfg.tracks.kernel_px).make_kernel()
        second = resect(K, P, U, Wt, poses, kernel=kernel)
        poses = second.poses
    failed = (n_lm + n_tr) < MIN_OBSERVATIONS
    rms = reprojection_errors(K, lm.select(others), X, poses)
    if key_rms_px is not None and np.isfinite(key_rms_px).any():
        bar = max(MISFIT_FACTOR * float(np.nanmedian(key_rms_px)), MISFIT_FLOOR_PX)
        failed |= ~(rms <= bar)  # (NaN: no landmark left to tell)
    return Registration(others, start, poses, rms, n_lm, n_tr, failed)


def keyframes_of(frames: FrameSet, keep: np.ndarray, cfg, echo) -> np.ndarray:
    """(F,) bool over ``frames``: the kept frames the joint stages run on (all of them, or
    ``cfg.joint_frames`` keyframes evenly spread; said on ``echo``)."""
    key = joint_keyframes(int(keep.sum()), cfg.joint_frames)
    if key is None:
        return keep
    joint = keep.copy()
    joint[keep] = key
    if echo:
        echo(f"{int(keep.sum())} frames: the bundle adjustment, tracks, plane sweep and fusion "
             f"run on {int(key.sum())} keyframes evenly spread over them (joint_frames); the "
             f"other {int((~key).sum())} are registered to that reconstruction")
    return joint


def register_others(frames: FrameSet, keep, joint, used: FrameSet, lm_all: Landmarks,
                    dm: DepthMaps, poses0, ba: BAOutcome, X1, rep0, rep1, cfg, echo):
    """The frames in ``keep`` but not ``joint`` registered to the keyframes' reconstruction
    (:func:`register_frames`); returns the per-frame results over all of them, in frame
    order: (keep without the frames that could not be registered (warned), the
    :class:`Registration` (positions among the returned frames), the frames (with the
    keyframes' K), landmarks, initial poses (a registered frame's: its keyframes' initial
    poses interpolated),
    the BA outcome with every frame's pose (a registered frame's depth log scale is 0), and
    the per-frame reprojection errors at the start and the end)."""
    key = joint[keep]
    kept = frames.select(keep)
    lm_k = lm_all.select(keep)
    reg = register_frames(kept.images, used.K, lm_k, key, dm, ba, X1, cfg, rep1)
    skipped = tuple(kept.names[i] for i in reg.frames[reg.failed])
    if skipped:
        warn(echo, f"{len(skipped)} frame(s) could not be registered to the keyframes "
                   f"(fewer than {MIN_OBSERVATIONS} observations, or landmarks that no pose "
                   f"explains: RMS over {MISFIT_FACTOR:g}x the keyframes'), skipped: "
                   f"{', '.join(skipped[:10])}" + (" ..." if len(skipped) > 10 else ""))
    n = int(keep.sum())
    poses = np.empty((n, 4, 4))
    start = np.empty((n, 4, 4))
    poses[key], start[key] = ba.poses, poses0
    # a registered frame's initial pose: its keyframes' initial poses interpolated, so that
    # learned-vs-optimised comparisons see the initial method, not the BA's keyframes
    start[reg.frames] = interpolate_poses(poses0, np.flatnonzero(key), n)[reg.frames]
    poses[reg.frames] = reg.poses
    log_scale = np.zeros(n)
    log_scale[key] = ba.log_scale
    r0, r1 = np.full(n, np.nan), np.full(n, np.nan)
    r0[key], r1[key] = rep0, rep1
    r0[reg.frames] = reprojection_errors(used.K, lm_k.select(reg.frames), X1,
                                         start[reg.frames])
    r1[reg.frames] = reg.rms_px
    ok = np.ones(n, dtype=bool)
    ok[reg.frames[reg.failed]] = False
    keep = keep.copy()
    keep[np.flatnonzero(keep)[~ok]] = False
    good = ~reg.failed
    at = np.cumsum(ok) - 1  # position among the frames that stay
    reg = Registration(at[reg.frames[good]], reg.start[good], reg.poses[good],
                       reg.rms_px[good], reg.landmarks[good], reg.track_points[good],
                       np.zeros(int(good.sum()), dtype=bool), skipped)
    allf = replace(kept.select(ok), K=used.K, K_source=used.K_source)
    out = replace(ba, poses=poses[ok], log_scale=log_scale[ok])
    return keep, reg, allf, lm_k.select(ok), start[ok], out, r0[ok], r1[ok]
