"""Resection: each frame's pose alone against fixed world points (a motion-only bundle
adjustment), batched over frames.

Frames are independent once the points are fixed, so every frame's normal equations are
one 6x6 block and all of them are solved at once: a frame costs (points x 6^2) per iteration
instead of a column of the joint bundle adjustment's reduced camera system. ``facesfm solve``
registers the frames of a long sequence to its keyframes' reconstruction with it
(:func:`facesfm.solve.register.register_frames`).

The step is a Levenberg-Marquardt step per frame on the kernel's IRLS weights (Ceres'
convention, the same kernels as the joint BA: :class:`facesfm.solvers.problem.Kernel`) with a
left-perturbation twist ``T <- exp(xi) T``, xi = (v, w) as :func:`facesfm.geometry.se3.se3_exp`;
each frame keeps its own damping and takes a step only when it lowers that frame's cost.

Arrays are numpy float64: K (3, 3) px; poses (F, 4, 4) ``cam_T_world`` mm; points (F, M, 3)
world mm (NaN or weight 0: no observation); uv (F, M, 2) px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facesfm.geometry.se3 import hat, se3_exp
from facesfm.solvers.problem import Kernel, TrivialKernel
from facesfm.solvers.residuals import _proj_jac, _project

__all__ = ["Resection", "resect"]

#: camera-frame depth (mm) below which an observation counts as behind the camera
MIN_DEPTH_MM = 1e-3


@dataclass(frozen=True)
class Resection:
    """poses (F, 4, 4) cam_T_world; rms_px (F,) RMS reprojection error of the observations
    (NaN: none); observed (F,) observations in front of the camera; cost (F,) the kernel's
    cost 0.5 sum rho; iterations run; converged (F,) whether a frame met a stopping rule of
    :func:`resect` (or could not move: too few observations, or no step lowered its cost)."""

    poses: np.ndarray
    rms_px: np.ndarray
    observed: np.ndarray
    cost: np.ndarray
    iterations: int
    converged: np.ndarray


def _safe_z(p):
    return torch.where(p[..., 2] > MIN_DEPTH_MM, p[..., 2], torch.ones_like(p[..., 2]))


def _residuals(K, T, X, uv, w):
    """(r (F, M, 2), camera points (F, M, 3), w with observations behind the camera off);
    K (F, 3, 3)."""
    p = torch.einsum("fij,fmj->fmi", T[:, :3, :3], X) + T[:, None, :3, 3]
    r = _project(K, p, _safe_z(p)) - uv
    w = torch.where(p[..., 2] > MIN_DEPTH_MM, w, torch.zeros_like(w))
    return torch.where(w[..., None] > 0, r, torch.zeros_like(r)), p, w


def _jacobian(K, p):
    """(F, M, 2, 6) d(u, v)/d(v, w) of the twist applied on the left: dp = v - [p]x w."""
    dproj = _proj_jac(K, p, _safe_z(p))  # (F, M, 2, 3)
    return torch.cat([dproj, -dproj @ hat(p)], -1)


def _cost(kernel, r, w):
    s = w * (r * r).sum(-1)
    rho, rho1, _ = kernel.rho(s)
    return 0.5 * (rho * (w > 0)).sum(-1), rho1


def resect(K: np.ndarray, points: np.ndarray, uv: np.ndarray, weight: np.ndarray,
           poses: np.ndarray, kernel: Kernel | None = None, max_iterations: int = 30,
           ftol: float = 1e-8, xtol: float = 1e-10, lam0: float = 1e-4) -> Resection:
    """Each frame's ``cam_T_world`` refined from ``poses`` (F, 4, 4) against the fixed
    ``points`` (F, M, 3) (or (M, 3) shared by all frames) seen at ``uv`` (F, M, 2) with
    ``weight`` (F, M) (0: not seen; NaN points are not seen either); see the module
    docstring. A frame stops when a step lowers its cost by less than ``ftol`` of it or moves
    it by less than ``xtol`` (twist norm: mm and radians). A frame with fewer than 3
    observations keeps its start."""
    uv_t = torch.as_tensor(np.asarray(uv, dtype=np.float64))
    F, M = uv_t.shape[:2]
    Kt = torch.as_tensor(np.asarray(K, dtype=np.float64)).expand(F, 3, 3)
    X = np.broadcast_to(np.asarray(points, dtype=np.float64), (F, M, 3))
    w = np.where(np.isfinite(X).all(-1), np.asarray(weight, dtype=np.float64), 0.0)
    X_t = torch.as_tensor(np.nan_to_num(X))
    w_t = torch.as_tensor(w)
    T = torch.as_tensor(np.asarray(poses, dtype=np.float64)).clone()
    kernel = kernel or TrivialKernel()
    r, p, wf = _residuals(Kt, T, X_t, uv_t, w_t)
    cost, rho1 = _cost(kernel, r, wf)
    active = (wf > 0).sum(-1) >= 3
    lam = torch.full((F,), lam0, dtype=torch.float64)
    converged = ~active
    it = 0
    eye = torch.eye(6, dtype=torch.float64)
    for it in range(1, max_iterations + 1):
        J = _jacobian(Kt, p)  # (F, M, 2, 6)
        om = (wf * rho1)[..., None, None]
        H = torch.einsum("fmic,fmid->fcd", J * om, J)
        g = torch.einsum("fmic,fmi->fc", J * om, r)
        D = torch.diagonal(H, dim1=-2, dim2=-1).clamp_min(1e-9)
        A = H + lam[:, None, None] * torch.diag_embed(D) + 1e-12 * eye
        step, info = torch.linalg.solve_ex(A, -g[..., None])
        step = torch.where((info == 0)[:, None], step[..., 0], torch.zeros_like(g))
        step = torch.where((active & ~converged)[:, None], step, torch.zeros_like(step))
        T_new = se3_exp(step) @ T
        r_new, p_new, wf_new = _residuals(Kt, T_new, X_t, uv_t, w_t)
        cost_new, rho1_new = _cost(kernel, r_new, wf_new)
        better = (cost_new < cost) & active & ~converged
        small = (cost - cost_new).abs() <= ftol * cost.clamp_min(1e-30)
        T = torch.where(better[:, None, None], T_new, T)
        r = torch.where(better[:, None, None], r_new, r)
        p = torch.where(better[:, None, None], p_new, p)
        wf = torch.where(better[:, None], wf_new, wf)
        rho1 = torch.where(better[:, None], rho1_new, rho1)
        tiny = step.norm(dim=-1) <= xtol  # the step no longer moves the pose
        converged = converged | (better & (small | tiny)) | (~better & (lam > 1e8))
        cost = torch.where(better, cost_new, cost)
        lam = torch.where(better, lam / 3.0, lam * 4.0).clamp(1e-10, 1e10)
        if bool(converged.all()):
            break
    n = (wf > 0).sum(-1)
    sq = ((r * r).sum(-1) * (wf > 0)).sum(-1)
    rms = torch.where(n > 0, torch.sqrt(sq / n.clamp_min(1)), torch.full_like(sq, float("nan")))
    return Resection(T.numpy(), rms.numpy(), n.numpy(), cost.numpy(), it,
                     converged.numpy())
