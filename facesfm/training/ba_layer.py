"""The bundle-adjustment layer of stage-2 training (:mod:`facesfm.training.sfm`): each
sequence of a batch bundle-adjusted from PoseNet's poses (:func:`refine_poses`, the depth
parameterisation of equation 2 with the predicted depth at the landmarks, or the classical
one), and the factorised start used when the learned poses are too far off to start from
(:func:`factorised_poses`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from facesfm.errors import InputError
from facesfm.solvers import BAProblem, BAState, Parameterization, SolverError
from facesfm.solvers.initial_poses import landmark_poses
from facesfm.solvers.landmark_ba import BAConfig, Landmarks, classical_bundle_adjust

__all__ = ["factorised_poses", "refine_poses"]


def refine_poses(
    K: torch.Tensor,
    uv: torch.Tensor,
    weight: torch.Tensor,
    lm_depth: torch.Tensor,
    init: torch.Tensor,
    ba: BAConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bundle-adjust each sequence of a batch (the BA layer).

    K: (B, 3, 3); uv: (B, F, N, 2); weight: (B, F, N); lm_depth: (B, F, N) predicted depth at
    the landmarks (mm, differentiable); init: (B, F, 4, 4) learned ``cam_T_world`` (frame 0 =
    identity, held fixed as the gauge). Returns refined poses (B, F, 4, 4) in ``init``'s dtype
    and metrics (``ba_rms_px``, ``ba_iterations``, ``ba_failures``: sequences where the solver
    raised and the learned poses were kept).
    """
    if ba.classical:
        return _refine_classical(K, uv, weight, lm_depth, init, ba)
    solver = ba.make_solver()
    dt = torch.float64 if ba.float64 else init.dtype
    kernel = ba.make_kernel()
    out, rms, iters, fails = [], [], [], 0
    B, Fn = uv.shape[:2]
    for b in range(B):
        problem = BAProblem(
            K=K[b].to(dt).expand(Fn, 3, 3),
            uv=uv[b].to(dt),
            weight=weight[b].to(dt),
            depth=lm_depth[b].to(dt).clamp_min(1e-3),
            parameterization=Parameterization.DEPTH,
            kernel=kernel,
            pairs=ba.make_pairs(),
            depth_corrections=ba.depth_corrections,
            depth_prior_weight=ba.depth_prior_weight,
        ).drop_unconstrained()
        try:
            res = solver.solve(problem, BAState(poses=init[b].detach().to(dt)))
        except (SolverError, torch.linalg.LinAlgError) as e:
            warnings.warn(
                f"BA layer: sequence {b} of the batch kept its learned poses: {e}",
                RuntimeWarning,
                stacklevel=2,
            )
            out.append(init[b])
            fails += 1
            continue
        out.append(res.poses.to(init.dtype))
        rms.append(res.rms_px)
        iters.append(res.iterations)
    return torch.stack(out), _ba_metrics(rms, iters, fails)


def _ba_metrics(rms: list[float], iters: list[int], fails: int) -> dict[str, torch.Tensor]:
    """The BA layer's per-batch metrics (means over the sequences it solved)."""
    nan = float("nan")
    return {
        "ba_rms_px": torch.tensor(sum(rms) / len(rms) if rms else nan),
        "ba_iterations": torch.tensor(float(sum(iters) / len(iters)) if iters else nan),
        "ba_failures": torch.tensor(float(fails)),
    }


def _tracks(K: torch.Tensor, uv: torch.Tensor, weight: torch.Tensor, b: int):
    """Sequence ``b`` of a batch as the solve pipeline's float64 numpy (K, Landmarks)."""


    def f64(x):
        return x[b].detach().double().cpu().numpy()

    return f64(K), Landmarks(f64(uv), f64(weight), np.arange(weight.shape[-1]), "train")


def _refine_classical(K, uv, weight, lm_depth, init, ba: BAConfig):
    """Classical BA (poses + landmark points) of each sequence from ``init``; the refined
    translations are scaled by ``k = median(D_fi / z_fi)`` over the observations (network
    depth at the landmark over the point's depth in the refined camera), so the poses live in
    the network depth's scale; ``k`` is the layer's only differentiable path (to the depth)."""

    out, rms, iters, fails = [], [], [], 0
    for b in range(weight.shape[0]):
        Kb, lm = _tracks(K, uv, weight, b)
        start = init[b].detach().double().cpu().numpy()
        why = None
        try:
            res = classical_bundle_adjust(Kb, lm, None, start, ba)
        except (SolverError, InputError, torch.linalg.LinAlgError) as e:
            why = str(e)
        if why is None:
            P = torch.from_numpy(res.poses).to(init)
            X = torch.from_numpy(np.nan_to_num(res.points)).to(init)
            z = (torch.einsum("fab,nb->fna", P[:, :3, :3], X) + P[:, None, :3, 3])[..., 2]
            known = torch.from_numpy(np.isfinite(res.points).all(1)).to(z.device)
            ok = (weight[b] > 0) & known & (z > 0)
            if int(ok.sum()) < 4:
                why = f"only {int(ok.sum())} observed points in front of the cameras"
        if why is not None:
            warnings.warn(f"BA layer: sequence {b} of the batch kept its start poses: {why}",
                          RuntimeWarning, stacklevel=3)
            out.append(init[b])
            fails += 1
            continue
        k = (lm_depth[b][ok].to(z) / z[ok]).median()
        scaled = P.clone()
        scaled[:, :3, 3] = k * P[:, :3, 3]  # into the network depth's scale (differentiable in k)
        out.append(scaled)
        rms.append(res.rms_px)
        iters.append(res.iterations)
    return torch.stack(out), _ba_metrics(rms, iters, fails)


def factorised_poses(K: torch.Tensor, uv: torch.Tensor, weight: torch.Tensor,
                     fallback: torch.Tensor) -> torch.Tensor:
    """(B, F, 4, 4) ``cam_T_world`` with frame 0 = identity from a factorisation of each
    sequence's landmark tracks (:func:`facesfm.solvers.initial_poses.landmark_poses`), in the
    dtype of ``fallback`` (B, F, 4, 4). Sequences the factorisation cannot place entirely keep
    their ``fallback`` poses (detached). Not differentiable: it only chooses the start."""


    out = fallback.detach().clone()
    for b in range(weight.shape[0]):
        try:
            P = landmark_poses(*_tracks(K, uv, weight, b))
        except InputError:
            continue
        if not np.isfinite(P).all():
            continue
        P = P @ np.linalg.inv(P[0])  # world = camera 0
        out[b] = torch.from_numpy(P).to(out)
    return out
