"""Seeded synthetic face bundle-adjustment problems (for tests and bench/ba.py).

Landmarks lie on the front half of an ellipsoid about 15 cm wide (a stand-in for a face; world
frame in mm, +y up, the face looks down +z); cameras sit on a horizontal yaw arc around the head
(default -60..+60 degrees, 500 mm away, f = 500 px, 384 x 384) looking at the origin, as a head
turning in front of a fixed camera would give. A landmark is visible where the ellipsoid faces
the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from facesfm.geometry.camera import intrinsics, look_at
from facesfm.geometry.se3 import se3_exp
from facesfm.solvers.problem import BAProblem, BAState, Parameterization

__all__ = ["SyntheticFace", "make_face_problem", "perturb_state"]


@dataclass
class SyntheticFace:
    """A synthetic problem with its ground truth.

    Attributes:
        problem: the :class:`BAProblem` (noisy observations).
        truth: true state (poses, points; log_scale = the true log of depth_scale^-1 per frame,
            depth_correction = zeros).
        points: (N, 3) true world points (mm).
        normals: (N, 3) unit outward normals.
    """

    problem: BAProblem
    truth: BAState
    points: torch.Tensor
    normals: torch.Tensor


def make_face_problem(
    frames: int = 30,
    landmarks: int = 68,
    seed: int = 0,
    noise_px: float = 1.0,
    parameterization: Parameterization = Parameterization.CLASSICAL,
    yaw_deg: float = 60.0,
    distance_mm: float = 500.0,
    focal_px: float = 500.0,
    size_px: int = 384,
    semi_axes_mm: tuple[float, float, float] = (75.0, 100.0, 60.0),
    depth_noise: float = 0.0,
    depth_scale_spread: float = 0.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    **problem_options,
) -> SyntheticFace:
    """A seeded synthetic face problem.

    Args:
        frames, landmarks: F and N.
        noise_px: std of the Gaussian pixel noise on uv.
        depth_noise: relative std of multiplicative noise on the observed depths (DEPTH).
        depth_scale_spread: std of a per-frame log scale error of the observed depths (frame 0
            keeps scale 1, since its scale fixes the gauge).
        problem_options: forwarded to :class:`BAProblem` (kernel, pairs, ...).
    """
    rng = np.random.default_rng(seed)
    a = np.asarray(semi_axes_mm, dtype=np.float64)
    # directions on the front hemisphere (z > 0.15) of the unit sphere, mapped to the ellipsoid
    dirs = []
    while len(dirs) < landmarks:
        d = rng.normal(size=(2 * landmarks, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        dirs.extend(d[d[:, 2] > 0.15])
    dirs = np.asarray(dirs[:landmarks])
    X = dirs * a
    nrm = X / a**2
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)

    yaws = np.deg2rad(np.linspace(-yaw_deg, yaw_deg, frames)) if frames > 1 else np.zeros(1)
    poses = []
    for yw in yaws:
        eye = distance_mm * np.array([math.sin(yw), 0.0, math.cos(yw)])
        poses.append(look_at(eye, np.zeros(3)))
    poses = np.stack(poses)
    K = np.repeat(intrinsics(focal_px, size_px, size_px)[None], frames, 0)

    R, t = poses[:, :3, :3], poses[:, :3, 3]
    Xc = np.einsum("fab,nb->fna", R, X) + t[:, None]
    uv = focal_px * Xc[..., :2] / Xc[..., 2:3] + (size_px - 1) / 2.0
    centres = -np.einsum("fba,fb->fa", R, t)
    facing = np.einsum("nc,fnc->fn", nrm, centres[:, None] - X[None]) > 0.0
    inside = (uv >= 0).all(-1) & (uv <= size_px - 1).all(-1)
    weight = (facing & inside).astype(np.float64)
    uv_obs = uv + noise_px * rng.normal(size=uv.shape)
    z = Xc[..., 2]
    log_scale_err = depth_scale_spread * rng.normal(size=frames)
    log_scale_err[0] = 0.0
    depth_obs = z * np.exp(log_scale_err)[:, None] * np.exp(depth_noise * rng.normal(size=z.shape))

    T = lambda x: torch.as_tensor(x, dtype=dtype, device=device)
    problem = BAProblem(
        K=T(K),
        uv=T(uv_obs),
        weight=T(weight),
        depth=T(depth_obs) if parameterization is Parameterization.DEPTH else None,
        parameterization=parameterization,
        **problem_options,
    )
    if parameterization is Parameterization.CLASSICAL:
        truth = BAState(T(poses), T(X))
    else:
        corr = torch.zeros(landmarks, dtype=dtype, device=device) if problem.depth_corrections else None
        truth = BAState(T(poses), None, T(-log_scale_err), corr)
    return SyntheticFace(problem, truth, T(X), T(nrm))


def perturb_state(
    state: BAState,
    seed: int = 0,
    rot_deg: float = 3.0,
    trans_mm: float = 10.0,
    point_mm: float = 5.0,
    log_scale: float = 0.0,
    fixed_frame: int = 0,
) -> BAState:
    """Perturb every pose but ``fixed_frame`` by a random rotation of exactly ``rot_deg`` and a
    random translation of ``trans_mm`` (both in the camera frame), every point by a random
    offset of ``point_mm``, and the free log depth scales by N(0, log_scale)."""
    g = torch.Generator().manual_seed(seed)
    dt, dev = state.poses.dtype, state.poses.device
    F = state.poses.shape[0]

    def unit(n):
        v = torch.randn(n, 3, generator=g, dtype=torch.float64)
        return (v / v.norm(dim=1, keepdim=True)).to(dtype=dt, device=dev)

    xi = torch.cat([unit(F) * trans_mm, unit(F) * math.radians(rot_deg)], 1)
    xi[fixed_frame] = 0.0
    poses = se3_exp(xi) @ state.poses
    points = None if state.points is None else state.points + unit(state.points.shape[0]) * point_mm
    s = state.log_scale
    if s is not None:
        ds = (torch.randn(F, generator=g, dtype=torch.float64) * log_scale).to(dtype=dt, device=dev)
        ds[fixed_frame] = 0.0
        s = s + ds
    return BAState(poses, points, s, state.depth_correction)
