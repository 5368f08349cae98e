"""Differentiating through the bundle adjustment (:class:`BackwardMode`), for
:class:`facesfm.solvers.lm.LMSolver`:

* ``IMPLICIT``: implicit function theorem at the optimum theta*(x): with E the cost,
  ``dL/dx = -(d^2E/dtheta dx)^T H^-1 dL/dtheta``. H z = dL/dtheta is solved by conjugate gradients with
  exact Hessian-vector products (autograd through the analytic gradient J^T rho' r, so kernel
  curvature and second-order residual terms are included), preconditioned by the same
  Schur-reduced factorisation (the Gauss-Newton Hessian); the mixed term is one more
  autograd pass through ``z . grad_theta E``.
* ``IMPLICIT_GN``: the same with the Gauss-Newton Hessian only (no refinement; cheaper,
  exact only for zero-residual problems).
* ``UNROLL``: autograd through every LM iteration (gradients also reach the initial state).
* ``TRUNCATED``: solve without a graph, then differentiate through ``truncated_steps`` more
  LM steps taken from the (detached) optimum.
* ``NONE``: no graph.
"""

from __future__ import annotations

import contextlib
import enum

import torch

from facesfm.geometry.se3 import se3_exp
from facesfm.solvers.problem import BAProblem, BAState, SolverError
from facesfm.solvers.residuals import cost_all, linearize_all
from facesfm.solvers.schur import (
    SchurFactor,
    _jvp,
    _row_grad,
    _scatter_rows,
    _structure_grad,
    normal_equations,
    retract,
)

__all__ = ["BackwardMode", "HessianProducts"]


class BackwardMode(enum.Enum):
    """How gradients pass the bundle adjustment (see the module docstring)."""

    NONE = "none"
    IMPLICIT = "implicit"
    IMPLICIT_GN = "implicit_gn"
    UNROLL = "unroll"
    TRUNCATED = "truncated"


class HessianProducts(enum.Enum):
    """How ``BackwardMode.IMPLICIT`` forms exact Hessian-vector products.

    AUTOGRAD: reverse mode through the analytic gradient (exact to rounding).
    CENTRAL_DIFFERENCE: central difference of the analytic gradient along the vector (two
    gradient evaluations without a graph; relative error ~1e-8, about 2x cheaper).
    """

    AUTOGRAD = "autograd"
    CENTRAL_DIFFERENCE = "central_difference"



@contextlib.contextmanager
def _intra_op_threads(n: int | None, device: torch.device):
    """Temporarily set torch's intra-op thread count for CPU work (no-op for None or GPU)."""
    if n is None or torch.device(device).type != "cpu" or torch.get_num_threads() == n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _detached_problem(problem: BAProblem) -> BAProblem:
    d = None if problem.depth is None else problem.depth.detach()
    return problem.replace(
        K=problem.K.detach(), uv=problem.uv.detach(), weight=problem.weight.detach(), depth=d
    )


# ---------------------------------------------------------------------- implicit differentiation


def _inputs(problem: BAProblem) -> list[torch.Tensor]:
    xs = [problem.K, problem.uv, problem.weight]
    if problem.depth is not None:
        xs.append(problem.depth)
    return xs


def _with_inputs(problem: BAProblem, xs) -> BAProblem:
    d = xs[3] if len(xs) > 3 else None
    return problem.replace(K=xs[0], uv=xs[1], weight=xs[2], depth=d)


def _structure_of(state: BAState) -> torch.Tensor | None:
    if state.points is not None:
        return state.points
    if state.depth_correction is not None:
        return state.depth_correction[:, None]
    return None


def _grad_dot(problem, state, pairs, vc, vs):
    """q = grad_theta E . v, in left-perturbation coordinates (differentiable)."""
    lins = linearize_all(problem, state, pairs)
    _, rho1s = cost_all(problem, state, lins)
    q = sum((rho1[..., None] * lin.r * _jvp(lin, vc, vs)).sum() for lin, rho1 in zip(lins, rho1s))
    if state.depth_correction is not None and vs is not None:
        q = q + problem.depth_prior_weight * (state.depth_correction * vs[:, 0]).sum()
    return q


class _ImplicitFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, holder, *tensors):
        ctx.holder = holder
        st = holder["state"]
        outs = [st.poses.clone()]
        for x in (st.points, st.log_scale, st.depth_correction):
            if x is not None:
                outs.append(x.clone())
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        h = ctx.holder
        with _intra_op_threads(h["solver"].threads, h["problem"].device):
            return _ImplicitFn._backward(h, grads)

    @staticmethod
    def _backward(h, grads):
        solver, problem, st, pairs = h["solver"], h["problem"], h["state"], h["pairs"]
        F, C = problem.num_frames, problem.camera_dim
        free = h["free"]
        with torch.enable_grad():
            # dL/dtheta in the tangent coordinates of the optimum
            xi = torch.zeros(F, 6, dtype=st.poses.dtype, device=st.poses.device, requires_grad=True)
            T = se3_exp(xi) @ st.poses
            gp = grads[0] if grads[0] is not None else torch.zeros_like(T)
            (g_xi,) = torch.autograd.grad(T, xi, gp)
            k = 1
            gc = torch.zeros(F, C, dtype=st.poses.dtype, device=st.poses.device)
            gc[:, :6] = g_xi
            gs = None
            if st.points is not None:
                gs = grads[k] if grads[k] is not None else torch.zeros_like(st.points)
                k += 1
            if st.log_scale is not None:
                if grads[k] is not None:
                    gc[:, 6] = grads[k]
                k += 1
            if st.depth_correction is not None:
                g = grads[k] if grads[k] is not None else torch.zeros_like(st.depth_correction)
                gs = g[:, None]
            gc = gc * free
            z_c, z_s = _solve_hessian(solver, problem, st, pairs, free, gc, gs, h["factor"])
            xs = [x.detach().requires_grad_(x.requires_grad) for x in h["inputs"]]
            need = [x for x in xs if x.requires_grad]
            if not need:
                return (None,) + tuple(None for _ in h["inputs"])
            q = _grad_dot(_with_inputs(problem, xs), st, pairs, z_c, z_s)
            gx = torch.autograd.grad(q, need, allow_unused=True)
        out, it = [], iter(gx)
        for x in xs:
            if x.requires_grad:
                g = next(it)
                out.append(None if g is None else -g)
            else:
                out.append(None)
        return (None,) + tuple(out)


#: the last LM factorisation is reused as the implicit backward's preconditioner only when its
#: damping lam (relative to diag(H)) is at most this
_REUSE_MAX_DAMPING = 1e-3


def _solve_hessian(solver, problem, st, pairs, free, gc, gs, factor=None):
    """Solve H z = g at the optimum (z_c (F, C), z_s (N, S)); H exact unless IMPLICIT_GN.

    ``factor``: the last LM iteration's Schur factorisation, reused as the CG preconditioner
    (it was built a fraction of a step away from the optimum with a tiny damping).
    """
    C = problem.camera_dim
    if (factor is not None and factor.lam > _REUSE_MAX_DAMPING
            and solver.backward is BackwardMode.IMPLICIT):
        # the last accepted step was heavily damped (LM raises lam on the rounding-level gain
        # ratios near the optimum): a poor preconditioner, CG would stop at its iteration cap
        # far from H^-1 g. Refactor at the optimum with the least damping that factors (the
        # preconditioner only; the CG below uses the exact Hessian); keep the old one if none.
        with torch.no_grad():
            lin = linearize_all(problem, st, pairs)
            _, rho1 = cost_all(problem, st, lin)
            ne = normal_equations(problem, st, lin, rho1)
            for lam in (0.0, 1e-9, 1e-7, 1e-5, _REUSE_MAX_DAMPING):
                fresh = SchurFactor(ne, lam, free, C, solver.min_diagonal)
                if fresh.ok:
                    factor = fresh
                    break
    if factor is not None and solver.backward is BackwardMode.IMPLICIT:
        with torch.no_grad():
            zc, zs = factor.solve(gc, gs)
        fac = factor
    else:
        with torch.no_grad():
            lin = linearize_all(problem, st, pairs)
            _, rho1 = cost_all(problem, st, lin)
            ne = normal_equations(problem, st, lin, rho1)
            fac = SchurFactor(ne, 0.0, free, C)
            if not fac.ok:
                raise SolverError("implicit backward: the Hessian at the optimum is singular")
            zc, zs = fac.solve(gc, gs)
    if solver.backward is BackwardMode.IMPLICIT_GN:
        return zc, zs
    # preconditioned conjugate gradients on the exact Hessian (symmetric at the optimum), with
    # the Gauss-Newton Schur factorisation as preconditioner: a few iterations suffice
    def dot(ac, as_, bc, bs):
        out = (ac * bc).sum()
        return out if as_ is None else out + (as_ * bs).sum()

    hvp = _hvp if solver.hessian_products is HessianProducts.AUTOGRAD else _hvp_cd
    hc, hs = hvp(problem, st, pairs, zc, zs)
    rc = (gc - hc) * free
    rs = None if gs is None else gs - hs
    gnorm = float(dot(gc, gs, gc, gs)) ** 0.5
    with torch.no_grad():
        yc, ys = fac.solve(rc, rs)
    yc = yc * free
    pc, ps = yc, ys
    ry = dot(rc, rs, yc, ys)
    for _ in range(solver.refine_iterations):
        if float(dot(rc, rs, rc, rs)) ** 0.5 <= solver.implicit_rtol * max(gnorm, 1e-300):
            break
        qc, qs = hvp(problem, st, pairs, pc, ps)
        qc = qc * free
        alpha = ry / dot(pc, ps, qc, qs)
        zc = zc + alpha * pc
        zs = None if zs is None else zs + alpha * ps
        rc = rc - alpha * qc
        rs = None if rs is None else rs - alpha * qs
        with torch.no_grad():
            yc, ys = fac.solve(rc, rs)
        yc = yc * free
        ry_new = dot(rc, rs, yc, ys)
        beta = ry_new / ry
        ry = ry_new
        pc = yc + beta * pc
        ps = None if ps is None else ys + beta * ps
    return zc, zs


def _gradient(problem, st, pairs):
    """Exact gradient of the cost in left-perturbation coordinates: (gc (F, C), gs (N, S))."""
    F = problem.num_frames
    lins = linearize_all(problem, st, pairs)
    _, rho1s = cost_all(problem, st, lins)
    gc, gs = 0.0, None
    for lin, rho1 in zip(lins, rho1s):
        rW = rho1[..., None] * lin.r
        gc = gc + _scatter_rows(_row_grad(lin.Ja, rW), lin.frame_a, F)
        if lin.Jb is not None:
            gc = gc + _scatter_rows(_row_grad(lin.Jb, rW), lin.frame_b, F)
        if lin.Js is not None:
            g = _structure_grad(lin.Js, rW)
            gs = g if gs is None else gs + g
    if gs is not None and st.depth_correction is not None:
        gs = gs + problem.depth_prior_weight * st.depth_correction[:, None]
    return gc, gs


def _hvp_cd(problem, st, pairs, vc, vs):
    """Hessian-vector product by a central difference of the analytic gradient along v."""
    scale = float(vc.abs().max())
    if vs is not None:
        scale = max(scale, float(vs.abs().max()))
    if scale == 0.0:
        return torch.zeros_like(vc), (None if vs is None else torch.zeros_like(vs))
    eps = 1e-4 / scale
    with torch.no_grad():
        gp = _gradient(problem, retract(st, eps * vc, None if vs is None else eps * vs), pairs)
        gm = _gradient(problem, retract(st, -eps * vc, None if vs is None else -eps * vs), pairs)
    hc = (gp[0] - gm[0]) / (2 * eps)
    hs = None if vs is None else (gp[1] - gm[1]) / (2 * eps)
    return hc, hs


def _hvp(problem, st, pairs, vc, vs):
    """Exact Hessian-vector product of the cost at ``st`` (left-perturbation coordinates)."""
    F, C = problem.num_frames, problem.camera_dim
    with torch.enable_grad():
        ec = torch.zeros(F, C, dtype=vc.dtype, device=vc.device, requires_grad=True)
        S0 = _structure_of(st)
        es = None if S0 is None else torch.zeros_like(S0, requires_grad=True)
        moved = retract(st, ec, es)
        q = _grad_dot(problem, moved, pairs, vc.detach(), None if vs is None else vs.detach())
        wrt = [ec] + ([es] if es is not None else [])
        g = torch.autograd.grad(q, wrt)
    return g[0].detach(), (g[1].detach() if es is not None else None)


def _attach_implicit(solver, problem, state, pairs, free, factor=None) -> BAState:
    inputs = _inputs(problem)
    if not any(x.requires_grad for x in inputs):
        return state
    holder = {
        "solver": solver,
        "problem": _detached_problem(problem),
        "state": state.detach(),
        "pairs": pairs,
        "free": free,
        "factor": factor,
        "inputs": inputs,
    }
    outs = list(_ImplicitFn.apply(holder, *inputs))
    poses = outs.pop(0)
    points = outs.pop(0) if state.points is not None else None
    s = outs.pop(0) if state.log_scale is not None else None
    d = outs.pop(0) if state.depth_correction is not None else None
    return BAState(poses, points, s, d)
