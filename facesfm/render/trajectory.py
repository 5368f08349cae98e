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

__all__ = ["Trajectory", "make_trajectory", "roll_matrix", "sweep_yaws"]


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

    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x7A11])
    u_yaw = rng.uniform(-1.0, 1.0, n)
    u_dist = rng.uniform(-1.0, 1.0, n)
    u_roll = rng.uniform(-1.0, 1.0, n)
    nominal_step = (yaws[1] - yaws[0]) if n > 1 else 0.0
    yaws = yaws + cfg.yaw_jitter * nominal_step * u_yaw
    dist = cfg.distance + cfg.distance_jitter * u_dist
    rolls = cfg.roll_jitter * u_roll
    if cfg.pitch_end is None or n == 1:
        pitches = np.full(n, float(cfg.pitch))
    else:
        pitches = np.linspace(cfg.pitch, cfg.pitch_end, n)
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
