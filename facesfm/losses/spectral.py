"""Spectral (photometric) consistency loss, paper equation 4.

``L = sum_p M(p) [ alpha * (1 - SSIM(I_a, I_b)(p)) / 2 + (1 - alpha) * |I_a(p) - I_b(p)| ]
/ sum_p M(p)`` with ``alpha = 0.85`` (the paper's lambda_2 = 0.85 on SSIM, lambda_1 = 0.15 on
L1, following monodepth). Per-pixel errors are averaged over colour channels.

The paper compares "the warped target image" with "the source image". With inverse warping
(:func:`facesfm.geometry.warp.inverse_warp`) the natural pair is the source image sampled onto
the target grid against the target image; :func:`view_synthesis_loss` does that. The pure
:func:`spectral_loss` does not care which is which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facesfm.geometry.ssim import SSIMWindow, ssim
from facesfm.geometry.warp import inside_warped_mask, inverse_warp

__all__ = ["erode_mask", "photometric_error", "spectral_loss", "view_synthesis_loss"]


def photometric_error(
    pred: torch.Tensor,
    ref: torch.Tensor,
    *,
    alpha: float = 0.85,
    window: SSIMWindow = "box3",
) -> torch.Tensor:
    """Per-pixel ``alpha (1 - SSIM) / 2 + (1 - alpha) L1``, averaged over channels.

    pred, ref: (B, C, H, W) in [0, 1]. Returns (B, 1, H, W), in [0, 1] for inputs in [0, 1].
    """
    l1, dssim = _terms(pred, ref, window)
    return alpha * dssim + (1.0 - alpha) * l1


def _terms(pred, ref, window):
    """Per-pixel L1 and (1 - SSIM) / 2 maps, (B, 1, H, W) each, averaged over channels."""
    if pred.shape != ref.shape or pred.dim() != 4:
        raise ValueError(
            f"photometric_error: need equal (B, C, H, W) shapes, got {tuple(pred.shape)} and "
            f"{tuple(ref.shape)}"
        )
    l1 = (pred - ref).abs().mean(1, keepdim=True)
    dssim = ((1.0 - ssim(pred, ref, window=window)) / 2.0).clamp(0.0, 1.0).mean(1, keepdim=True)
    return l1, dssim


def _mask_like(mask: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    B, _, H, W = ref.shape
    if mask is None:
        return torch.ones(B, 1, H, W, device=ref.device, dtype=ref.dtype)
    if mask.shape != (B, 1, H, W):
        raise ValueError(f"mask must be ({B}, 1, {H}, {W}), got {tuple(mask.shape)}")
    return mask.to(ref.dtype)


def spectral_loss(
    pred: torch.Tensor,
    ref: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.85,
    window: SSIMWindow = "box3",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked mean photometric error between ``pred`` and ``ref`` (B, C, H, W).

    mask: (B, 1, H, W) bool or float weights (warp validity x face mask); None = all pixels.
    Returns ``(loss, metrics)``: scalar loss; metrics ``l1``, ``dssim``, ``valid_fraction``
    (detached scalars). With an empty mask the loss is 0 (and has a zero gradient).
    """
    m = _mask_like(mask, ref)
    l1, dssim = _terms(pred, ref, window)
    denom = m.sum().clamp_min(1.0)
    loss = ((alpha * dssim + (1.0 - alpha) * l1) * m).sum() / denom
    with torch.no_grad():
        metrics = {
            "l1": (l1 * m).sum() / denom,
            "dssim": (dssim * m).sum() / denom,
            "valid_fraction": m.sum() / m.numel(),
        }
    return loss, metrics


def view_synthesis_loss(
    tgt_image: torch.Tensor,
    src_image: torch.Tensor,
    tgt_depth: torch.Tensor,
    src_T_tgt: torch.Tensor,
    K: torch.Tensor,
    tgt_mask: torch.Tensor | None = None,
    src_mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.85,
    window: SSIMWindow = "box3",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Warp ``src_image`` onto the target grid with the target depth and compare (eq. 4).

    tgt_image, src_image: (B, C, H, W) in [0, 1]; tgt_depth (B, 1, H, W) mm; src_T_tgt
    (B, 4, 4); K (3, 3) or (B, 3, 3). tgt_mask / src_mask: optional (B, 1, H, W) face masks;
    the source mask is warped too and a pixel counts only where it samples fully inside
    the source face (> 0.999), so face/background edges do not leak in.

    SSIM is a windowed statistic: a pixel next to an invalid one (outside the source image,
    off the face) would compare padding or background. The combined mask is therefore eroded
    by the window radius (1 for "box3", 5 for "gauss11"), so a pixel counts only when its
    whole window is valid; the image border itself is not eroded (both images are padded the
    same way there). Out-of-view samples read the border colour, not black.
    """
    warped = inverse_warp(src_image, tgt_depth, src_T_tgt, K, padding_mode="border")
    m = warped.valid.to(tgt_image.dtype)
    if tgt_mask is not None:
        m = m * _mask_like(tgt_mask, tgt_image)
    if src_mask is not None:
        m = m * inside_warped_mask(src_mask, warped)
    m = erode_mask(m, 1 if window == "box3" else 5)
    return spectral_loss(warped.image, tgt_image, m, alpha=alpha, window=window)


def erode_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of a (B, 1, H, W) {0, 1} mask by a (2r+1)^2 square; outside the image
    counts as valid (the image border is not eroded)."""
    if radius <= 0:
        return mask
    # max-pooling pads with -inf, so the border is ignored rather than treated as invalid
    return -F.max_pool2d(-mask, 2 * radius + 1, stride=1, padding=radius)
