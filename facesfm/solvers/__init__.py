"""facesfm.solvers: the differentiable bundle-adjustment layer.

One interface for every backend::

    result = solve(problem, init, backend=LMSolver())   # -> BAResult

Backends are objects: :class:`LMSolver` (ours: batched Schur LM in torch, differentiable
through :class:`BackwardMode`), :class:`ScipyReference` (float64 reference),
and the optional peers in :mod:`facesfm.solvers.colmap_baseline`,
:mod:`facesfm.solvers.theseus_backend` and :mod:`facesfm.solvers.pypose_backend` (imported on
use, since they need optional packages).
"""

from facesfm.solvers.covariance import pose_covariance, rotation_std_deg
from facesfm.solvers.lm import BackwardMode, HessianProducts, LMSolver
from facesfm.solvers.problem import (
    AllPairs,
    BAProblem,
    BAResult,
    BAState,
    CauchyKernel,
    CostTerm,
    HuberKernel,
    Kernel,
    LogSpaced,
    PairSelection,
    Parameterization,
    SolverError,
    TopCovisible,
    TrivialKernel,
    Window,
    gauge_free_mask,
)
from facesfm.solvers.reference import ScipyReference
from facesfm.solvers.residuals import linearize

__all__ = [
    "AllPairs",
    "BAProblem",
    "BAResult",
    "BAState",
    "BackwardMode",
    "CauchyKernel",
    "CostTerm",
    "HessianProducts",
    "HuberKernel",
    "Kernel",
    "LMSolver",
    "LogSpaced",
    "PairSelection",
    "Parameterization",
    "ScipyReference",
    "SolverError",
    "TopCovisible",
    "TrivialKernel",
    "Window",
    "gauge_free_mask",
    "linearize",
    "pose_covariance",
    "rotation_std_deg",
    "solve",
]


def solve(problem: BAProblem, init: BAState, backend=None) -> BAResult:
    """Bundle-adjust ``problem`` from ``init`` with ``backend`` (default: ``LMSolver()``)."""
    if backend is None:
        backend = LMSolver()
    return backend.solve(problem, init)
