"""Reprojection residuals and their analytic Jacobians, batched over a dense (rows, N) layout.

Both parameterisations produce a :class:`Linearization`: residual 2-vectors ``r`` (B, N, 2)
already multiplied by ``sqrt(weight)`` (zero where unobserved), and the Jacobians with respect to
the left-perturbation twist of the poses (``T <- exp(xi) T``, xi = (v, w)), the per-frame log
depth scale and the structure. Row b of the layout involves the camera block of frame
``frame_a[b]`` and, for the depth parameterisation, also of ``frame_b[b]``:

* classical: B = F rows (one per frame), ``frame_a = arange(F)``, camera block = 6 pose
  columns, structure = the world point (3).
* depth: B = P rows (one per selected (target m, source n) pair), ``frame_a = m`` with
  7 columns (pose of m, log scale of m), ``frame_b = n`` with 7 columns (pose of n, and a zero
  column for the scale of n), structure = the landmark's log depth correction (1).

Everything is written in plain differentiable torch ops, so autograd through the residuals and
through the analytic Jacobians (used by implicit differentiation and unrolling) is available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from facesfm.solvers.problem import BAProblem, BAState, Parameterization

__all__ = [
    "Linearization",
    "classical_residuals",
    "cost_all",
    "depth_residuals",
    "linearize",
    "linearize_all",
    "rms_px",
]

# Points closer than this (mm) to a camera plane count as invalid (behind the camera).
MIN_DEPTH = 1e-6


@dataclass
class Linearization:
    """Residuals and Jacobians in the dense row layout (see the module docstring).

    Attributes:
        r: (B, N, 2) sqrt(weight)-scaled residuals, px.
        valid: (B, N) bool, observed slots.
        frame_a: (B,) long.
        Ja: (B, N, 2, C) or None.
        frame_b: (B,) long or None.
        Jb: (B, N, 2, C) or None.
        Js: (B, N, 2, S) or None (S = 0 gives None).
        bad_depth: number of observed slots whose point is behind a camera.
    """

    r: torch.Tensor
    valid: torch.Tensor
    frame_a: torch.Tensor
    Ja: torch.Tensor | None = None
    frame_b: torch.Tensor | None = None
    Jb: torch.Tensor | None = None
    Js: torch.Tensor | None = None
    bad_depth: torch.Tensor | int = 0
    kernel: object = None  # None: the problem's kernel (reprojection); else the term's kernel


def _proj_jac(K_rows: torch.Tensor, X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """dpi/dX (B, N, 2, 3) for points X (B, N, 3) with safe depth z (B, N); K_rows (B, 3, 3)."""
    fx = K_rows[:, 0, 0, None]
    fy = K_rows[:, 1, 1, None]
    iz = 1.0 / z
    zero = torch.zeros_like(z)
    row0 = torch.stack([fx * iz, zero, -fx * X[..., 0] * iz * iz], -1)
    row1 = torch.stack([zero, fy * iz, -fy * X[..., 1] * iz * iz], -1)
    return torch.stack([row0, row1], -2)


def _project(K_rows: torch.Tensor, X: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    fx = K_rows[:, 0, 0, None]
    fy = K_rows[:, 1, 1, None]
    cx = K_rows[:, 0, 2, None]
    cy = K_rows[:, 1, 2, None]
    return torch.stack([fx * X[..., 0] / z + cx, fy * X[..., 1] / z + cy], -1)


def _safe_obs(problem: BAProblem, rows: torch.Tensor | None = None):
    """uv with unobserved (possibly NaN) entries zeroed, and the observed mask."""
    valid = problem.weight > 0
    uv = torch.where(valid[..., None], problem.uv, torch.zeros_like(problem.uv))
    return uv, valid


def _sqrt_weight(w: torch.Tensor, use: torch.Tensor) -> torch.Tensor:
    """sqrt(w) where used, 0 elsewhere, with a finite gradient at w = 0."""
    return torch.where(use, torch.sqrt(torch.where(use, w, torch.ones_like(w))), torch.zeros_like(w))


def _safe_depth(z: torch.Tensor, valid: torch.Tensor):
    ok = z > MIN_DEPTH
    bad = (valid & ~ok).sum()  # a tensor: only the LM loop reads it (no sync per linearize)
    return torch.where(ok, z, torch.ones_like(z)), ok, bad


def classical_residuals(problem: BAProblem, state: BAState, jacobians: bool = True) -> Linearization:
    """Residuals ``sqrt(w_fj) (pi(K_f (R_f X_j + t_f)) - uv_fj)`` in the (F, N) layout.

    Ja (F, N, 2, 6) is w.r.t. the pose twist of frame f; Js (F, N, 2, 3) w.r.t. X_j (world, mm).
    """
    uv, valid = _safe_obs(problem)
    R = state.poses[:, :3, :3]
    t = state.poses[:, :3, 3]
    X = state.points
    Xc = torch.einsum("fab,nb->fna", R, X) + t[:, None, :]
    z, ok, bad = _safe_depth(Xc[..., 2], valid)
    sw = _sqrt_weight(problem.weight, valid & ok)
    r = sw[..., None] * (_project(problem.K, Xc, z) - uv)
    F = problem.num_frames
    frame_a = torch.arange(F, device=problem.device)
    lin = Linearization(r=r, valid=valid & ok, frame_a=frame_a, bad_depth=bad)
    if not jacobians:
        return lin
    Pj = _proj_jac(problem.K, Xc, z) * sw[..., None, None]  # (F, N, 2, 3)
    # d Xc / d xi = [I, -[Xc]x]; row p of P @ (-[Xc]x) is cross(Xc, p)
    Jrot = torch.cross(Xc[..., None, :].expand_as(Pj), Pj, dim=-1)
    lin.Ja = torch.cat([Pj, Jrot], -1)
    lin.Js = Pj @ R[:, None]  # d Xc / d X = R
    return lin


def depth_residuals(
    problem: BAProblem, state: BAState, pairs: torch.Tensor, jacobians: bool = True
) -> Linearization:
    """Equation-2 residuals in the (P, N) layout, one row per (target m, source n) pair.

    Landmark i seen in m is lifted to ``X_m = exp(s_m + d_i) depth_mi K_m^-1 [uv_mi, 1]`` and
    projected into n: ``r = sqrt(w_mi w_ni) (pi(K_n (R_nm X_m + t_nm)) - uv_ni)`` with
    ``n_T_m = cam_n_T_world @ inv(cam_m_T_world)``.

    Ja (P, N, 2, 7): w.r.t. (twist of m, s_m); Jb (P, N, 2, 7): w.r.t. (twist of n, s_n = 0);
    Js (P, N, 2, 1): w.r.t. d_i (None without depth corrections).
    """
    uv, valid = _safe_obs(problem)
    m, n = pairs[:, 0], pairs[:, 1]
    K = problem.K
    Km, Kn = K[m], K[n]
    uvm = uv[m]
    ray = torch.stack(
        [
            (uvm[..., 0] - Km[:, 0, 2, None]) / Km[:, 0, 0, None],
            (uvm[..., 1] - Km[:, 1, 2, None]) / Km[:, 1, 1, None],
            torch.ones_like(uvm[..., 0]),
        ],
        -1,
    )
    depth = torch.where(valid, problem.depth, torch.ones_like(problem.depth))
    logz = state.log_scale[m][:, None]
    if state.depth_correction is not None:
        logz = logz + state.depth_correction[None, :]
    zm = torch.exp(logz) * depth[m]
    Xm = zm[..., None] * ray  # (P, N, 3) in camera m
    Tm, Tn = state.poses[m], state.poses[n]
    Rm, tm = Tm[:, :3, :3], Tm[:, :3, 3]
    Rn, tn = Tn[:, :3, :3], Tn[:, :3, 3]
    Rnm = Rn @ Rm.transpose(-1, -2)
    tnm = tn - (Rnm @ tm[..., None])[..., 0]
    Xn = torch.einsum("pab,pnb->pna", Rnm, Xm) + tnm[:, None, :]
    pv = valid[m] & valid[n]
    z, ok, bad = _safe_depth(Xn[..., 2], pv)
    sw = _sqrt_weight(problem.weight[m] * problem.weight[n], pv & ok)
    r = sw[..., None] * (_project(Kn, Xn, z) - uv[n])
    lin = Linearization(r=r, valid=pv & ok, frame_a=m, frame_b=n, bad_depth=bad)
    if not jacobians:
        return lin
    Pj = _proj_jac(Kn, Xn, z) * sw[..., None, None]  # (P, N, 2, 3)
    A = Pj @ Rnm[:, None]  # d pi / d X_m
    # target: d Xn / d xi_m = -R_nm [I, -[X_m]x]; row a of A @ [X_m]x is cross(a, X_m)
    Ja_rot = torch.cross(A, Xm[..., None, :].expand_as(A), dim=-1)
    Js = (A @ Xm[..., None])  # d / d s_m  (= d / d d_i)
    lin.Ja = torch.cat([-A, Ja_rot, Js], -1)
    Jb_rot = torch.cross(Xn[..., None, :].expand_as(Pj), Pj, dim=-1)
    lin.Jb = torch.cat([Pj, Jb_rot, torch.zeros_like(Js)], -1)
    lin.Js = Js if state.depth_correction is not None else None
    return lin


def linearize(
    problem: BAProblem, state: BAState, pairs: torch.Tensor | None = None, jacobians: bool = True
) -> Linearization:
    """Dispatch on the problem's parameterisation (pairs: (P, 2), needed for DEPTH)."""
    if problem.parameterization is Parameterization.CLASSICAL:
        return classical_residuals(problem, state, jacobians)
    if pairs is None:
        pairs = problem.frame_pairs()
    return depth_residuals(problem, state, pairs, jacobians)


def linearize_all(
    problem: BAProblem, state: BAState, pairs: torch.Tensor | None = None, jacobians: bool = True
) -> list[Linearization]:
    """The reprojection linearisation followed by those of ``problem.extra_terms``."""
    lins = [linearize(problem, state, pairs, jacobians)]
    for term in problem.extra_terms:
        lin = term.linearize(problem, state, jacobians)
        if lin.kernel is None:
            lin.kernel = term.kernel
        lins.append(lin)
    return lins


def cost_all(problem: BAProblem, state: BAState, lins: list[Linearization]):
    """Total cost over all terms (+ the depth-correction prior) and per-term rho' (B, N)."""
    total, rho1s = None, []
    for lin in lins:
        kernel = problem.kernel if lin.kernel is None else lin.kernel
        s = (lin.r * lin.r).sum(-1)
        rho, rho1, _ = kernel.rho(s)
        c = 0.5 * rho.sum()
        total = c if total is None else total + c
        rho1s.append(rho1)
    if state.depth_correction is not None:
        total = total + 0.5 * problem.depth_prior_weight * (state.depth_correction**2).sum()
    return total, rho1s


def rms_px(lin: Linearization) -> float:
    """Root-mean-square residual (px, weighted) over the valid slots of ``lin``."""
    return math.sqrt(float((lin.r.detach() ** 2).sum()) / max(int(lin.valid.sum()), 1))
