"""The normal equations of the bundle adjustment and their Schur-reduced factorisation, in
plain torch (the linear algebra of :class:`facesfm.solvers.lm.LMSolver`'s step and of the
implicit backward's preconditioner, :mod:`facesfm.solvers.implicit`).

* :func:`normal_equations`: ``[[U, W], [W^T, V]] [dc; ds] = -[gc; gs]`` assembled with batched
  einsums: U (F*C, F*C) camera block, W (F, N, C, S), V (N, S, S) block-diagonal structure
  (S = 3 per point, 1 per landmark log depth), with IRLS weights rho'(s) from the kernel;
* :class:`SchurFactor`: the Schur complement on the structure,
  ``(U - W V^-1 W^T) dc = -gc + W V^-1 gs`` (:func:`schur_products`), damped Cholesky on it
  with the fixed frame's block removed (gauge), and back-substitution for ds;
* :func:`retract`: a step applied to a state.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch

from facesfm.geometry.se3 import se3_exp
from facesfm.solvers.problem import BAProblem, BAState, SolverError, TrivialKernel
from facesfm.solvers.residuals import Linearization

__all__ = ["NormalEquations", "SchurFactor", "normal_equations", "retract", "schur_products"]


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
    """sum_{b,i} Js[b, n, i, :] rW[b, n, i]: (B, N, 2, S), (B, N, 2) -> (N, S), one product
    per residual component (a sum over the size-2 axis is ~8x slower on CPU)."""
    out = Js[:, :, 0] * rW[:, :, 0, None]
    for i in range(1, Js.shape[2]):
        out = out + Js[:, :, i] * rW[:, :, i, None]
    return out.sum(0)


def _cross_blocks(J: torch.Tensor, JsW: torch.Tensor) -> torch.Tensor:
    """sum_i J[b, n, i, :]^T JsW[b, n, i, :]: (B, N, R, C), (B, N, R, S) -> (B, N, C, S),
    stored as (B, C, N, S): the layout of the reduced camera system's product
    (:func:`schur_products`), which then reads it without a copy. One broadcast product per
    residual component; as 6x2 @ 2x3 batched products it took 3-5 ms at 61 x 568, and the
    copy into the layout 3 ms more."""
    Jt = J.permute(0, 3, 1, 2).contiguous()  # (B, C, N, R)
    out = Jt[..., 0, None] * JsW[:, None, :, 0, :]
    for i in range(1, J.shape[2]):
        out = out + Jt[..., i, None] * JsW[:, None, :, i, :]
    return out.permute(0, 2, 1, 3)


def _times_blocks(Wl: torch.Tensor, Vinv: torch.Tensor) -> torch.Tensor:
    """Y[m, n, :] = Wl[m, n, :] @ Vinv[n] for Wl (M, N, S), Vinv (N, S, S) -> (M, N, S)
    contiguous, as S in-place multiply-adds (a batched (M, N) x (1 x S) @ (S x S) product
    took 6 ms at 61 x 568, these 2)."""
    out = Wl[..., 0, None] * Vinv[:, 0, :]
    for t in range(1, Wl.shape[-1]):
        out.addcmul_(Wl[..., t, None], Vinv[:, t, :])
    return out


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
    Wa = _cross_blocks(lin.Ja, JsW)
    if lin.Jb is None and lin.kernel is None and a.shape[0] == F:
        W = Wa  # classical reprojection: row f is frame f
    else:  # (scattered in the (F, C, N, S) layout, as _cross_blocks stores them)
        W = _scatter_rows(Wa.permute(0, 2, 1, 3), a, F)
        if lin.Jb is not None:
            W = W + _scatter_rows(_cross_blocks(lin.Jb, JsW).permute(0, 2, 1, 3),
                                  lin.frame_b, F)
        W = W.permute(0, 2, 1, 3)
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


def schur_products(Y: torch.Tensor, W: torch.Tensor, Ym: torch.Tensor | None = None
                   ) -> torch.Tensor:
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
    product is faster, and is taken without looking at which frames see what, assembled
    from its lower triangle (:func:`_symmetric_product`): Y must be W V^-1 with each V^-1
    block symmetric, as the factor's is. ``Ym``: Y already laid out as (F*C, N*S), where the
    caller has it."""
    F, _, C, S = W.shape

    def layout(A):  # (F, n, C, S) -> (F*C, n*S)
        return A.permute(0, 2, 1, 3).reshape(F * C, -1)

    if F < SCHUR_BAND_MIN_FRAMES:
        return _symmetric_product(layout(Y) if Ym is None else Ym, layout(W))
    seen = W.detach().abs().flatten(2).amax(-1) > 0  # (F, N)
    frame = torch.arange(F, device=W.device)[:, None]
    first = torch.where(seen, frame, F).amin(0)
    span = torch.where(seen, frame, -1).amax(0) - first + 1  # <= 0: never seen
    band = (span > 0) & (span <= SCHUR_BAND)
    wide = (span > 0) & ~band
    out = torch.zeros(F * C, F * C, dtype=W.dtype, device=W.device)
    if wide.any():
        # without banded columns all of them go in as they are (an unseen one adds zeros):
        # a boolean index would copy Y and W once more
        if band.any():
            Yw, Ww = layout(Y[:, wide]), layout(W[:, wide])
        else:
            Yw, Ww = (layout(Y) if Ym is None else Ym), layout(W)
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


def _symmetric_product(A: torch.Tensor, B: torch.Tensor, panels: int = 4) -> torch.Tensor:
    """``A @ B.T`` for a product known to be symmetric (W V^-1 W^T), from the block rows of
    its lower triangle only: ``panels`` products of row panels of A with the rows of B up to
    the panel's end, mirrored. (panels + 1) / (2 panels) of the multiplications: at 61
    frames x 568 points one product took 9-10 ms, four panels 7."""
    n = A.shape[0]
    if n < 32 * panels:
        return A @ B.T
    out = A.new_zeros(n, n)
    edges = [round(n * i / panels) for i in range(panels + 1)]
    for lo, hi in pairwise(edges):
        out[lo:hi, :hi] = A[lo:hi] @ B[:hi].T
    return out.tril() + out.tril(-1).T


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
            _, N, _, S = ne.W.shape
            # W and Y laid out as (F*C, N*S) matrices: W as normal_equations stores it
            Wl = ne.W.permute(0, 2, 1, 3).contiguous().view(F * C, N, S)  # (no copy there)
            self.Wm = Wl.view(F * C, N * S)
            if S == 1:  # depth corrections: 1x1 blocks, a broadcast product
                self.Ym = self.Wm * self.Vinv.view(1, N)
            else:
                self.Ym = _times_blocks(Wl, self.Vinv).view(F * C, N * S)
            Y = self.Ym.view(F, C, N, S).permute(0, 2, 1, 3)
            Sred = Ud - schur_products(Y, ne.W, self.Ym)
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
        t = bs - (self.Wm.T @ xc.reshape(-1)).view_as(bs)
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


