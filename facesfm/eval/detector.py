"""Held-out accuracy of a landmark detector: render faces with given seeds, detect, compare.

This is the protocol of the model card (:mod:`facesfm.weights`) and of the test that checks
the shipped detectors against it: faces of one source rendered as in training (384x384,
focal 500 px, yaw -60..60 degrees), detected the way ``facesfm solve`` detects them
(:func:`facesfm.training.landmarks.detect`), errors in the rendered frames' pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from facesfm.data.dataset import SequenceDataset
from facesfm.eval.metrics import visibility_scores
from facesfm.render.batch import build_batch_config, render_batch
from facesfm.training.landmarks import detect, load_landmark_net

__all__ = ["DETECTOR_SETS", "HeldOut", "detector_errors", "render_held_out", "uncertainty_stats"]


@dataclass(frozen=True)
class HeldOut:
    """A held-out set: ``subjects`` faces of ``face`` ("builtin" or "ict") from master seed
    ``seed`` (never a training seed), ``frames`` frames each over yaw -60..60, ``size`` px;
    ``vary``: each sequence with its own trajectory (``facesfm render --vary-trajectory``);
    ``appearance``: None (plain renders) or the name of an appearance preset
    (:data:`facesfm.render.config.APPEARANCE_PRESETS`, e.g. "realistic")."""

    face: str
    seed: int
    subjects: int
    frames: int
    size: int = 384
    vary: bool = False
    appearance: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


#: Per face source, the sets a detector is measured on. Those whose key ends in "test" are
#: small: tests/test_shipped_weights.py re-renders and re-measures them in the test suite.
#: "realistic" sets render with the realistic appearance preset (held-out photographs, a
#: worse camera, harder light, changed skin, occluders; never what training saw).
DETECTOR_SETS = {
    "builtin": {"test": HeldOut("builtin", 4100, 3, 11),
                "held_out": HeldOut("builtin", 3100, 20, 61)},
    "ict": {"test": HeldOut("ict", 4000, 3, 11),
            "held_out": HeldOut("ict", 3000, 20, 61),
            "realistic_test": HeldOut("ict", 4500, 3, 11, appearance="realistic"),
            "realistic": HeldOut("ict", 3500, 20, 61, appearance="realistic")},
}


def render_held_out(spec: HeldOut, out: str | Path, ict_dir=None, workers: int = 1,
                    progress: bool = False) -> Path:
    """Render ``spec`` into ``out`` (a dataset folder); returns ``out``."""
    cfg = build_batch_config(faces=spec.face, subjects=spec.subjects, seed=spec.seed,
                             frames=spec.frames, size=str(spec.size), workers=workers,
                             ict_dir=ict_dir, vary_trajectory=spec.vary or None,
                             appearance=spec.appearance)
    render_batch(cfg, out, overwrite=True, progress=progress, echo=lambda *a, **k: None)
    return Path(out)


@torch.no_grad()
def detector_errors(checkpoint: str | Path, data: str | Path) -> dict:
    """Landmark errors of the stage-1 ``checkpoint`` on every frame of the sequences in
    ``data``: ``lm_mean_px``, ``lm_median_px`` (visible landmarks, frame pixels),
    ``lm_mse_px2`` (mean squared euclidean error), ``lm_p95_px``, visibility precision /
    recall / F1, and the counts of sequences, frames and visible landmarks; for a detector
    that predicts its uncertainty, also :func:`uncertainty_stats` of the visible landmarks."""
    net, cfg = load_landmark_net(checkpoint)
    ds = SequenceDataset(data, window=None, landmarks=cfg.data.landmarks, load_depth=False,
                         load_mask=False)
    errs, sigmas, pred, true = [], [], [], []
    frames = 0
    for i in range(len(ds)):
        s = ds[i]
        out = detect(net, cfg, s.images)
        vis = s.visible.bool()
        errs.append(torch.linalg.norm(out.uv - s.uv, dim=-1)[vis].double().numpy())
        if out.log_sigma is not None:
            sigmas.append(out.log_sigma.exp()[vis].double().numpy())
        pred.append((out.visibility_logits > 0).numpy())
        true.append(vis.numpy())
        frames += len(s.images)
    e = np.concatenate(errs)
    sc = visibility_scores(np.concatenate(pred), np.concatenate(true))
    stats = uncertainty_stats(e, np.concatenate(sigmas)) if sigmas else {}
    return {
        **stats,
        "lm_mean_px": float(e.mean()),
        "lm_median_px": float(np.median(e)),
        "lm_p95_px": float(np.percentile(e, 95)),
        "lm_mse_px2": float((e**2).mean()),
        "vis_precision": float(sc.precision),
        "vis_recall": float(sc.recall),
        "vis_f1": float(sc.f1),
        "sequences": len(ds),
        "frames": frames,
        "visible_landmarks": int(e.size),
        "landmarks": cfg.data.landmarks,
    }


def uncertainty_stats(err, sigma) -> dict:
    """How well predicted spreads ``sigma`` rank the actual errors ``err`` (1-D arrays, one
    entry per detected landmark, same units): ``sigma_median_px``, ``sigma_error_spearman``
    (Spearman's rank correlation, ties at their average rank; 0 = the spread says nothing
    about the error, 1 = it orders them perfectly; 0 when either is constant) and
    ``error_by_sigma_quartile`` (mean error of the landmarks in each quartile of predicted
    sigma, most confident first): what the BA weight ``1 / sigma^2`` relies on."""
    from scipy.stats import spearmanr

    e = np.asarray(err, dtype=np.float64).ravel()
    s = np.asarray(sigma, dtype=np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"uncertainty_stats: err {e.shape} and sigma {s.shape} differ in shape")
    if e.size < 4:
        raise ValueError(f"uncertainty_stats: needs at least 4 landmarks, got {e.size}")

    const = np.ptp(e) == 0 or np.ptp(s) == 0  # undefined: no order to agree with
    rho = 0.0 if const else float(spearmanr(e, s).statistic)
    quart = np.array_split(np.argsort(s, kind="stable"), 4)
    return {
        "sigma_median_px": float(np.median(s)),
        "sigma_error_spearman": rho,
        "error_by_sigma_quartile": [float(e[q].mean()) for q in quart],
    }
