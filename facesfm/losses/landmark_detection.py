"""Supervised loss for training the landmark detector on rendered ground truth (section 3.3).

The paper regresses the 2N coordinates of visible landmarks with an L2 loss. We add what our
detector also predicts:

* position, on visible landmarks only (invisible ones have no meaningful label):
  - without an uncertainty (``log_sigma is None``): the squared distance in units of
    ``scale`` pixels, ``||u - u*||^2 / scale^2`` (``scale`` = the image size, so the loss does
    not depend on the resolution), the paper's L2 regression;
  - with ``log_sigma``: the negative log-likelihood of an isotropic 2D Gaussian,
    ``||u - u*||^2 / (2 sigma^2) + 2 log(sigma / scale)`` (constants dropped), whose minimum over
    sigma is at ``sigma^2 = ||u - u*||^2 / 2``: the network learns calibrated spreads;
* visibility: binary cross-entropy of the logits against the visibility labels, times
  ``visibility_weight``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facesfm.networks.landmark import LandmarkOutput

__all__ = ["landmark_detection_loss"]


def landmark_detection_loss(
    out: LandmarkOutput,
    uv_gt: torch.Tensor,
    visible: torch.Tensor,
    *,
    scale: float,
    visibility_weight: float = 0.1,
    min_log_sigma: float = -2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Detector loss against ground-truth landmarks.

    out: detector output with uv (B, N, 2) pixels, visibility_logits (B, N), log_sigma
    (B, N) or None. uv_gt: (B, N, 2) pixels. visible: (B, N) bool or {0, 1}.
    scale: pixels per unit of normalised error (e.g. the image width).
    Returns ``(loss, metrics)``; metrics (detached): ``px_error`` (mean over visible landmarks),
    ``nme`` (px_error / scale), ``visibility_accuracy``, ``position``, ``visibility`` (the two
    terms), and ``sigma_px`` (mean predicted sigma on visible landmarks) when available.
    """
    B, N = out.visibility_logits.shape
    if out.uv.shape != (B, N, 2) or uv_gt.shape != (B, N, 2):
        raise ValueError(
            f"landmark_detection_loss: uv {tuple(out.uv.shape)} and uv_gt {tuple(uv_gt.shape)} "
            f"must both be ({B}, {N}, 2)"
        )
    if visible.shape != (B, N):
        raise ValueError(
            f"landmark_detection_loss: visible must be ({B}, {N}), got {tuple(visible.shape)}"
        )
    if scale <= 0:
        raise ValueError(f"landmark_detection_loss: scale must be > 0, got {scale}")
    v = visible.to(out.uv.dtype)
    n_vis = v.sum().clamp_min(1.0)
    sq = ((out.uv - uv_gt) ** 2).sum(-1)  # (B, N) px^2
    if out.log_sigma is None:
        per = sq / scale**2
    else:
        ls = out.log_sigma.clamp_min(min_log_sigma)
        per = 0.5 * sq * torch.exp(-2.0 * ls) + 2.0 * (ls - math.log(scale))
    position = (per * v).sum() / n_vis
    visibility = F.binary_cross_entropy_with_logits(out.visibility_logits, v)
    loss = position + visibility_weight * visibility
    with torch.no_grad():
        px = (torch.sqrt(sq) * v).sum() / n_vis
        metrics = {
            "px_error": px,
            "nme": px / scale,
            "visibility_accuracy": ((out.visibility_logits > 0).to(v.dtype) == v)
            .to(v.dtype)
            .mean(),
            "position": position.detach(),
            "visibility": visibility.detach(),
        }
        if out.log_sigma is not None:
            metrics["sigma_px"] = (out.log_sigma.exp() * v).sum() / n_vis
    return loss, metrics
