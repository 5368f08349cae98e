"""Camera trajectories around a head: the paper's yaw sweep (a camera every 2 degrees).

Poses are ``cam_T_world`` in the OpenCV convention of :mod:`facesfm.geometry.camera`; the
world frame is the face model's (mm, +y up, face looking down +z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesfm.errors import InputError
from facesfm.geometry.camera import look_at
from facesfm.render.config import TrajectoryConfig

__all__ = ["VARIED", "Trajectory", "make_trajectory", "roll_matrix", "sweep_yaws"]

#: The per-sequence variation ``facesfm render --vary-trajectory`` turns on: direction, range,
#: speed, easing, pitch, roll, distance and step irregularity all differ between sequences.
VARIED: dict[str, object] = {
    "direction": "random", "yaw_shift": 10.0, "speed_jitter": 0.25, "ease": 0.6,
    "pitch_spread": 8.0, "roll_jitter": 2.0, "distance_jitter": 25.0, "yaw_jitter": 0.25,
}


@dataclass(frozen=True)
class Trajectory:
    """Camera poses of one sequence.

    cam_T_world: (F, 4, 4) float64, OpenCV camera from world (mm).
    index:       (F,) int64, position of each frame in the full sweep (before subsetting).
    yaw_deg, pitch_deg, roll_deg: (F,) float64, the angles each pose was built from.
    distance:    (F,) float64, camera distance to ``target`` in mm.
    target:      (3,) float64, the point every camera looks at (world mm).
    """

    cam_T_world: np.ndarray
    index: np.ndarray
    yaw_deg: np.ndarray
    pitch_deg: np.ndarray
    roll_deg: np.ndarray
    distance: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.cam_T_world)


def sweep_yaws(cfg: TrajectoryConfig) -> np.ndarray:
    """Nominal yaw of every frame of the full sweep in degrees, (N,) float64."""
    if cfg.frames is not None:
        if cfg.frames == 1:
            return np.array([(cfg.yaw_min + cfg.yaw_max) / 2.0])
        return np.linspace(cfg.yaw_min, cfg.yaw_max, cfg.frames)
    n = round((cfg.yaw_max - cfg.yaw_min) / cfg.step) + 1
    return cfg.yaw_min + cfg.step * np.arange(n, dtype=np.float64)


def roll_matrix(roll_deg: float) -> np.ndarray:
    """4x4 rotation about the camera's optical (z) axis; left-multiply a cam_T_world."""
    a = np.deg2rad(roll_deg)
    c, s = np.cos(a), np.sin(a)
    R = np.eye(4)
    R[:2, :2] = [[c, -s], [s, c]]
    return R


def make_trajectory(
    cfg: TrajectoryConfig, seed: int, target: np.ndarray | None = None
) -> Trajectory:
    """Build the camera poses of a sweep around ``target``.

    cfg:    trajectory options (see :class:`TrajectoryConfig`).
    seed:   seeds the jitters (roll, distance, irregular yaw steps). Jitters are drawn for the
            full sweep before subsetting, so a subset picks exactly the poses of the full one.
    target: (3,) world point to look at, used when ``cfg.target`` is None (default origin).
    """
    yaws = sweep_yaws(cfg)
    n = len(yaws)
    if cfg.target is not None:
        target = np.asarray(cfg.target, dtype=np.float64)
    elif target is None:
        target = np.zeros(3)
    target = np.asarray(target, dtype=np.float64).reshape(3)

    # Per-sequence variation from its own stream, so sequences rendered without it keep the
    # exact jitters they had before it existed.
    v = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7A12]).uniform(0.0, 1.0, 6)
    lo, hi = float(yaws[0]), float(yaws[-1])
    varied = cfg.ease > 0 or cfg.speed_jitter > 0 or cfg.yaw_shift > 0
    if varied and n > 1 and hi > lo:
        t = (yaws - lo) / (hi - lo)
        e = cfg.ease * v[0]
        t = t - e * np.sin(2.0 * np.pi * t) / (2.0 * np.pi)
        centre = 0.5 * (lo + hi) + cfg.yaw_shift * (2.0 * v[2] - 1.0)
        half = 0.5 * (hi - lo) * (1.0 + cfg.speed_jitter * (2.0 * v[1] - 1.0))
        yaws = centre + half * (2.0 * t - 1.0)
    elif varied:
        yaws = yaws + cfg.yaw_shift * (2.0 * v[2] - 1.0)
    if cfg.direction == "falling" or (cfg.direction == "random" and v[3] < 0.5):
        yaws = yaws[::-1].copy()

    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7A11])
    u_yaw = rng.uniform(-1.0, 1.0, n)
    u_dist = rng.uniform(-1.0, 1.0, n)
    u_roll = rng.uniform(-1.0, 1.0, n)
    if n > 1:
        # each yaw moves by less than half of its shorter neighbouring step: stays monotonic
        gaps = np.abs(np.diff(yaws))
        local_step = np.minimum(np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]])
    else:
        local_step = np.zeros(1)
    yaws = yaws + cfg.yaw_jitter * local_step * u_yaw
    dist = cfg.distance + cfg.distance_jitter * u_dist
    rolls = cfg.roll_jitter * u_roll
    p0 = float(cfg.pitch) + cfg.pitch_spread * (2.0 * v[4] - 1.0)
    p1 = float(cfg.pitch if cfg.pitch_end is None else cfg.pitch_end)
    p1 += cfg.pitch_spread * (2.0 * v[5] - 1.0)
    if n == 1 or (cfg.pitch_end is None and cfg.pitch_spread == 0):
        pitches = np.full(n, p0)
    else:
        pitches = np.linspace(p0, p1, n)
    if np.any(np.abs(pitches) >= 89.0):
        raise InputError(f"trajectory: |pitch| must stay below 89 degrees, got {cfg.pitch}"
                         f"..{cfg.pitch_end}")

    if cfg.indices is not None:
        keep = np.asarray(cfg.indices, dtype=np.int64).reshape(-1)
        if keep.size == 0:
            raise InputError("trajectory: indices is empty")
        if keep.min() < 0 or keep.max() >= n:
            raise InputError(f"trajectory: indices must be in 0..{n - 1}, got {list(keep)}")
        if len(np.unique(keep)) != len(keep):
            raise InputError(f"trajectory: indices repeat: {list(keep)}")
    else:
        keep = np.arange(0, n, cfg.every, dtype=np.int64)

    poses = []
    for i in keep:
        a, b = np.deg2rad(yaws[i]), np.deg2rad(pitches[i])
        direction = np.array([np.sin(a) * np.cos(b), np.sin(b), np.cos(a) * np.cos(b)])
        eye = target + dist[i] * direction
        poses.append(roll_matrix(rolls[i]) @ look_at(eye, target))
    return Trajectory(
        cam_T_world=np.stack(poses),
        index=keep,
        yaw_deg=yaws[keep],
        pitch_deg=pitches[keep],
        roll_deg=rolls[keep],
        distance=dist[keep],
        target=target,
    )
