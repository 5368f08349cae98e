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

Differentiation (:class:`BackwardMode`):

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
import math
import time
from dataclasses import dataclass

import torch

from facesfm.geometry.se3 import se3_exp
from facesfm.solvers.problem import (
    BAProblem,
    BAResult,
    BAState,
    SolverError,
    TrivialKernel,
    complete_state,
    gauge_free_mask,
)
from facesfm.solvers.residuals import (
    Linearization,
    cost_all,
    linearize,
    linearize_all,
    rms_px,
)

__all__ = ["BackwardMode", "HessianProducts", "LMSolver", "NormalEquations", "SchurFactor", "normal_equations"]


class BackwardMode(enum.Enum):
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


@dataclass
class NormalEquations:
    """Gauss-Newton normal equations (IRLS-weighted) in block form.

    U: (F*C, F*C); W: (F, N, C, S) or None; V: (N, S, S) or None; gc: (F, C); gs: (N, S) or None.
    """

    U: torch.Tensor
    W: torch.Tensor | None
    V: torch.Tensor | None
    gc: torch.Tensor
    gs: torch.Tensor | None


def _row_grad(J: torch.Tensor, rW: torch.Tensor) -> torch.Tensor:
    """sum_{n,i} J[b, n, i, :] rW[b, n, i]: (B, N, 2, C), (B, N, 2) -> (B, C), as one batched
    matrix product (torch.einsum picks a ~4x slower path for this contraction on CPU)."""
    B, C = J.shape[0], J.shape[-1]
    return (J.reshape(B, -1, C).transpose(1, 2) @ rW.reshape(B, -1, 1))[..., 0]


def _structure_grad(Js: torch.Tensor, rW: torch.Tensor) -> torch.Tensor:
    """sum_{b,i} Js[b, n, i, :] rW[b, n, i]: (B, N, 2, S), (B, N, 2) -> (N, S)."""
    return (Js * rW[..., None]).sum(2).sum(0)


def _structure_hessian(JsW: torch.Tensor, Js: torch.Tensor) -> torch.Tensor:
    """sum_{b,i} JsW[b, n, i, :]^T Js[b, n, i, :]: -> (N, S, S), as one batched product."""
    N, S = Js.shape[1], Js.shape[-1]
    A = JsW.transpose(0, 1).reshape(N, -1, S)
    B = Js.transpose(0, 1).reshape(N, -1, S)
    return A.transpose(1, 2) @ B


def _scatter_rows(rows: torch.Tensor, idx: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows (B, ...) into (size, ...) by index idx (B,)."""
    out = rows.new_zeros((size,) + tuple(rows.shape[1:]))
    return out.index_add_(0, idx, rows)


def _robust_weights(problem: BAProblem, lin: Linearization, rho1: torch.Tensor):
    """Per-slot weight on the residual 2-vector, as Ceres' Corrector builds it: where the
    kernel's curvature rho'' is positive, rho' I + 2 rho'' r r^T (the kernel's own curvature
    along r); where rho'' <= 0 (Huber outside its quadratic zone, Cauchy everywhere: the
    redescending or linear regimes), plain IRLS ``rho' I``, since adding a negative (or
    clamped) curvature along r makes the Gauss-Newton model nearly flat along r and LM crawls
    (27 iterations instead of 6 on the 61x800 solve problem, same optimum).

    Returns None when every slot uses rho' I (then the caller weighs by rho' alone), else
    (B, N, 2, 2).
    """
    kernel = problem.kernel if lin.kernel is None else lin.kernel
    if isinstance(kernel, TrivialKernel):
        return None
    s = (lin.r * lin.r).sum(-1)
    _, r1, r2 = kernel.rho(s)
    pos = r2 > 0
    if not bool(pos.any()):
        return None
    along = torch.where(pos, r1 + 2.0 * r2 * s, r1)  # curvature along r
    ss = torch.where(s > 0, s, torch.ones_like(s))
    eye = torch.eye(lin.r.shape[-1], dtype=s.dtype, device=s.device)
    rr = lin.r[..., :, None] * lin.r[..., None, :] / ss[..., None, None]
    return r1[..., None, None] * eye + (along - r1)[..., None, None] * rr


def normal_equations(problem: BAProblem, state: BAState, lins, rho1s) -> NormalEquations:
    """Assemble U, W, V, gc, gs from linearisation(s) (see :class:`NormalEquations`).

    ``lins``/``rho1s``: one :class:`Linearization` and its rho' (B, N), or lists of them (the
    reprojection term first, then extra cost terms). The gradient is exact (``J^T rho' r``);
    the Hessian is Gauss-Newton with the kernels' curvature (:func:`_robust_weights`).
    """
    if isinstance(lins, Linearization):
        lins, rho1s = [lins], [rho1s]
    ne = None
    for lin, rho1 in zip(lins, rho1s):
        one = _normal_equations_one(problem, lin, rho1)
        if ne is None:
            ne = one
            continue
        if (one.V is None) != (ne.V is None) and one.V is not None:
            raise SolverError("an extra cost term has structure Jacobians the problem lacks")
        ne = NormalEquations(
            ne.U + one.U,
            ne.W if one.W is None else ne.W + one.W,
            ne.V if one.V is None else ne.V + one.V,
            ne.gc + one.gc,
            ne.gs if one.gs is None else ne.gs + one.gs,
        )
    if ne.V is not None and state.depth_correction is not None:
        lp = problem.depth_prior_weight
        S = ne.V.shape[-1]
        V = ne.V + lp * torch.eye(S, dtype=ne.V.dtype, device=ne.V.device)
        gs = ne.gs + lp * state.depth_correction[:, None]
        ne = NormalEquations(ne.U, ne.W, V, ne.gc, gs)
    return ne


def _normal_equations_one(problem: BAProblem, lin: Linearization, rho1: torch.Tensor):
    F = problem.num_frames
    C = lin.Ja.shape[-1]
    r = lin.r
    Wt = _robust_weights(problem, lin, rho1)
    if Wt is None:
        om = rho1[..., None, None]
        weigh = lambda J: J * om
    else:
        weigh = lambda J: Wt @ J
    rW = rho1[..., None] * r
    JaW = weigh(lin.Ja)
    a = lin.frame_a
    Bn = lin.Ja.shape[0]
    Haa = JaW.reshape(Bn, -1, C).transpose(1, 2) @ lin.Ja.reshape(Bn, -1, C)
    ga = _row_grad(lin.Ja, rW)
    U4 = r.new_zeros(F * F, C, C)
    U4.index_add_(0, a * (F + 1), Haa)
    gc = _scatter_rows(ga, a, F)
    if lin.Jb is not None:
        b = lin.frame_b
        JbW = weigh(lin.Jb)
        Jb2 = lin.Jb.reshape(Bn, -1, C)
        Hbb = JbW.reshape(Bn, -1, C).transpose(1, 2) @ Jb2
        Hab = JaW.reshape(Bn, -1, C).transpose(1, 2) @ Jb2
        U4.index_add_(0, b * (F + 1), Hbb)
        U4.index_add_(0, a * F + b, Hab)
        U4.index_add_(0, b * F + a, Hab.transpose(-1, -2))
        gc = gc + _scatter_rows(_row_grad(lin.Jb, rW), b, F)
    U = U4.view(F, F, C, C).permute(0, 2, 1, 3).reshape(F * C, F * C)
    if lin.Js is None:
        return NormalEquations(U, None, None, gc, None)
    Js = lin.Js
    JsW = weigh(Js)
    V = _structure_hessian(JsW, Js)
    gs = _structure_grad(Js, rW)
    Wa = lin.Ja.transpose(-1, -2) @ JsW
    if lin.Jb is None and lin.kernel is None and a.shape[0] == F:
        W = Wa  # classical reprojection: row f is frame f
    else:
        W = _scatter_rows(Wa, a, F)
        if lin.Jb is not None:
            W = W + _scatter_rows(lin.Jb.transpose(-1, -2) @ JsW, lin.frame_b, F)
    return NormalEquations(U, W, V, gc, gs)


def _small_inverse(V: torch.Tensor) -> torch.Tensor:
    """Batched inverse of (N, S, S) symmetric blocks, closed form for S = 1 and 3."""
    S = V.shape[-1]
    if S == 1:
        return 1.0 / V
    if S != 3:
        return torch.linalg.inv(V)
    a, b, c = V[:, 0, 0], V[:, 0, 1], V[:, 0, 2]
    d, e, f = V[:, 1, 1], V[:, 1, 2], V[:, 2, 2]
    A = d * f - e * e
    B = c * e - b * f
    Cc = b * e - c * d
    D = a * f - c * c
    E = b * c - a * e
    G = a * d - b * b
    det = a * A + b * B + c * Cc
    adj = torch.stack(
        [torch.stack([A, B, Cc], -1), torch.stack([B, D, E], -1), torch.stack([Cc, E, G], -1)], -2
    )
    return adj / det[:, None, None]


#: structure parameters seen by frames at most this far apart take the banded path of
#: :func:`schur_products`, on sequences of at least ``SCHUR_BAND_MIN_FRAMES`` frames
SCHUR_BAND = 16
#: below this the banded path's gathers and scatter cost more than the dense product saves:
#: on the accurate path's track BA at 61 frames (2,963 points, a quarter of them banded) it
#: took 120-160 ms an iteration against 85-100 ms for the one dense product
SCHUR_BAND_MIN_FRAMES = 4 * SCHUR_BAND


def schur_products(Y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``sum_n Y_n W_n^T``, the structure's part of the reduced camera system, (F*C, F*C) for
    Y, W (F, N, C, S): block (f, g) sums ``Y[f, n] @ W[g, n]^T`` over the structure
    parameters n that frames f and g both see (W is zero where a frame does not see n).

    As one dense product it costs (F C)^2 N S, although a point track is seen by a few
    neighbouring frames only (F = 181 with 8,476 points: 60 GFlop an iteration). Parameters
    seen only within :data:`SCHUR_BAND` consecutive frames are gathered into their own
    frames' blocks and multiplied there (Nb B^2 C^2 S for a band of B frames), where the
    sequence is longer than two bands; the rest (the landmarks, seen across the sequence)
    take the dense product over their columns. The same
    sum, in another order. A frame sees a parameter where its W block is non-zero (a
    zero-weight observation is no observation: its block is zero whatever the inputs, so no
    gradient passes it either way).

    On the accurate path's track BA at 181 frames (200 landmarks + 8,276 tracks) this took
    the solve from 23.7 to 18.4 s; below :data:`SCHUR_BAND_MIN_FRAMES` frames the one dense
    product is faster."""
    F, _, C, S = W.shape
    seen = W.detach().abs().flatten(2).amax(-1) > 0  # (F, N)
    frame = torch.arange(F, device=W.device)[:, None]
    first = torch.where(seen, frame, F).amin(0)
    span = torch.where(seen, frame, -1).amax(0) - first + 1  # <= 0: never seen
    band = (span > 0) & (span <= SCHUR_BAND) & (F >= SCHUR_BAND_MIN_FRAMES)
    wide = (span > 0) & ~band
    out = torch.zeros(F * C, F * C, dtype=W.dtype, device=W.device)
    if wide.any():
        # without banded columns all of them go in as they are (an unseen one adds zeros):
        # a boolean index would copy Y and W once more
        Yw, Ww = (Y[:, wide], W[:, wide]) if band.any() else (Y, W)
        Yw = Yw.permute(0, 2, 1, 3).reshape(F * C, -1)
        Ww = Ww.permute(0, 2, 1, 3).reshape(F * C, -1)
        out = out + Yw @ Ww.T
    if band.any():
        cols = band.nonzero()[:, 0]
        B = int(span[cols].max())
        rows = first[cols, None] + torch.arange(B, device=W.device)  # (Nb, B) frames
        inside = (rows < F)[..., None, None].to(W.dtype)
        rows = rows.clamp(max=F - 1)
        Yb = (Y[rows, cols[:, None]] * inside).reshape(len(cols), B * C, S)
        Wb = (W[rows, cols[:, None]] * inside).reshape(len(cols), B * C, S)
        blocks = torch.bmm(Yb, Wb.transpose(1, 2)).reshape(len(cols), B, C, B, C)
        where = (rows[:, :, None] * F + rows[:, None, :]).reshape(-1)  # block (f, g) -> f F + g
        acc = torch.zeros(F * F, C * C, dtype=W.dtype, device=W.device).index_add(
            0, where, blocks.permute(0, 1, 3, 2, 4).reshape(-1, C * C))
        out = out + acc.reshape(F, F, C, C).permute(0, 2, 1, 3).reshape(F * C, F * C)
    return out


class SchurFactor:
    """Factorisation of the damped system ``H + lam * D`` with the structure eliminated.

    ``D = diag(H)`` clamped below at ``min_diagonal * max(diag(H))`` (Ceres' ``min_lm_diagonal``,
    here relative to the largest diagonal entry because the system mixes px^2/mm^2, px^2/rad^2
    and px^2 per log-depth unit): a direction with no curvature at the current state (the
    per-frame depth scales when all cameras share one centre, e.g. PoseNet's near-identity
    start) is then damped instead of making the system singular. With ``lam = 0`` (the
    implicit backward's Hessian) there is no damping at all, and at convergence the damped
    step vanishes with the gradient, so the floor changes neither the optimum nor gradients.

    ``ok`` is False when the reduced camera system is not positive definite.
    """

    def __init__(self, ne: NormalEquations, lam: float, free: torch.Tensor, C: int,
                 min_diagonal: float = 0.0):
        self.ne = ne
        self.C = C
        self.lam = lam
        U = ne.U
        n = U.shape[0]
        F = n // C
        dU = torch.diagonal(U)
        dV = None if ne.V is None else torch.diagonal(ne.V, dim1=-2, dim2=-1)
        top = dU.max() if dV is None else torch.maximum(dU.max(), dV.max())
        floor = (min_diagonal * top).clamp(1e-12, 1e32)
        dU = torch.maximum(dU, floor).clamp(max=1e32)
        Ud = U + torch.diag_embed(lam * dU)
        self.dU = dU
        self.free = free.reshape(-1).nonzero()[:, 0]
        if ne.V is not None:
            dV = torch.maximum(dV, floor).clamp(max=1e32)
            self.dV = dV
            Vd = ne.V + torch.diag_embed(lam * dV)
            self.Vinv = _small_inverse(Vd)
            if ne.W.shape[-1] == 1:  # depth corrections: 1x1 blocks, a broadcast product
                self.Y = ne.W * self.Vinv[None]
            else:
                self.Y = ne.W @ self.Vinv[None]
            _, N, _, S = ne.W.shape
            self.Ym = self.Y.permute(0, 2, 1, 3).reshape(F * C, N * S)
            Sred = Ud - schur_products(self.Y, ne.W)
        else:
            self.dV = None
            Sred = Ud
        Sf = Sred[self.free][:, self.free]
        Sf = 0.5 * (Sf + Sf.T)
        self.L, info = torch.linalg.cholesky_ex(Sf)
        piv = torch.diagonal(self.L.detach()) ** 2
        # an exactly unconstrained direction shows up as a pivot at rounding level
        self.ok = (
            bool(info == 0)
            and bool(torch.isfinite(self.L).all())
            and float(piv.min()) > 1e-15 * float(piv.max())
        )

    def solve(self, bc: torch.Tensor, bs: torch.Tensor | None):
        """Solve the damped system for right-hand sides bc (F, C), bs (N, S) -> (xc, xs)."""
        F = bc.shape[0]
        rhs = bc.reshape(-1)
        if self.ne.V is not None:
            rhs = rhs - self.Ym @ bs.reshape(-1)
        xf = torch.cholesky_solve(rhs[self.free, None], self.L)[:, 0]
        xc = torch.zeros_like(rhs).index_put((self.free,), xf).view(F, self.C)
        if self.ne.V is None:
            return xc, None
        t = bs - torch.einsum("fncs,fc->ns", self.ne.W, xc)
        xs = torch.einsum("nst,nt->ns", self.Vinv, t)
        return xc, xs

    def damping_dot(self, lam: float, xc: torch.Tensor, xs: torch.Tensor | None) -> torch.Tensor:
        """x^T (lam * diag(H)) x, for the predicted decrease."""
        out = lam * (self.dU * xc.reshape(-1) ** 2).sum()
        if xs is not None:
            out = out + lam * (self.dV * xs**2).sum()
        return out


def retract(state: BAState, dc: torch.Tensor, ds: torch.Tensor | None) -> BAState:
    """Apply a step: poses <- exp(dc[:, :6]) poses, log scales += dc[:, 6], structure += ds."""
    poses = se3_exp(dc[:, :6]) @ state.poses
    points, s, d = state.points, state.log_scale, state.depth_correction
    if s is not None:
        s = s + dc[:, 6]
    if ds is not None:
        if points is not None:
            points = points + ds
        else:
            d = d + ds[:, 0]
    return BAState(poses, points, s, d)


def _jvp(lin: Linearization, vc: torch.Tensor, vs: torch.Tensor | None) -> torch.Tensor:
    """J v in the row layout (B, N, 2) for a tangent (vc (F, C), vs (N, S))."""
    out = torch.einsum("bnic,bc->bni", lin.Ja, vc[lin.frame_a])
    if lin.Jb is not None:
        out = out + torch.einsum("bnic,bc->bni", lin.Jb, vc[lin.frame_b])
    if lin.Js is not None and vs is not None:
        out = out + torch.einsum("bnis,ns->bni", lin.Js, vs)
    return out


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
