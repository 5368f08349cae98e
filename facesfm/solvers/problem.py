"""The bundle-adjustment problem: observations, parameterisation, robust kernels, pair selection.

Observations use a dense (frame, landmark) layout: a landmark detector outputs all N landmarks in
every frame, with a weight (visibility x confidence) that is zero where a landmark is not seen.
Dense (F, N) tensors keep every backend batched (no per-observation Python objects) and make the
Schur complement a couple of matrix products.

Two parameterisations share the observations (issue 3):

* ``Parameterization.CLASSICAL``: unknowns are the poses ``cam_T_world`` (F, 4, 4) and one 3D
  point per landmark (N, 3), world frame, millimetres. Residual of landmark j in frame f:
  ``sqrt(w_fj) * (pi(K_f (R_f X_j + t_f)) - uv_fj)``.
* ``Parameterization.DEPTH`` (equation 2 of the paper): the network's depth is the structure.
  Landmark i seen in a *target* frame m is lifted with its depth
  ``z = exp(s_m + d_i) * depth_mi`` along the ray of ``uv_mi`` and reprojected into a *source*
  frame n through ``cam_n_T_world @ world_T_cam_m``. Unknowns: poses, a per-frame log depth scale
  ``s`` (F,) and, optionally, a per-landmark log depth correction ``d`` (N,) held near zero by a
  prior. The (target, source) pairs come from a :class:`PairSelection`.

Frame ``fixed_frame`` (0 by default) fixes the gauge: its pose and, in the depth
parameterisation, its depth scale are held constant.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from facesfm.errors import FacesfmError, InputError

__all__ = [
    "AllPairs",
    "BAProblem",
    "BAResult",
    "BAState",
    "CauchyKernel",
    "CostTerm",
    "HuberKernel",
    "Kernel",
    "LogSpaced",
    "PairSelection",
    "Parameterization",
    "SolverError",
    "TopCovisible",
    "TrivialKernel",
    "Window",
    "complete_state",
    "gauge_free_mask",
]


class SolverError(FacesfmError):
    """The bundle adjustment cannot be solved: degenerate input or a numerical breakdown."""


class Parameterization(enum.Enum):
    CLASSICAL = "classical"
    DEPTH = "depth"


# ----------------------------------------------------------------------------- robust kernels


class Kernel:
    """A robust kernel rho applied to the squared (weighted) norm ``s = w |r|^2`` of each
    observation's 2-vector residual. The cost is ``0.5 * sum(rho(s))``.

    ``rho(s)`` returns ``(rho, rho', rho'')`` with derivatives with respect to s.
    """

    def rho(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class TrivialKernel(Kernel):
    """Plain least squares, rho(s) = s."""

    def rho(self, s):
        one = torch.ones_like(s)
        return s, one, torch.zeros_like(s)


@dataclass(frozen=True)
class HuberKernel(Kernel):
    """Huber in pixels: quadratic below ``delta`` px, linear above (Ceres' HuberLoss(delta))."""

    delta: float = 1.0

    def rho(self, s):
        d2 = self.delta**2
        inside = s <= d2
        ss = torch.where(inside, torch.ones_like(s), s)  # keeps sqrt finite at 0
        root = torch.sqrt(ss)
        r = torch.where(inside, s, 2.0 * self.delta * root - d2)
        r1 = torch.where(inside, torch.ones_like(s), self.delta / root)
        r2 = torch.where(inside, torch.zeros_like(s), -0.5 * self.delta / (ss * root))
        return r, r1, r2


@dataclass(frozen=True)
class CauchyKernel(Kernel):
    """Cauchy with scale ``c`` px: rho(s) = c^2 log(1 + s / c^2) (Ceres' CauchyLoss(c))."""

    c: float = 1.0

    def rho(self, s):
        c2 = self.c**2
        q = 1.0 + s / c2
        return c2 * torch.log(q), 1.0 / q, -1.0 / (c2 * q * q)


# ----------------------------------------------------------------------------- extra cost terms


class CostTerm:
    """An extra cost term added to the reprojection cost (the plug-in point for the spectral and
    depth-consistency terms of the paper, or priors).

    A term returns a :class:`facesfm.solvers.residuals.Linearization` in the same dense row
    layout as the reprojection term: residual d-vectors ``r`` (B, N, d) (already scaled by the
    square root of the term's weight), the frame(s) each row touches (``frame_a``, optional
    ``frame_b``) with Jacobians (B, N, d, C) w.r.t. their camera blocks (left-perturbation
    twist, then the log depth scale in the depth parameterisation), and optionally
    ``Js`` (B, N, d, S) w.r.t. the landmark structure. Its cost is ``0.5 * sum kernel(|r|^2)``.
    Every backend that supports extra terms (our LM) folds them into the same Schur system, the
    implicit backward included. The Jacobians must be exact (test them against finite
    differences as tests/solvers/test_residuals.py does). examples/ba_terms.py holds three
    such terms (a point prior, a dense photometric and a depth-consistency term) with their
    tests in tests/examples.
    """

    kernel: Kernel
    #: True when the term makes the global scale observable (e.g. a prior on metric points):
    #: the classical scale is then no longer held by the gauge (see :func:`gauge_free_mask`).
    fixes_scale: bool = False

    def linearize(self, problem: BAProblem, state: BAState, jacobians: bool = True):
        raise NotImplementedError


# ----------------------------------------------------------------------------- pair selection


class PairSelection:
    """Chooses ordered (target, source) frame pairs for the depth parameterisation."""

    def pairs(self, covis: np.ndarray) -> np.ndarray:
        """covis (F, F) co-visible landmark counts -> (P, 2) int64 (target, source) pairs."""
        raise NotImplementedError


def _nonzero_pairs(mask: np.ndarray, covis: np.ndarray) -> np.ndarray:
    mask = mask & (covis > 0)
    np.fill_diagonal(mask, False)
    m, n = np.nonzero(mask)
    return np.stack([m, n], 1).astype(np.int64)


@dataclass(frozen=True)
class AllPairs(PairSelection):
    """Every ordered pair of distinct co-visible frames (F(F-1) pairs at most)."""

    def pairs(self, covis):
        return _nonzero_pairs(np.ones(covis.shape, bool), covis)


@dataclass(frozen=True)
class Window(PairSelection):
    """Pairs of frames at most ``k`` apart in the sequence, both directions."""

    k: int = 2

    def pairs(self, covis):
        if self.k < 1:
            raise InputError(f"Window pair selection: k must be >= 1, got {self.k}")
        i = np.arange(covis.shape[0])
        return _nonzero_pairs(np.abs(i[:, None] - i[None, :]) <= self.k, covis)


@dataclass(frozen=True)
class LogSpaced(PairSelection):
    """Pairs of frames 1, 2, 4, 8, ... apart in the sequence, both directions: about
    2 F log2(F) pairs, with baselines up to the whole sequence (all pairs have F(F-1); the
    nearest neighbours alone have short baselines only)."""

    def pairs(self, covis):
        i = np.arange(covis.shape[0])
        d = np.abs(i[:, None] - i[None, :])
        return _nonzero_pairs((d > 0) & ((d & (d - 1)) == 0), covis)


@dataclass(frozen=True)
class TopCovisible(PairSelection):
    """For each target frame, the ``k`` source frames sharing the most landmarks."""

    k: int = 4

    def pairs(self, covis):
        if self.k < 1:
            raise InputError(f"TopCovisible pair selection: k must be >= 1, got {self.k}")
        c = covis.astype(np.float64).copy()
        np.fill_diagonal(c, -1.0)
        F = c.shape[0]
        k = min(self.k, F - 1)
        # stable sort on (-count, index) so ties pick the nearer-indexed frames deterministically
        order = np.argsort(-c, axis=1, kind="stable")[:, :k]
        mask = np.zeros_like(c, dtype=bool)
        mask[np.arange(F)[:, None], order] = True
        return _nonzero_pairs(mask, covis)


# ----------------------------------------------------------------------------- the problem


@dataclass(frozen=True)
class BAProblem:
    """Observations and options of one bundle adjustment.

    Attributes:
        K: (F, 3, 3) intrinsics per frame.
        uv: (F, N, 2) observed landmark pixels (OpenCV, pixel centres at integers). Entries with
            zero weight are ignored (they may be NaN).
        weight: (F, N) non-negative observation weights (visibility x confidence); 0 = unseen.
        depth: (F, N) camera-frame depth z (mm) of each observed landmark from the depth network;
            required by ``Parameterization.DEPTH``, ignored by ``CLASSICAL``.
        parameterization: which unknowns (see the module docstring).
        kernel: robust kernel on each observation's squared weighted residual norm.
        pairs: (target, source) pair selection for ``DEPTH``.
        depth_corrections: ``DEPTH`` only: also estimate a per-landmark log depth correction.
        depth_prior_weight: weight of the prior ``0.5 * w * d_i^2`` on those corrections
            (px^2 per unit log depth squared).
        fixed_frame: the frame whose pose (and depth scale) fixes the gauge.
        extra_terms: :class:`CostTerm` objects added to the cost (our LM backend only).
    """

    K: torch.Tensor
    uv: torch.Tensor
    weight: torch.Tensor
    depth: torch.Tensor | None = None
    parameterization: Parameterization = Parameterization.CLASSICAL
    kernel: Kernel = field(default_factory=TrivialKernel)
    pairs: PairSelection = field(default_factory=lambda: Window(2))
    depth_corrections: bool = True
    depth_prior_weight: float = 1e3
    fixed_frame: int = 0
    extra_terms: tuple = ()

    @property
    def num_frames(self) -> int:
        return int(self.uv.shape[0])

    @property
    def num_landmarks(self) -> int:
        return int(self.uv.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.uv.dtype

    @property
    def device(self) -> torch.device:
        return self.uv.device

    @property
    def structure_dim(self) -> int:
        """Unknowns per landmark: 3 (classical), 1 (depth with corrections) or 0."""
        if self.parameterization is Parameterization.CLASSICAL:
            return 3
        return 1 if self.depth_corrections else 0

    @property
    def camera_dim(self) -> int:
        """Unknowns per frame: 6 (pose) or 7 (pose + log depth scale)."""
        return 6 if self.parameterization is Parameterization.CLASSICAL else 7

    def replace(self, **changes) -> BAProblem:
        return dataclasses.replace(self, **changes)

    def observed(self) -> torch.Tensor:
        """(F, N) bool: observations that take part (weight > 0)."""
        return self.weight > 0

    def frame_pairs(self) -> torch.Tensor:
        """(P, 2) int64 (target, source) pairs for the depth parameterisation, on the device."""
        obs = self.observed().detach().cpu().numpy().astype(np.int64)
        covis = obs @ obs.T
        return torch.as_tensor(self.pairs.pairs(covis), device=self.device)

    def validate(self) -> torch.Tensor | None:
        """Raise :class:`InputError` / :class:`SolverError` naming what is wrong.

        Returns the (P, 2) frame pairs of the depth parameterisation (checked here, so
        solvers need not select them again), or None for the classical one."""
        F, N = self.num_frames, self.num_landmarks
        if self.uv.ndim != 3 or self.uv.shape[-1] != 2:
            raise InputError(f"BAProblem.uv: expected (F, N, 2), got {tuple(self.uv.shape)}")
        if tuple(self.weight.shape) != (F, N):
            raise InputError(f"BAProblem.weight: expected ({F}, {N}), got {tuple(self.weight.shape)}")
        if tuple(self.K.shape) != (F, 3, 3):
            raise InputError(f"BAProblem.K: expected ({F}, 3, 3), got {tuple(self.K.shape)}")
        if not self.uv.is_floating_point():
            raise InputError("BAProblem.uv: expected a floating-point tensor")
        if F < 2:
            raise SolverError(f"bundle adjustment needs at least 2 frames, got {F}")
        if not 0 <= self.fixed_frame < F:
            raise InputError(f"BAProblem.fixed_frame={self.fixed_frame} is not a frame index (F={F})")
        w = self.weight.detach()
        if not torch.isfinite(w).all() or (w < 0).any():
            raise InputError("BAProblem.weight: weights must be finite and >= 0")
        seen = w > 0
        if not seen.any():
            raise SolverError("bundle adjustment: every observation weight is zero")
        bad = seen & ~torch.isfinite(self.uv.detach()).all(-1)
        if bad.any():
            f, j = (int(x) for x in bad.nonzero()[0])
            raise InputError(
                f"BAProblem.uv: {int(bad.sum())} observation(s) with positive weight are not "
                f"finite (first: frame {f}, landmark {j})"
            )
        if not torch.isfinite(self.K.detach()).all():
            raise InputError("BAProblem.K: intrinsics are not finite")
        if self.parameterization is Parameterization.DEPTH:
            if self.depth is None:
                raise InputError("BAProblem.depth is required by Parameterization.DEPTH")
            if tuple(self.depth.shape) != (F, N):
                raise InputError(
                    f"BAProblem.depth: expected ({F}, {N}), got {tuple(self.depth.shape)}"
                )
            d = self.depth.detach()
            badd = seen & ~(torch.isfinite(d) & (d > 0))
            if badd.any():
                f, j = (int(x) for x in badd.nonzero()[0])
                raise InputError(
                    f"BAProblem.depth: {int(badd.sum())} observed landmark(s) without a finite "
                    f"positive depth (first: frame {f}, landmark {j})"
                )
        counts = seen.sum(1)
        if self.parameterization is Parameterization.CLASSICAL:
            per_point = seen.sum(0)
            lonely = (per_point < 2).nonzero()[:, 0]
            if len(lonely):
                raise SolverError(
                    f"bundle adjustment: {len(lonely)} landmark(s) are seen in fewer than 2 frames "
                    f"(first: landmark {int(lonely[0])}); drop them (BAProblem.drop_unconstrained) "
                    "or give them weight"
                )
            weak = [f for f in range(F) if f != self.fixed_frame and int(counts[f]) < 3]
            if weak:
                raise SolverError(
                    f"bundle adjustment: frame {weak[0]} sees {int(counts[weak[0]])} landmark(s); "
                    "a free pose needs at least 3"
                )
        else:
            pair_tensor = self.frame_pairs()
            pairs = pair_tensor.cpu().numpy()
            if len(pairs) == 0:
                raise SolverError(
                    "bundle adjustment: no pair of frames shares a landmark (no co-visible "
                    f"landmarks under {self.pairs})"
                )
            touched = np.zeros(F, bool)
            touched[pairs[:, 0]] = True
            touched[pairs[:, 1]] = True
            missing = [f for f in range(F) if not touched[f]]
            if missing:
                raise SolverError(
                    f"bundle adjustment: frame {missing[0]} is in no co-visible pair under "
                    f"{self.pairs}; its pose is unconstrained"
                )
            return pair_tensor
        return None

    def drop_unconstrained(self) -> BAProblem:
        """A copy where landmarks seen in fewer than 2 frames get weight 0 everywhere."""
        seen = self.weight > 0
        keep = seen.sum(0) >= 2
        return self.replace(weight=self.weight * keep[None, :].to(self.weight.dtype))


# ----------------------------------------------------------------------------- states, results


@dataclass
class BAState:
    """Values of the unknowns.

    Attributes:
        poses: (F, 4, 4) ``cam_T_world``.
        points: (N, 3) world points (classical), or None.
        log_scale: (F,) per-frame log depth scale (depth), or None.
        depth_correction: (N,) per-landmark log depth correction (depth), or None.
    """

    poses: torch.Tensor
    points: torch.Tensor | None = None
    log_scale: torch.Tensor | None = None
    depth_correction: torch.Tensor | None = None

    def detach(self) -> BAState:
        f = lambda x: None if x is None else x.detach()
        return BAState(f(self.poses), f(self.points), f(self.log_scale), f(self.depth_correction))

    def clone(self) -> BAState:
        f = lambda x: None if x is None else x.clone()
        return BAState(f(self.poses), f(self.points), f(self.log_scale), f(self.depth_correction))

    def to(self, dtype=None, device=None) -> BAState:
        f = lambda x: None if x is None else x.to(dtype=dtype, device=device)
        return BAState(
            f(self.poses), f(self.points), f(self.log_scale), f(self.depth_correction)
        )


def gauge_free_mask(problem: BAProblem, state: BAState) -> torch.Tensor:
    """(F, C) bool: which camera unknowns are free.

    The fixed frame's block (pose, and depth scale) is held. The classical parameterisation has
    one more gauge freedom, the global scale: it is fixed by also holding the translation
    coordinate (in the left-perturbation twist) of the frame farthest from the fixed frame
    along which a change of scale moves that frame most (camera-frame baseline direction
    ``R_f (C_0 - C_f)``), unless an extra cost term makes the scale observable.
    """
    F, C = problem.num_frames, problem.camera_dim
    free = torch.ones(F, C, dtype=torch.bool, device=problem.device)
    f0 = problem.fixed_frame
    free[f0] = False
    scale_observed = any(getattr(t, "fixes_scale", False) for t in problem.extra_terms)
    if problem.parameterization is Parameterization.CLASSICAL and not scale_observed:
        T = state.poses.detach()
        R, t = T[:, :3, :3], T[:, :3, 3]
        centres = -torch.einsum("fba,fb->fa", R, t)
        base = torch.einsum("fab,fb->fa", R, centres[f0][None] - centres)
        f = int(base.norm(dim=1).argmax())
        if f != f0 and float(base[f].norm()) > 0:
            free[f, int(base[f].abs().argmax())] = False
    return free


def complete_state(problem: BAProblem, init: BAState) -> BAState:
    """Check ``init`` against ``problem`` and fill defaults (zero scales and corrections)."""
    F, N = problem.num_frames, problem.num_landmarks
    dt, dev = problem.dtype, problem.device
    if tuple(init.poses.shape) != (F, 4, 4):
        raise InputError(f"initial poses: expected ({F}, 4, 4), got {tuple(init.poses.shape)}")
    if not torch.isfinite(init.poses.detach()).all():
        raise InputError("initial poses are not finite")
    poses = init.poses.to(dtype=dt, device=dev)
    if problem.parameterization is Parameterization.CLASSICAL:
        if init.points is None:
            raise InputError("Parameterization.CLASSICAL needs initial points (N, 3)")
        if tuple(init.points.shape) != (N, 3):
            raise InputError(f"initial points: expected ({N}, 3), got {tuple(init.points.shape)}")
        if not torch.isfinite(init.points.detach()).all():
            raise InputError("initial points are not finite")
        return BAState(poses, init.points.to(dtype=dt, device=dev))
    s = init.log_scale
    s = torch.zeros(F, dtype=dt, device=dev) if s is None else s.to(dtype=dt, device=dev)
    if tuple(s.shape) != (F,):
        raise InputError(f"initial log_scale: expected ({F},), got {tuple(s.shape)}")
    d = init.depth_correction
    if problem.depth_corrections:
        d = torch.zeros(N, dtype=dt, device=dev) if d is None else d.to(dtype=dt, device=dev)
        if tuple(d.shape) != (N,):
            raise InputError(f"initial depth_correction: expected ({N},), got {tuple(d.shape)}")
    else:
        d = None
    return BAState(poses, None, s, d)


@dataclass
class BAResult:
    """What every backend returns.

    Attributes:
        state: refined unknowns (differentiable w.r.t. the problem's tensors when the backend
            and its backward mode allow).
        cost: (iterations + 1,) cost ``0.5 * sum(rho)`` (+ priors) before each iteration and at
            the end, float64, detached.
        iterations: iterations run.
        converged: whether a convergence criterion was met (not just the iteration cap).
        timings: seconds, e.g. {"solve": ..., "setup": ...}.
        rms_px: root mean square weighted reprojection error at the end (px), over observed
            residual 2-vectors.
        message: why the solver stopped.
    """

    state: BAState
    cost: torch.Tensor
    iterations: int
    converged: bool
    timings: dict = field(default_factory=dict)
    rms_px: float = math.nan
    message: str = ""

    @property
    def poses(self) -> torch.Tensor:
        return self.state.poses

    @property
    def final_cost(self) -> float:
        return float(self.cost[-1])
