"""Pose uncertainty of a bundle-adjustment solution: the Cramér-Rao bound.

With Gaussian pixel noise of std ``sigma_px`` on every observation, the covariance of the
maximum-likelihood poses is ``sigma^2 (J^T W J)^-1`` restricted to the poses, i.e. the inverse
of the Schur complement of the structure block (the reduced camera system the solver already
factorises), in the solver's gauge: the fixed frame held and, for the classical
parameterisation, the scale fixed by one translation coordinate (:func:`gauge_free_mask`).
No unbiased estimator does better, so it is the right yardstick for pose accuracy on a given
geometry, and it tells a user how far to trust each camera.
"""

from __future__ import annotations

import torch

from facesfm.solvers.problem import BAProblem, BAState, SolverError, gauge_free_mask
from facesfm.solvers.residuals import linearize_all
from facesfm.solvers.schur import SchurFactor, normal_equations

__all__ = ["pose_covariance", "rotation_std_deg"]


@torch.no_grad()
def pose_covariance(problem: BAProblem, state: BAState, sigma_px: float = 1.0) -> torch.Tensor:
    """(F, C, C) marginal covariance of each frame's camera unknowns at ``state``: the
    left-perturbation twist (v in mm, w in rad; ``T <- exp([v, w]) T``) and, for the depth
    parameterisation, the log depth scale. Gauge-held entries are 0. Uses the Gauss-Newton
    curvature of every cost term with the observation weights and without robust kernels
    (the bound for Gaussian noise); ``sigma_px`` scales it."""
    pairs = problem.validate()
    lins = linearize_all(problem, state, pairs)
    rho1 = [torch.ones(lin.r.shape[:-1], dtype=lin.r.dtype, device=lin.r.device)
            for lin in lins]
    ne = normal_equations(problem, state, lins, rho1)
    free = gauge_free_mask(problem, state)
    F, C = problem.num_frames, problem.camera_dim
    fac = SchurFactor(ne, 0.0, free, C)
    if not fac.ok:
        raise SolverError("pose covariance: the reduced camera system is singular (an "
                          "unconstrained pose or a missing gauge)")
    cov_free = torch.cholesky_inverse(fac.L) * sigma_px**2
    n = F * C
    cov = torch.zeros(n, n, dtype=cov_free.dtype, device=cov_free.device)
    idx = fac.free
    cov[idx[:, None], idx[None, :]] = cov_free
    blocks = cov.view(F, C, F, C)
    f = torch.arange(F, device=cov.device)
    return blocks[f, :, f, :]


def rotation_std_deg(cov: torch.Tensor) -> torch.Tensor:
    """(F,) RMS rotation error in degrees that ``pose_covariance`` predicts per frame
    (sqrt of the trace of the rotation block)."""
    w = torch.diagonal(cov[:, 3:6, 3:6], dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(w.clamp_min(0).sqrt())
