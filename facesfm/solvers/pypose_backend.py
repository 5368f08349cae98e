"""PyPose backend (classical parameterisation): LieTensor poses and pp.optim.LM.

PyPose's ``LM.step`` runs under ``no_grad`` and builds a dense Jacobian (memory quadratic in the
residual count; its sparse mode needs an optional backend not on PyPI), so this backend is for
small problems. The differentiable path is implicit: at PyPose's optimum, the gradient is
attached with our implicit-function machinery (:mod:`facesfm.solvers.implicit`, exact Hessian-vector
products), since the optimum does not depend on how it was reached.
Needs ``pypose==0.9.5`` (``pip install -e '.[pypose]'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from facesfm.errors import InputError
from facesfm.solvers.implicit import _attach_implicit, _detached_problem
from facesfm.solvers.lm import BackwardMode, LMSolver
from facesfm.solvers.problem import (
    BAProblem,
    BAResult,
    BAState,
    Parameterization,
    TrivialKernel,
    complete_state,
    gauge_free_mask,
)
from facesfm.solvers.residuals import linearize, rms_px

__all__ = ["PyPoseBackend"]


def _pypose():
    try:
        import pypose as pp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise InputError("the PyPose backend needs pypose: pip install 'pypose==0.9.5'") from e
    return pp


class _Reprojection(nn.Module):
    """Residuals (M, 2) of the observed slots; frame ``f0`` held as a buffer."""

    def __init__(self, pp, problem: BAProblem, init: BAState):
        super().__init__()
        F = problem.num_frames
        self.f0 = problem.fixed_frame
        self.others = [f for f in range(F) if f != self.f0]
        T = init.poses.detach()
        self.register_buffer("root", T[self.f0 : self.f0 + 1].clone())
        self.poses = pp.Parameter(pp.mat2SE3(T[self.others], check=False))
        self.points = nn.Parameter(init.points.detach().clone())
        p = _detached_problem(problem)
        self.register_buffer("K", p.K)
        self.seen = p.weight > 0
        self.register_buffer("uv", p.uv[self.seen])
        self.register_buffer("sw", torch.sqrt(p.weight[self.seen]))
        fi, ji = self.seen.nonzero(as_tuple=True)
        self.register_buffer("fi", fi)
        self.register_buffer("ji", ji)

    def matrices(self):
        M = self.poses.matrix()
        parts = [M[: self.f0], self.root, M[self.f0 :]]
        return torch.cat(parts, 0)

    def forward(self, input=None):
        T = self.matrices()
        R, t = T[self.fi, :3, :3], T[self.fi, :3, 3]
        Xc = (R @ self.points[self.ji][..., None])[..., 0] + t
        K = self.K[self.fi]
        u = K[:, 0, 0] * Xc[:, 0] / Xc[:, 2] + K[:, 0, 2]
        v = K[:, 1, 1] * Xc[:, 1] / Xc[:, 2] + K[:, 1, 2]
        return self.sw[:, None] * (torch.stack([u, v], -1) - self.uv)


@dataclass(frozen=True)
class PyPoseBackend:
    """pp.optim.LM (dense Cholesky, adaptive trust region) with an implicit backward.

    Attributes:
        max_iterations: LM steps.
        ftol: stop when the relative cost decrease of a step is below ftol.
        damping: initial damping of ``pp.optim.strategy.Adaptive``.
        backward: NONE or IMPLICIT (the only differentiable mode offered here).
    """

    max_iterations: int = 50
    ftol: float = 1e-12
    damping: float = 1e-6
    backward: BackwardMode = BackwardMode.IMPLICIT
    name = "pypose-lm"

    def solve(self, problem: BAProblem, init: BAState) -> BAResult:
        pp = _pypose()
        if problem.parameterization is not Parameterization.CLASSICAL:
            raise InputError("PyPoseBackend: only Parameterization.CLASSICAL is implemented")
        if not isinstance(problem.kernel, TrivialKernel):
            raise InputError("PyPoseBackend: only the trivial kernel is implemented")
        if self.backward not in (BackwardMode.NONE, BackwardMode.IMPLICIT):
            raise InputError("PyPoseBackend: backward must be BackwardMode.NONE or IMPLICIT")
        t0 = time.perf_counter()
        problem.validate()
        if problem.extra_terms:
            raise InputError("PyPoseBackend: extra cost terms are supported by LMSolver only")
        init = complete_state(problem, init)
        model = _Reprojection(pp, problem, init)
        strategy = pp.optim.strategy.Adaptive(damping=self.damping)
        opt = pp.optim.LM(model, strategy=strategy)
        t_setup = time.perf_counter() - t0
        costs = []
        with torch.no_grad():
            costs.append(0.5 * float((model() ** 2).sum()))
        converged, it = False, 0
        for it in range(1, self.max_iterations + 1):
            opt.step(input=None)
            with torch.no_grad():
                c = 0.5 * float((model() ** 2).sum())
            costs.append(c)
            if 0 <= costs[-2] - c <= self.ftol * costs[-2]:
                converged = True
                break
        t_solve = time.perf_counter() - t0 - t_setup
        with torch.no_grad():
            state = BAState(model.matrices().detach().clone(), model.points.detach().clone())
        dp = _detached_problem(problem)
        if self.backward is BackwardMode.IMPLICIT and torch.is_grad_enabled():
            state = _attach_implicit(LMSolver(), problem, state, None, gauge_free_mask(problem, state))
        with torch.no_grad():
            lin = linearize(dp, state.detach(), jacobians=False)
            rms = rms_px(lin)
        return BAResult(
            state=state,
            cost=torch.tensor(costs, dtype=torch.float64),
            iterations=it,
            converged=converged,
            timings={"setup": t_setup, "solve": t_solve},
            rms_px=rms,
            message="relative cost change below ftol" if converged else "iteration cap reached",
        )
