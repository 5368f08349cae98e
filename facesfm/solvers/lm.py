"""Our vectorised Levenberg-Marquardt with a Schur-reduced pose system, in plain torch.

One LM iteration:

1. analytic Jacobians of every residual at once (:mod:`facesfm.solvers.residuals`);
2. normal equations ``[[U, W], [W^T, V]] [dc; ds] = -[gc; gs]`` assembled with batched
   einsums: U (F*C, F*C) camera block, W (F, N, C, S), V (N, S, S) block-diagonal structure
   (S = 3 per point, 1 per landmark log depth), with IRLS weights rho'(s) from the kernel;
3. Schur complement on the structure: ``(U - W V^-1 W^T) dc = -gc + W V^-1 gs`` (one matrix
   product), damped Cholesky on it with the fixed frame's block removed (gauge), and
   back-substitution for ds; the damping is ``lam * max(diag(H), min_diagonal * max diag(H))``
   (Ceres' ``min_lm_diagonal``), so a direction without curvature at the current state (the
   depth scales at zero baseline) is damped rather than fatal;
4. gain-ratio step control (Nielsen), stop on relative cost change, step size or gradient.

The normal equations and their factorisation are :mod:`facesfm.solvers.schur`; the
differentiation modes (:class:`BackwardMode`) are :mod:`facesfm.solvers.implicit`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from facesfm.solvers.implicit import (
    BackwardMode,
    HessianProducts,
    _attach_implicit,
    _detached_problem,
    _intra_op_threads,
)
from facesfm.solvers.problem import (
    BAProblem,
    BAResult,
    BAState,
    SolverError,
    complete_state,
    gauge_free_mask,
)
from facesfm.solvers.residuals import cost_all, linearize, linearize_all, rms_px
from facesfm.solvers.schur import NormalEquations, SchurFactor, normal_equations, retract

__all__ = ["BackwardMode", "HessianProducts", "LMSolver"]


@dataclass(frozen=True)
class LMSolver:
    """Our batched Schur-complement Levenberg-Marquardt (see the module docstring).

    Attributes:
        max_iterations: iteration cap.
        ftol: stop when an accepted step lowers the cost by less than ftol * cost.
        xtol: stop when the step's largest entry is below xtol (rad / mm / log units).
        gtol: stop when the largest gradient entry is below gtol.
        initial_damping: starting lambda (relative to diag(H), Ceres style).
        backward: :class:`BackwardMode`.
        truncated_steps: differentiable steps of ``BackwardMode.TRUNCATED``.
        refine_iterations: cap on the preconditioned CG iterations on the exact Hessian in
            ``BackwardMode.IMPLICIT``.
        implicit_rtol: the CG stops at this residual norm relative to |dL/dtheta|.
        hessian_products: :class:`HessianProducts` (how the CG forms H v).
        min_diagonal: floor on the LM damping diagonal, relative to the largest diagonal entry
            of the normal equations (see :class:`SchurFactor`; Ceres' ``min_lm_diagonal``).
            0 restores plain ``lam * diag(H)`` damping, which fails on a zero-baseline start
            in the depth parameterisation. A frame whose pose has no constraint at all still
            raises :class:`SolverError`. 1e-5: at 1e-8 the nearly flat log-depth-scale
            directions of a small-baseline start (untrained PoseNet) took steps to scales of
            ~1e22 within three iterations; at 1e-3 convergence slowed (29 instead of <= 20
            iterations on a Huber depth solve).
    """

    max_iterations: int = 50
    ftol: float = 1e-10
    xtol: float = 1e-10
    gtol: float = 1e-10
    initial_damping: float = 1e-6
    backward: BackwardMode = BackwardMode.IMPLICIT
    truncated_steps: int = 5
    refine_iterations: int = 30
    hessian_products: HessianProducts = HessianProducts.AUTOGRAD
    implicit_rtol: float = 1e-7
    min_diagonal: float = 1e-5
    threads: int | None = 1

    name = "ours-lm"

    def solve(self, problem: BAProblem, init: BAState) -> BAResult:
        with _intra_op_threads(self.threads, problem.device):
            return self._solve(problem, init)

    def _solve(self, problem: BAProblem, init: BAState) -> BAResult:
        t0 = time.perf_counter()
        pairs = problem.validate()
        init = complete_state(problem, init)
        free = gauge_free_mask(problem, init)
        t_setup = time.perf_counter() - t0
        mode = self.backward
        if mode is BackwardMode.UNROLL:
            state, info = self._iterate(problem, init, pairs, free, self.max_iterations)
        else:
            dp = _detached_problem(problem)
            with torch.no_grad():
                state, info = self._iterate(dp, init.detach(), pairs, free, self.max_iterations)
            if mode is BackwardMode.TRUNCATED:
                state, _ = self._iterate(
                    problem, state.detach(), pairs, free, self.truncated_steps, lam0=1e-12,
                    force=True,
                )
            elif mode in (BackwardMode.IMPLICIT, BackwardMode.IMPLICIT_GN) and torch.is_grad_enabled():
                state = _attach_implicit(self, problem, state, pairs, free, info["factor"])
        t_solve = time.perf_counter() - t0 - t_setup
        with torch.no_grad():
            lin = linearize(_detached_problem(problem), state.detach(), pairs, jacobians=False)
            rms = rms_px(lin)
        return BAResult(
            state=state,
            cost=torch.tensor(info["costs"], dtype=torch.float64),
            iterations=info["iterations"],
            converged=info["converged"],
            timings={"setup": t_setup, "solve": t_solve},
            rms_px=rms,
            message=info["message"],
        )

    # ------------------------------------------------------------------ the LM loop
    def _iterate(self, problem, state, pairs, free, max_iterations, lam0=None, force=False):
        """LM iterations from ``state``. ``force`` takes every step (used for differentiable
        steps at the optimum, where the cost cannot meaningfully decrease)."""
        C = problem.camera_dim
        lin = linearize_all(problem, state, pairs)
        if int(lin[0].bad_depth):
            raise SolverError(
                f"bundle adjustment: {int(lin[0].bad_depth)} observed landmark(s) lie behind a camera "
                "at the initial state; check the initial poses/points/depths"
            )
        cost, rho1 = cost_all(problem, state, lin)
        if not torch.isfinite(cost):
            raise SolverError("bundle adjustment: the initial cost is not finite")
        costs = [float(cost.detach())]
        lam = self.initial_damping if lam0 is None else lam0
        nu = 2.0
        converged, message, it = False, "iteration cap reached", 0
        last_factor = None
        for it in range(1, max_iterations + 1):
            ne = normal_equations(problem, state, lin, rho1)
            gnorm = float((ne.gc.detach() * free).abs().max())
            if ne.gs is not None:
                gnorm = max(gnorm, float(ne.gs.detach().abs().max()))
            if not math.isfinite(gnorm):
                raise SolverError("bundle adjustment: the gradient is not finite")
            _check_constrained(ne, free, C)
            if gnorm < self.gtol and not force:
                converged, message, it = True, "gradient below gtol", it - 1
                break
            accepted = False
            while True:
                fac = SchurFactor(ne, lam, free, C, self.min_diagonal)
                if not fac.ok:
                    lam *= 10.0
                    if lam > 1e12:
                        raise SolverError(
                            "bundle adjustment: the reduced pose system is singular (gauge or "
                            "structure not constrained: too few co-visible landmarks?)"
                        )
                    continue
                dc, ds = fac.solve(-ne.gc, None if ne.gs is None else -ne.gs)
                new_state = retract(state, dc, ds)
                new_lin = linearize_all(problem, new_state, pairs)
                new_cost, new_rho1 = cost_all(problem, new_state, new_lin)
                g_dot = (ne.gc * dc).sum() + (0 if ds is None else (ne.gs * ds).sum())
                pred = 0.5 * float((fac.damping_dot(lam, dc, ds) - g_dot).detach())
                actual = float((cost - new_cost).detach())
                ok = bool(torch.isfinite(new_cost)) and int(new_lin[0].bad_depth) == 0
                if force:
                    accepted = True  # keep lam: rounding-level gain ratios would blow it up
                    break
                if ok and pred > 0 and actual > 0:
                    rho = actual / pred
                    lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                    nu = 2.0
                    accepted = True
                    break
                lam *= nu
                nu *= 2.0
                if lam > 1e16:
                    break
            if not accepted:
                # only cost changes at rounding level left: the optimum to machine precision
                converged = abs(actual) <= 1e-12 * max(float(cost), 1e-300)
                message = "no step decreases the cost"
                it -= 1
                break
            last_factor = fac
            step = float(dc.detach().abs().max())
            if ds is not None:
                step = max(step, float(ds.detach().abs().max()))
            state, lin, cost, rho1 = new_state, new_lin, new_cost, new_rho1
            costs.append(float(cost.detach()))
            if force:
                continue
            if actual < self.ftol * costs[-2]:
                converged, message = True, "relative cost change below ftol"
                break
            if step < self.xtol:
                converged, message = True, "step below xtol"
                break
        info = {"costs": costs, "iterations": it, "converged": converged, "message": message}
        info["free"] = free
        info["factor"] = last_factor
        return state, info


def _check_constrained(ne: NormalEquations, free: torch.Tensor, C: int) -> None:
    """Raise :class:`SolverError` when a free frame's pose has no constraint at all (all six
    pose columns of its Jacobian vanish, e.g. a zero focal length): the damping floor would
    otherwise hide it (the frame would just never move). A single vanishing direction, such as
    the depth scales at zero baseline, is left to the damping."""
    d = torch.diagonal(ne.U.detach()).reshape(-1, C)[:, :6]
    top = float(d.max())
    dead = (d.amax(1) <= 1e-14 * max(top, 1e-300)) & free.any(1)
    if bool(dead.any()):
        f = int(dead.nonzero()[0, 0])
        raise SolverError(
            f"bundle adjustment: the reduced pose system is singular: frame {f}'s pose has no "
            "constraint (its reprojection Jacobian is zero; check its intrinsics and weights)"
        )
