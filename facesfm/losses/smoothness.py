"""Edge-aware depth smoothness (monodepth style), on mean-normalised disparity.

``L = mean |dx d*| exp(-mean_c |dx I|) + mean |dy d*| exp(-mean_c |dy I|)`` with
``d* = d / mean(d)`` and ``d = 1 / depth``. Normalising by the mean disparity removes the
incentive to shrink the scene to make the gradients small.
"""

from __future__ import annotations

import torch

__all__ = ["smoothness_loss"]


def smoothness_loss(
    depth: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    eps: float = 1e-7,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Edge-aware smoothness of a depth map guided by its image.

    depth: (B, 1, H, W) positive depth (mm); image: (B, C, H, W) in [0, 1] at the same size.
    mask: optional (B, 1, H, W) bool/{0,1}: only gradients between two masked pixels count,
    and the mean disparity is taken over the mask.
    Returns ``(loss, metrics)`` with metrics ``grad_x``, ``grad_y`` (detached, unweighted mean
    absolute normalised-disparity gradients).
    """
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"smoothness_loss: depth must be (B, 1, H, W), got {tuple(depth.shape)}")
    if image.dim() != 4 or image.shape[0] != depth.shape[0] or image.shape[-2:] != depth.shape[-2:]:
        raise ValueError(
            f"smoothness_loss: image {tuple(image.shape)} does not match depth {tuple(depth.shape)}"
        )
    m = torch.ones_like(depth) if mask is None else mask.to(depth.dtype)
    if m.shape != depth.shape:
        raise ValueError(
            f"smoothness_loss: mask must be {tuple(depth.shape)}, got {tuple(m.shape)}"
        )
    disp = 1.0 / depth.clamp_min(eps)
    mean = (disp * m).sum((2, 3), keepdim=True) / m.sum((2, 3), keepdim=True).clamp_min(1.0)
    # disparities are ~1e-3 / mm: guard the division without biasing it
    d = disp / mean.clamp_min(1e-12)

    gx = (d[..., :, 1:] - d[..., :, :-1]).abs()
    gy = (d[..., 1:, :] - d[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    mx = m[..., :, 1:] * m[..., :, :-1]
    my = m[..., 1:, :] * m[..., :-1, :]
    nx = mx.sum().clamp_min(1.0)
    ny = my.sum().clamp_min(1.0)
    loss = (gx * torch.exp(-ix) * mx).sum() / nx + (gy * torch.exp(-iy) * my).sum() / ny
    metrics = {
        "grad_x": ((gx * mx).sum() / nx).detach(),
        "grad_y": ((gy * my).sum() / ny).detach(),
    }
    return loss, metrics
