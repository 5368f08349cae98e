"""Float64 reference: scipy.optimize.least_squares (trf) with the analytic sparse Jacobian.

Parameters for scipy (a flat vector): per free frame a rotation vector ``w`` relative to the
initial rotation (``R = exp(w) R_init``, no singularity near the start) and the translation
``t`` itself, the free log depth scales, and the structure. Residual Jacobians come from
:mod:`facesfm.solvers.residuals` (left-perturbation form) and are converted with
``dr/dt = J_v`` and ``dr/dw = (J_v [t]x + J_w) J_l(w)``.

Robust kernels are applied by rescaling each observation's residual 2-vector to
``sqrt(rho(s)/s) r`` so that scipy's plain least squares minimises ``0.5 sum rho(s)``, the same
objective as every other backend (scipy's own ``loss=`` acts per scalar, not per 2-vector).
Gauge: the fixed frame is held; in the classical parameterisation the scale is fixed by holding
one translation coordinate of the frame chosen by :func:`gauge_free_mask`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from facesfm.errors import InputError
from facesfm.geometry.se3 import hat, so3_exp, so3_left_jacobian
from facesfm.solvers.problem import (
    BAProblem,
    BAResult,
    BAState,
    complete_state,
    gauge_free_mask,
)
from facesfm.solvers.residuals import linearize, rms_px

__all__ = ["ScipyReference"]


@dataclass(frozen=True)
class ScipyReference:
    """scipy's trust-region-reflective least squares, float64, analytic sparse Jacobian."""

    ftol: float = 1e-12
    xtol: float = 1e-12
    gtol: float = 1e-12
    max_nfev: int = 200
    name = "scipy-trf"

    def solve(self, problem: BAProblem, init: BAState) -> BAResult:
        from scipy.optimize import least_squares

        t0 = time.perf_counter()
        pairs = problem.validate()  # same weights as the CPU copy below
        if problem.extra_terms:
            raise InputError("ScipyReference: extra cost terms are supported by LMSolver only")
        dev = problem.device
        p = problem.replace(
            K=problem.K.detach().cpu().double(),
            uv=problem.uv.detach().cpu().double(),
            weight=problem.weight.detach().cpu().double(),
            depth=None if problem.depth is None else problem.depth.detach().cpu().double(),
        )
        init = complete_state(p, init.detach().to(dtype=torch.float64, device="cpu"))
        pairs = None if pairs is None else pairs.cpu()
        F, N, C, S = p.num_frames, p.num_landmarks, p.camera_dim, p.structure_dim
        free = gauge_free_mask(p, init).numpy()
        cam_idx = np.full((F, C), -1, np.int64)
        cam_idx[free] = np.arange(int(free.sum()))
        n_cam = int(free.sum())
        st_idx = n_cam + np.arange(N * S).reshape(N, S) if S else None
        R0 = init.poses[:, :3, :3]

        x0 = np.zeros(n_cam + N * S)
        t_init = init.poses[:, :3, 3].numpy()
        for f in range(F):
            for k in range(3):
                if cam_idx[f, k] >= 0:
                    x0[cam_idx[f, k]] = t_init[f, k]
        if C == 7:
            s0 = init.log_scale.numpy()
            x0[cam_idx[free[:, 6], 6]] = s0[free[:, 6]]
        if S == 3:
            x0[n_cam:] = init.points.numpy().reshape(-1)
        elif S == 1:
            x0[n_cam:] = init.depth_correction.numpy()

        def unpack(x):
            xt = torch.from_numpy(x)
            w = torch.zeros(F, 3, dtype=torch.float64)
            t = init.poses[:, :3, 3].clone()
            for k in range(3):
                m = torch.from_numpy(cam_idx[:, 3 + k] >= 0)
                w[m, k] = xt[torch.from_numpy(cam_idx[:, 3 + k][cam_idx[:, 3 + k] >= 0])]
                m = torch.from_numpy(cam_idx[:, k] >= 0)
                t[m, k] = xt[torch.from_numpy(cam_idx[:, k][cam_idx[:, k] >= 0])]
            poses = init.poses.clone()
            poses[:, :3, :3] = so3_exp(w) @ R0
            poses[:, :3, 3] = t
            state = BAState(poses)
            if C == 7:
                sc = init.log_scale.clone()
                m = torch.from_numpy(free[:, 6])
                sc[m] = xt[torch.from_numpy(cam_idx[free[:, 6], 6])]
                state.log_scale = sc
            if S == 3:
                state.points = xt[n_cam:].reshape(N, 3)
            elif S == 1:
                state.depth_correction = xt[n_cam:].clone()
            return state, w, t

        cache = {}

        def evaluate(x):
            key = x.tobytes()
            if cache.get("key") != key:
                state, w, t = unpack(x)
                lin = linearize(p, state, pairs, jacobians=True)
                cache.update(key=key, lin=lin, state=state, w=w, t=t)
            return cache

        kernel = p.kernel

        def scaled(lin):
            """Per-slot g = sqrt(rho/s) and dg/ds."""
            s = (lin.r**2).sum(-1)
            rho, rho1, rho2 = kernel.rho(s)
            tiny = s < 1e-12
            ss = torch.where(tiny, torch.ones_like(s), s)
            g = torch.where(tiny, torch.sqrt(rho1), torch.sqrt(rho / ss))
            dg = torch.where(tiny, rho2 / (4.0 * g), (rho1 * ss - rho) / (2.0 * ss * ss * g))
            return g, dg

        def fun(x):
            c = evaluate(x)
            lin = c["lin"]
            g, _ = scaled(lin)
            r = (g[..., None] * lin.r)[lin.valid].reshape(-1).numpy()
            if S == 1:
                r = np.concatenate([r, np.sqrt(p.depth_prior_weight) * x[n_cam:]])
            return r

        def jac(x):
            from scipy.sparse import coo_matrix

            c = evaluate(x)
            lin, w, t = c["lin"], c["w"], c["t"]
            g, dg = scaled(lin)
            r = lin.r
            # d(g r)/d theta = (g I + 2 dg r r^T) J
            M = g[..., None, None] * torch.eye(2, dtype=torch.float64) + 2.0 * dg[
                ..., None, None
            ] * (r[..., :, None] * r[..., None, :])
            Jl = so3_left_jacobian(w)  # (F, 3, 3)

            def to_params(J, frames):
                Jv, Jw = J[..., :3], J[..., 3:6]
                tf = t[frames]
                Jrot = (Jv @ hat(tf)[:, None] + Jw) @ Jl[frames][:, None]
                out = torch.cat([Jv, Jrot] + ([J[..., 6:]] if C == 7 else []), -1)
                return M @ out

            valid = lin.valid.numpy()
            b_idx, n_idx = np.nonzero(valid)
            n_obs = len(b_idx)
            rows_all = np.arange(2 * n_obs).reshape(n_obs, 2)
            rows, cols, vals = [], [], []

            def add(Jp, col_of_slot):
                # Jp: (n_obs, 2, k); col_of_slot: (n_obs, k) (-1 = fixed)
                k = Jp.shape[-1]
                rr = np.repeat(rows_all[:, :, None], k, 2)
                cc = np.repeat(col_of_slot[:, None, :], 2, 1)
                keep = cc >= 0
                rows.append(rr[keep])
                cols.append(cc[keep])
                vals.append(Jp[keep])

            fa = lin.frame_a.numpy()
            Ja = to_params(lin.Ja, lin.frame_a)[torch.from_numpy(valid)].numpy()
            add(Ja, cam_idx[fa[b_idx]])
            if lin.Jb is not None:
                fb = lin.frame_b.numpy()
                Jb = to_params(lin.Jb, lin.frame_b)[torch.from_numpy(valid)].numpy()
                add(Jb, cam_idx[fb[b_idx]])
            if lin.Js is not None:
                Js = (M @ lin.Js)[torch.from_numpy(valid)].numpy()
                add(Js, st_idx[n_idx])
            n_rows = 2 * n_obs
            if S == 1:
                rows.append(n_rows + np.arange(N))
                cols.append(st_idx[:, 0])
                vals.append(np.full(N, np.sqrt(p.depth_prior_weight)))
                n_rows += N
            return coo_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(n_rows, len(x0)),
            ).tocsr()

        t_setup = time.perf_counter() - t0
        costs = []

        def fun_logged(x):
            r = fun(x)
            costs.append(0.5 * float(r @ r))
            return r

        sol = least_squares(
            fun_logged,
            x0,
            jac=jac,
            method="trf",
            ftol=self.ftol,
            xtol=self.xtol,
            gtol=self.gtol,
            max_nfev=self.max_nfev,
            x_scale="jac",
            # lsmr's default tolerances (1e-6) give inexact steps that stall trf near the optimum
            tr_options={"atol": 1e-12, "btol": 1e-12},
        )
        t_solve = time.perf_counter() - t0 - t_setup
        state, _, _ = unpack(sol.x)
        state = state.to(dtype=problem.dtype, device=dev)
        lin = linearize(p, unpack(sol.x)[0], pairs, jacobians=False)
        rms = rms_px(lin)
        return BAResult(
            state=state,
            cost=torch.tensor(costs + [float(sol.cost)], dtype=torch.float64),
            iterations=int(sol.njev or 0),
            converged=bool(sol.status > 0),
            timings={"setup": t_setup, "solve": t_solve},
            rms_px=rms,
            message=str(sol.message),
        )
