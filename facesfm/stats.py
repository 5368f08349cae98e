"""Summary statistics of errors and binary classification scores (numpy).

Shared by the training logs (:mod:`facesfm.training.metrics`) and the evaluation
(:mod:`facesfm.eval.metrics`), so that both report a detector's error and visibility F1 the
same way. Inputs may be numpy arrays or torch tensors (detached, converted to float64 numpy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ClassificationScores",
    "ErrorStats",
    "check_tail",
    "error_stats",
    "landmark_errors",
    "scores_from_counts",
    "to_numpy",
    "visibility_scores",
]


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    """A numpy copy/view of an array or (detached) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def check_tail(a: np.ndarray, tail: tuple, name: str) -> None:
    """Raise a ValueError naming ``name`` unless ``a.shape`` ends with ``tail`` (None = any)."""
    if a.ndim < len(tail) or any(
        t is not None and s != t for s, t in zip(a.shape[-len(tail) :], tail)
    ):
        want = "(..., " + ", ".join("*" if t is None else str(t) for t in tail) + ")"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")


@dataclass(frozen=True)
class ErrorStats:
    """Summary of non-negative errors (one unit: mm or px).

    mean, median, rmse, max, p90 in the errors' unit; mse is the mean of squares (unit^2);
    count is the number of errors summarised (all NaN when it is 0).
    """

    mean: float
    median: float
    rmse: float
    mse: float
    max: float
    p90: float
    count: int

    def as_dict(self) -> dict:
        return asdict(self)


def error_stats(errors) -> ErrorStats:
    """:class:`ErrorStats` of a flat array of errors (any shape; flattened)."""
    e = to_numpy(errors).ravel()
    if e.size == 0:
        nan = float("nan")
        return ErrorStats(nan, nan, nan, nan, nan, nan, 0)
    mse = float(np.mean(e * e))
    return ErrorStats(
        float(e.mean()),
        float(np.median(e)),
        float(np.sqrt(mse)),
        mse,
        float(e.max()),
        float(np.percentile(e, 90)),
        int(e.size),
    )


def landmark_errors(pred_uv, gt_uv, gt_visible=None) -> ErrorStats:
    """Pixel distance between predicted and GT landmarks, over GT-visible ones.

    pred_uv, gt_uv: (..., L, 2) pixel coordinates (u right, v down).
    gt_visible:     (..., L) bool, or None for all.
    """
    p, g = to_numpy(pred_uv), to_numpy(gt_uv)
    check_tail(p, (None, 2), "pred_uv")
    if p.shape != g.shape:
        raise ValueError(f"pred_uv {p.shape} and gt_uv {g.shape} differ in shape")
    d = np.linalg.norm(p - g, axis=-1)
    if gt_visible is not None:
        vis = to_numpy(gt_visible, bool)
        if vis.shape != d.shape:
            raise ValueError(f"gt_visible must be {d.shape}, got {vis.shape}")
        d = d[vis]
    return error_stats(d)


@dataclass(frozen=True)
class ClassificationScores:
    """Binary classification counts and scores (positive = visible).

    precision = tp / (tp + fp), recall = tp / (tp + fn), f1 = their harmonic mean,
    accuracy = (tp + tn) / all. An empty ratio (0 / 0) counts as 1 when there was nothing to
    get wrong (e.g. precision with no predicted and no actual positives) and as 0 otherwise.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    accuracy: float

    def as_dict(self) -> dict:
        return asdict(self)


def scores_from_counts(tp: int, fp: int, fn: int, tn: int = 0) -> ClassificationScores:
    """Precision, recall, F1 and accuracy from confusion counts."""
    if min(tp, fp, fn, tn) < 0:
        raise ValueError("confusion counts must be non-negative")
    nothing = tp + fp + fn == 0
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    f1 = 1.0 if nothing else (2 * tp / (2 * tp + fp + fn))
    total = tp + fp + fn + tn
    accuracy = (tp + tn) / total if total else 1.0
    return ClassificationScores(
        int(tp),
        int(fp),
        int(fn),
        int(tn),
        float(precision),
        float(recall),
        float(f1),
        float(accuracy),
    )


def visibility_scores(pred_visible, gt_visible) -> ClassificationScores:
    """Scores of predicted landmark visibility (any shape, bool) against the GT visibility."""
    p, g = to_numpy(pred_visible, bool), to_numpy(gt_visible, bool)
    if p.shape != g.shape:
        raise ValueError(f"pred_visible {p.shape} and gt_visible {g.shape} differ in shape")
    tp = int(np.sum(p & g))
    fp = int(np.sum(p & ~g))
    fn = int(np.sum(~p & g))
    tn = int(np.sum(~p & ~g))
    return scores_from_counts(tp, fp, fn, tn)
