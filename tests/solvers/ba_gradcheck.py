"""Shared check for differentiable BA backends: the directional derivative of a loss on the
refined rotations along a random perturbation of the observed uv, analytic (through the
backend's backward) against central finite differences of a tightly converged solve."""

import torch

from facesfm.solvers import BackwardMode, LMSolver


def uv_gradient_and_finite_difference(problem, init, backend, seed=5, h=1e-3):
    """(analytic, finite-difference) derivative of sum(A * R_f) along a random duv on the
    observed entries; A is a seeded (F, 3, 3) matrix."""
    g = torch.Generator().manual_seed(seed)
    F = problem.uv.shape[0]
    A = torch.randn(F, 3, 3, generator=g, dtype=torch.float64)
    duv = torch.randn(problem.uv.shape, generator=g, dtype=torch.float64)
    duv = duv * (problem.weight > 0)[..., None]
    tight = LMSolver(backward=BackwardMode.NONE, ftol=1e-16, xtol=1e-13, gtol=1e-13,
                     max_iterations=200)

    def loss(state):
        return (A * state.poses[:, :3, :3]).sum()

    def loss_at(step):
        return float(loss(tight.solve(problem.replace(uv=problem.uv + step * duv), init).state))

    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    uv = problem.uv.clone().requires_grad_()
    loss(backend.solve(problem.replace(uv=uv), init).state).backward()
    return float((uv.grad * duv).sum()), fd
