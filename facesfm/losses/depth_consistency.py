"""Multi-view depth-consistency loss, paper equation 5.

The paper's equation is garbled in the text; what it describes is: synthesise the source depth
from the target depth, compute a scale ratio between the synthesised and the original source
depth, then penalise an L1 difference. We use, per batch item and over the valid pixels V:

* every target pixel p is lifted with ``D_t(p)`` and moved into the source camera; its z there is
  the synthesised source depth ``D~_s(p)``; it lands at ``p'`` in the source image, where the
  predicted source depth is read bilinearly: ``D_s(p')``;
* ``r = sum_V D~_s / sum_V D_s`` (synthesised over original);
* ``L = mean_V |r D_s(p') - D~_s(p)| / (r D_s(p') + D~_s(p))``  (the normalised difference
  of SC-SfMLearner, in [0, 1), applied after the scale alignment).

Because ``r`` absorbs it, the loss is invariant to a global scale of ``D_s`` alone; scaling
the whole scene (both depths and the pose translation) leaves it unchanged as well.
"""

from __future__ import annotations

import torch

from facesfm.geometry.warp import inside_warped_mask, inverse_warp

__all__ = ["depth_consistency_loss"]


def depth_consistency_loss(
    tgt_depth: torch.Tensor,
    src_depth: torch.Tensor,
    src_T_tgt: torch.Tensor,
    K: torch.Tensor,
    tgt_mask: torch.Tensor | None = None,
    src_mask: torch.Tensor | None = None,
    *,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Scale-aligned consistency between a synthesised and a predicted source depth.

    tgt_depth, src_depth: (B, 1, H, W) camera-frame z in mm (positive).
    src_T_tgt: (B, 4, 4), ``X_src = R X_tgt + t``. K: (3, 3) or (B, 3, 3).
    tgt_mask, src_mask: optional (B, 1, H, W) face masks (bool or {0,1}); the source mask is
    sampled at the projections and must be fully inside (> 0.999).
    Returns ``(loss, metrics)``; metrics ``scale_ratio`` (mean r over the batch),
    ``valid_fraction`` (detached).
    """
    if tgt_depth.shape != src_depth.shape or tgt_depth.dim() != 4 or tgt_depth.shape[1] != 1:
        raise ValueError(
            "depth_consistency_loss: depths must both be (B, 1, H, W), got "
            f"{tuple(tgt_depth.shape)} and {tuple(src_depth.shape)}"
        )
    B = tgt_depth.shape[0]
    w = inverse_warp(src_depth, tgt_depth, src_T_tgt, K)
    valid = w.valid.to(tgt_depth.dtype)
    if tgt_mask is not None:
        if tgt_mask.shape != tgt_depth.shape:
            raise ValueError(
                f"tgt_mask must be {tuple(tgt_depth.shape)}, got {tuple(tgt_mask.shape)}"
            )
        valid = valid * tgt_mask.to(valid.dtype)
    if src_mask is not None:
        if src_mask.shape != src_depth.shape:
            raise ValueError(
                f"src_mask must be {tuple(src_depth.shape)}, got {tuple(src_mask.shape)}"
            )
        valid = valid * inside_warped_mask(src_mask, w)

    d_synth = w.projected_depth  # D~_s(p)
    d_src = w.image  # D_s(p')
    dims = (1, 2, 3)
    r = (d_synth * valid).sum(dims) / (d_src * valid).sum(dims).clamp_min(eps)  # (B,)
    r = r.reshape(B, 1, 1, 1)
    aligned = r * d_src
    diff = (aligned - d_synth).abs() / (aligned + d_synth).clamp_min(eps)
    n = valid.sum()
    loss = (diff * valid).sum() / n.clamp_min(1.0)
    metrics = {
        "scale_ratio": r.detach().mean(),
        "valid_fraction": (n / valid.numel()).detach(),
    }
    return loss, metrics
