"""Validation metrics (ground truth is read here, never by a stage-2 loss)."""

from __future__ import annotations

import torch

from facesfm.geometry.se3 import rotation_angle
from facesfm.stats import landmark_errors as errors
from facesfm.stats import visibility_scores

__all__ = ["depth_errors", "landmark_errors", "relative_rotation_errors"]


def landmark_errors(
    uv: torch.Tensor, vis_logits: torch.Tensor, uv_gt: torch.Tensor, visible: torch.Tensor
) -> dict[str, float]:
    """Detector errors over a set of frames.

    uv, uv_gt: (..., N, 2) pixels; vis_logits: (..., N); visible: (..., N) bool.
    Returns ``lm_mean_px`` / ``lm_median_px`` (visible landmarks only), and the visibility
    classifier's ``vis_precision``, ``vis_recall``, ``vis_f1`` (prediction: logit > 0).
    """
    err = errors(uv, uv_gt, visible.bool())
    sc = visibility_scores(vis_logits > 0, visible.bool())
    return {
        "lm_mean_px": err.mean,
        "lm_median_px": err.median,
        "vis_precision": sc.precision,
        "vis_recall": sc.recall,
        "vis_f1": sc.f1,
    }


def depth_errors(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Per-frame median-scaled depth errors on face pixels, averaged over frames.

    pred, gt: (B, 1, H, W) mm; mask: (B, 1, H, W) bool (pixels with gt > 0 only count).
    Each frame's prediction is scaled by ``median(gt) / median(pred)`` over its pixels (the
    monocular scale is unobservable), then ``depth_abs_rel`` = mean |s d - d*| / d* and
    ``depth_mm`` = mean |s d - d*|; ``depth_abs_rel_raw`` is without the scaling.
    """
    rel, mm, raw = [], [], []
    for p, g, m in zip(pred, gt, mask):
        m = m.bool() & (g > 0) & torch.isfinite(g)
        if m.sum() == 0:
            continue
        pv, gv = p[m].double(), g[m].double()
        s = gv.median() / pv.median()
        rel.append(((s * pv - gv).abs() / gv).mean())
        mm.append((s * pv - gv).abs().mean())
        raw.append(((pv - gv).abs() / gv).mean())
    if not rel:
        nan = float("nan")
        return {"depth_abs_rel": nan, "depth_mm": nan, "depth_abs_rel_raw": nan}
    return {
        "depth_abs_rel": torch.stack(rel).mean().item(),
        "depth_mm": torch.stack(mm).mean().item(),
        "depth_abs_rel_raw": torch.stack(raw).mean().item(),
    }


def relative_rotation_errors(
    cam_T_world: torch.Tensor, gt_cam_T_world: torch.Tensor
) -> torch.Tensor:
    """Rotation error (degrees) of each frame's pose relative to frame 0.

    cam_T_world, gt_cam_T_world: (F, 4, 4) (any world frames: both are made relative to their
    frame 0). Returns (F - 1,) degrees for frames 1..F-1.
    """
    R = cam_T_world[:, :3, :3].double()
    G = gt_cam_T_world[:, :3, :3].double()
    Rr = R[1:] @ R[0].T
    Gr = G[1:] @ G[0].T
    return torch.rad2deg(rotation_angle(Rr, Gr))
