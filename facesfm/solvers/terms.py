"""Extra cost terms (:class:`facesfm.solvers.problem.CostTerm`) beyond the reprojection.

:class:`PointPrior` is the simplest instance of the interface (and a useful one: a soft
anchor of the classical points to a template, e.g. a morphable-model mean face). The spectral
and depth-consistency terms of the paper plug in the same way: return residuals and exact
Jacobians in the dense row layout of :class:`facesfm.solvers.residuals.Linearization`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from facesfm.errors import InputError
from facesfm.solvers.problem import (
    BAProblem,
    BAState,
    CostTerm,
    Kernel,
    Parameterization,
    TrivialKernel,
)
from facesfm.solvers.residuals import Linearization

__all__ = ["PointPrior"]


@dataclass(frozen=True)
class PointPrior(CostTerm):
    """``0.5 * sum_j kernel(w_j |X_j - target_j|^2)`` on the classical points (world, mm).

    Attributes:
        target: (N, 3) prior point positions (mm, world frame).
        weight: (N,) weights (1 / mm^2), 0 to leave a point free.
        kernel: robust kernel on each point's squared weighted distance.
    """

    target: torch.Tensor
    weight: torch.Tensor
    kernel: Kernel = field(default_factory=TrivialKernel)
    fixes_scale: bool = True  # metric targets make the scale observable

    def linearize(self, problem: BAProblem, state: BAState, jacobians: bool = True):
        if problem.parameterization is not Parameterization.CLASSICAL:
            raise InputError("PointPrior applies to Parameterization.CLASSICAL only")
        N = problem.num_landmarks
        if tuple(self.target.shape) != (N, 3) or tuple(self.weight.shape) != (N,):
            raise InputError(
                f"PointPrior: expected target ({N}, 3) and weight ({N},), got "
                f"{tuple(self.target.shape)} and {tuple(self.weight.shape)}"
            )
        X = state.points
        sw = torch.sqrt(self.weight.clamp_min(0)).to(X)
        r = (sw[:, None] * (X - self.target.to(X)))[None]  # (1, N, 3)
        frame = torch.full((1,), problem.fixed_frame, dtype=torch.long, device=X.device)
        lin = Linearization(r=r, valid=(self.weight > 0)[None], frame_a=frame)
        if jacobians:
            C = problem.camera_dim
            lin.Ja = X.new_zeros(1, N, 3, C)  # touches no camera
            eye = torch.eye(3, dtype=X.dtype, device=X.device)
            lin.Js = (sw[:, None, None] * eye)[None]  # (1, N, 3, 3)
        return lin
