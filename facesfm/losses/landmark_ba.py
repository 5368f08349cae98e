"""Landmark bundle-adjustment loss over a whole sequence, paper equation 2.

For every ordered frame pair (a -> b), a != b, the landmarks detected in frame a are lifted
with frame a's depth (sampled at the landmark), moved by ``b_T_a = b_T_world @ inv(a_T_world)``
into camera b, projected, and compared with the landmarks detected in frame b:

``L = sum_{a,b,i} w_ab,i rho(|| pi(K_b, b_T_a X_a,i) - u_b,i ||) / sum_{a,b,i} w_ab,i``

with ``X_a,i = backproject(K_a, u_a,i, D_a,i)`` and ``w_ab,i = w_a,i * w_b,i`` (a landmark counts
only for pairs where both frames see it; weights may fold in visibility probability and a
per-landmark confidence such as ``exp(-2 log_sigma)``). ``rho`` is the L2 distance of the
paper (``"l2"``, smoothed by ``sqrt(d^2 + eps^2) - eps`` so the gradient stays finite at 0)
or its square (``"squared"``). Projections that fall behind camera b (z <= min_depth) are
dropped. Everything is vectorised over pairs and landmarks.

Shapes accept an optional leading batch of sequences: ``(B, F, ...)`` or just ``(F, ...)``.
"""

from __future__ import annotations

from typing import Literal

import torch

from facesfm.geometry.camera import backproject, invert_pose, project, transform
from facesfm.geometry.warp import sample_image

__all__ = [
    "all_pairs",
    "landmark_ba_loss",
    "landmark_reprojection",
    "sample_depth_at",
]

Distance = Literal["l2", "squared"]


def all_pairs(num_frames: int, device=None) -> torch.Tensor:
    """All ordered pairs (a, b), a != b, of ``num_frames`` frames: (F (F - 1), 2) int64."""
    # b = j + (j >= a) skips a without boolean indexing (no device sync, works on any device)
    a = torch.arange(num_frames, device=device).repeat_interleave(max(num_frames - 1, 0))
    j = torch.arange(max(num_frames - 1, 0), device=device).repeat(num_frames)
    b = j + (j >= a).long()
    return torch.stack([a, b], dim=-1)


def sample_depth_at(depth: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear depth at landmark positions.

    depth: (F, 1, H, W) or (F, H, W); uv: (F, N, 2) pixels. Returns (F, N). Positions outside
    the image read the nearest border value (the landmark weight should exclude them anyway).
    """
    if depth.dim() == 3:
        depth = depth[:, None]
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(
            f"sample_depth_at: depth must be (F, 1, H, W) or (F, H, W), got {tuple(depth.shape)}"
        )
    if uv.dim() != 3 or uv.shape[0] != depth.shape[0] or uv.shape[-1] != 2:
        raise ValueError(
            f"sample_depth_at: uv must be ({depth.shape[0]}, N, 2), got {tuple(uv.shape)}"
        )
    return sample_image(depth, uv, padding_mode="border")[..., 0]


def _as_batched(K, cam_T_world, uv, depth, weights=None):
    """Bring inputs to (B, F, ...) and check their shapes."""
    if uv.dim() not in (3, 4) or uv.shape[-1] != 2:
        raise ValueError(
            f"landmark BA: uv must be (F, N, 2) or (B, F, N, 2), got {tuple(uv.shape)}"
        )
    single = uv.dim() == 3
    if single:
        uv = uv[None]
        cam_T_world = cam_T_world[None]
        depth = depth[None]
        weights = None if weights is None else weights[None]
        if K.dim() == 3:
            K = K[None]
    B, Fn, N, _ = uv.shape
    if cam_T_world.shape != (B, Fn, 4, 4):
        raise ValueError(
            f"landmark BA: cam_T_world must be {(B, Fn, 4, 4)[single:]}, got {tuple(cam_T_world.shape[single:])}"
        )
    if depth.shape != (B, Fn, N):
        raise ValueError(
            f"landmark BA: depth must be {(B, Fn, N)[single:]}, got {tuple(depth.shape[single:])}"
        )
    if weights is not None and weights.shape != (B, Fn, N):
        raise ValueError(
            f"landmark BA: weights must be {(B, Fn, N)[single:]}, got {tuple(weights.shape[single:])}"
        )
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"landmark BA: K must end in (3, 3), got {tuple(K.shape)}")
    K = K.to(uv.dtype)
    if K.dim() == 2:
        K = K.expand(B, Fn, 3, 3)
    elif K.dim() == 3 and K.shape[0] == Fn:
        K = K[None].expand(B, Fn, 3, 3)
    elif K.shape != (B, Fn, 3, 3):
        raise ValueError(
            f"landmark BA: K must be (3, 3), (F, 3, 3) or (B, F, 3, 3) with F={Fn}, B={B}; "
            f"got {tuple(K.shape)}"
        )
    return single, K, cam_T_world.to(uv.dtype), uv, depth, weights


def landmark_reprojection(
    K: torch.Tensor,
    cam_T_world: torch.Tensor,
    uv: torch.Tensor,
    depth: torch.Tensor,
    pairs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project frame a's lifted landmarks into frame b for each pair (a, b).

    K: (3, 3), (F, 3, 3) or (B, F, 3, 3); cam_T_world: ([B,] F, 4, 4); uv: ([B,] F, N, 2) pixels;
    depth: ([B,] F, N) camera-frame z of each landmark in its own frame (mm);
    pairs: (P, 2) int64 (a, b) frame indices, default :func:`all_pairs`.
    Returns ``(uv_ab, z_ab, pairs)``: ``uv_ab`` ([B,] P, N, 2) projections in frame b (pixels),
    ``z_ab`` ([B,] P, N) their depth in camera b (projections use z clamped to >= 1e-6).
    """
    single, K, T, uv, depth, _ = _as_batched(K, cam_T_world, uv, depth)
    uv_ab, z_ab, pairs = _reproject(K, T, uv, depth, pairs)
    if single:
        uv_ab, z_ab = uv_ab[0], z_ab[0]
    return uv_ab, z_ab, pairs


def _reproject(K, T, uv, depth, pairs):
    Fn = uv.shape[1]
    if pairs is None:
        pairs = all_pairs(Fn, device=uv.device)
    else:  # only given pairs are range-checked: the check reads values (a device sync)
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ValueError(f"landmark BA: pairs must be (P, 2), got {tuple(pairs.shape)}")
        if pairs.numel() and (pairs.min() < 0 or pairs.max() >= Fn):
            raise ValueError(f"landmark BA: pair index outside 0..{Fn - 1}")
        pairs = pairs.to(uv.device)
    a, b = pairs[:, 0], pairs[:, 1]
    X_a = backproject(K[:, a], uv[:, a], depth[:, a])  # (B, P, N, 3) in camera a
    b_T_a = T[:, b] @ invert_pose(T[:, a])  # (B, P, 4, 4)
    X_b = transform(b_T_a, X_a)
    z = X_b[..., 2]
    z_safe = z.clamp_min(1e-6)
    uv_ab = project(K[:, b], torch.cat([X_b[..., :2], z_safe[..., None]], dim=-1))
    return uv_ab, z, pairs


def landmark_ba_loss(
    K: torch.Tensor,
    cam_T_world: torch.Tensor,
    uv: torch.Tensor,
    weights: torch.Tensor,
    depth: torch.Tensor,
    *,
    pairs: torch.Tensor | None = None,
    distance: Distance = "l2",
    eps_px: float = 1e-3,
    min_depth: float = 1e-3,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted reprojection error of landmarks over all frame pairs of a sequence (eq. 2).

    K: (3, 3), (F, 3, 3) or (B, F, 3, 3). cam_T_world: ([B,] F, 4, 4) (relative poses work too:
    any common world frame, e.g. frame 0's camera). uv: ([B,] F, N, 2) detected landmarks in
    pixels. weights: ([B,] F, N) >= 0 (0 = not visible). depth: ([B,] F, N) predicted depth at
    each landmark (see :func:`sample_depth_at`). pairs: optional (P, 2) frame pairs.
    Returns ``(loss, metrics)``: loss in px (``"l2"``) or px^2 (``"squared"``), the weighted
    mean over pairs and landmarks; metrics ``rmse_px``, ``mean_px`` (weighted, detached),
    ``weight_sum`` (detached).
    """
    _, K, T, uv, depth, weights = _as_batched(K, cam_T_world, uv, depth, weights)
    uv_ab, z, pairs = _reproject(K, T, uv, depth, pairs)
    a, b = pairs[:, 0], pairs[:, 1]
    weights = weights.to(uv.dtype)  # bool visibility works too
    w = weights[:, a] * weights[:, b] * (z > min_depth).to(uv.dtype)  # (B, P, N)
    sq = ((uv_ab - uv[:, b]) ** 2).sum(-1)
    if distance == "l2":
        rho = torch.sqrt(sq + eps_px**2) - eps_px
    elif distance == "squared":
        rho = sq
    else:
        raise ValueError(f"landmark_ba_loss: distance must be 'l2' or 'squared', got {distance!r}")
    wsum = w.sum()
    denom = wsum.clamp_min(1e-12)
    loss = (w * rho).sum() / denom
    with torch.no_grad():
        metrics = {
            "rmse_px": torch.sqrt((w * sq).sum() / denom),
            "mean_px": (w * torch.sqrt(sq)).sum() / denom,
            "weight_sum": wsum.detach(),
        }
    return loss, metrics
