"""One focal length shared by all frames, estimated when nobody gives it.

The estimate is the focal length at which the joint bundle adjustment of photometric point
tracks (with the landmarks at a small weight) reaches its lowest cost: a 1-D search over a
factor on a start K (principal point held), each trial a full BA from the same poses.

Why tracks and not landmarks: on renders at 300, 500 and 900 px (the head's image size held
fixed by the distance) the landmark-only BA cost with the shipped detector's landmarks was
lowest near 450 px in all three (the detectors were trained at 500 px), while the true
landmarks put the minimum exactly at the truth: the detector's errors, not the geometry,
decide it. Matched skin patches are measurements of the images alone; their cost is lowest
near the truth (bench/results/focal.md: median error 20%, always long, with tracks 4 frames
long; focal_accurate.md: 5.7% with 20 frames long and a 12 px search; focal_cauchy_025.md:
1.3% with the trials' robust kernel below).

The search: ``grid`` factors spaced evenly in log between ``low`` and ``high``; where the
lowest cost lies at either end the focal length is not estimated (``status`` "at bound");
otherwise a golden-section search between the two grid neighbours of the lowest, to a
relative width of ``tolerance``. ``status`` "flat" where the cost at both neighbours is
within ``min_rise`` of the minimum (nothing in the data prefers one focal length). One side
may well be shallow: the minimum then lies towards it, and the bracket still holds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from facesfm.errors import InputError
from facesfm.solvers.landmark_ba import (
    BAConfig,
    BAOutcome,
    KernelKind,
    Landmarks,
    track_bundle_adjust,
)
from facesfm.solvers.problem import SolverError

__all__ = ["FocalConfig", "FocalEstimate", "estimate_focal", "scaled_focal"]

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class FocalConfig:
    """Whether and how :func:`estimate_focal` searches.

    enabled:          estimate the focal length when nothing gave it (``facesfm solve``; a
                      user's ``--focal``, the sequence's K or an EXIF focal length is used
                      as given).
    low, high:        the factor range on the start focal length searched.
    grid:             trials spread evenly in log over it before the refinement.
    tolerance:        the golden-section search stops when its bracket is this narrow
                      (relative).
    landmark_weight:  weight of the landmark observations beside the tracks (1 each); small,
                      so that the detector's learned camera does not pull the estimate.
    max_tracks:       at most this many tracks (evenly picked), for speed: each trial is a
                      whole bundle adjustment.
    passes, refine:   ``facesfm solve`` estimates again ``passes - 1`` times, each time with
                      the tracks matched anew at the last estimate and the search narrowed to
                      [1 / refine, refine] x it: the matching starts from the K it is given
                      and pulls the estimate towards it (on 31-frame renders at 300 and 900 px:
                      380 then 361 px, 796 then 924 px).
    max_frames:       at most this many frames (evenly picked) take part in the trials (None:
                      all). On our 61-frame captures 31 frames halved the estimate's time
                      (about 26 to 13 s) at the same median error (21%).
    min_rise:         least relative cost rise at the steeper of the lowest trial's grid
                      neighbours for an estimate to count (on renders: 1.1-7%).
    search_px:        ``facesfm solve`` matches the tracks of the estimate with this search
                      half-width (px) instead of the tracks' own (``tracks.search_px``): the
                      poses and depth that predict where to search come from a K that is
                      still wrong, and a narrow search keeps only the matches that agree with
                      it. On the built-in sweep at 1200 px (started at 461), 6 px settled at
                      1137 px (-5%), 12 px at 1193 (-0.6%).
    kernel, kernel_px: the robust kernel of every trial's bundle adjustment, in place of the
                      solve's (``ba.kernel``). The cost differs by a few hundredths of a
                      percent between focal lengths 10% apart, so the 1-3% of matches that
                      land on the wrong texture (mostly between frames far apart) decide
                      it unless their influence fades: on built-in face 1 at 1200 px, tracks
                      matched from the true geometry gave +14% with Huber at 2 px (the
                      solve's), +5% with Huber at 0.5 px, +1.0% with Cauchy at 0.5 px; the
                      tracks matched as the solve matches them +14.7%, +4.7%, +0.2%.
                      Over 3 built-in faces at 500, 800 and 1200 px (bench/focal.py,
                      accurate preset) Cauchy at 0.5 px erred 1.7% (median) and 3.7%
                      (worst), at 0.25 px 1.3% and 2.2%.
    """

    enabled: bool = True
    low: float = 0.25
    high: float = 4.0
    grid: int = 7
    tolerance: float = 0.03
    landmark_weight: float = 0.01
    max_tracks: int = 800
    max_frames: int | None = 31
    passes: int = 2
    refine: float = 1.5
    min_rise: float = 1e-3
    search_px: int = 12
    kernel: KernelKind = KernelKind.CAUCHY
    kernel_px: float = 0.25

    def __post_init__(self):
        if not 0 < self.low < 1 < self.high or self.grid < 3 or not 0 < self.tolerance < 0.5 \
                or self.landmark_weight < 0 or self.min_rise < 0 or self.max_tracks < 1 \
                or (self.max_frames is not None and self.max_frames < 3) \
                or self.passes < 1 or not self.refine > 1 or self.search_px < 1 \
                or not isinstance(self.kernel, KernelKind) or not self.kernel_px > 0:
            raise InputError("focal: 0 < low < 1 < high, grid >= 3, 0 < tolerance < 0.5, "
                             "landmark_weight >= 0, min_rise >= 0, max_tracks >= 1 and "
                             "max_frames >= 3, passes >= 1, refine > 1, search_px >= 1, "
                             "a KernelKind kernel and kernel_px > 0 required")


@dataclass
class FocalEstimate:
    """focal: the estimate in the start K's pixels (NaN when ``status`` is not "estimated");
    start: the start K's focal length; factors / costs: every trial (factor on ``start``, final
    BA cost; inf where that trial's bundle adjustment failed), in the order run; status:
    "estimated", "at bound" or "flat"; ba: the BA at the estimate (None when not estimated);
    passes: the estimate after each pass where ``facesfm solve`` ran several (the trials are
    the last pass's)."""

    focal: float
    start: float
    status: str
    factors: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    ba: BAOutcome | None = None
    passes: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "estimated"

    def summary(self) -> dict:
        order = np.argsort(self.factors)
        return {"status": self.status, "focal_px": self.focal, "start_px": self.start,
                "passes": [float(f) for f in self.passes],
                "trials": [[float(self.factors[i] * self.start),
                            float(self.costs[i]) if np.isfinite(self.costs[i]) else None]
                           for i in order]}


@dataclass(frozen=True)
class _Picked:
    uv: np.ndarray
    weight: np.ndarray


def scaled_focal(K: np.ndarray, factor: float) -> np.ndarray:
    """``K`` with fx and fy times ``factor`` (principal point kept)."""
    K = np.array(K, dtype=np.float64)
    K[0, 0] *= factor
    K[1, 1] *= factor
    return K


def estimate_focal(K: np.ndarray, lm: Landmarks, tracks, poses: np.ndarray, ba: BAConfig,
                   cfg: FocalConfig | None = None) -> FocalEstimate:
    """The shared focal length (module docstring) from start ``K`` (3, 3), the landmarks,
    photometric ``tracks`` (``uv`` (F, T, 2), ``weight`` (F, T)) and start ``poses``
    (F, 4, 4); ``ba`` configures each trial's bundle adjustment, with the robust kernel of
    ``cfg``."""
    cfg = FocalConfig() if cfg is None else cfg
    ba = replace(ba, kernel=cfg.kernel, kernel_px=cfg.kernel_px)
    if not np.asarray(tracks.weight).any():
        raise InputError("focal: no photometric tracks to estimate the focal length from")
    F = len(poses)
    if cfg.max_frames is not None and F > cfg.max_frames:
        keep = np.linspace(0, F - 1, cfg.max_frames).round().astype(int)
        lm = lm.select(keep)
        tracks = _Picked(np.asarray(tracks.uv)[keep], np.asarray(tracks.weight)[keep])
        poses = poses[keep]
    T = tracks.weight.shape[1]
    if T > cfg.max_tracks:
        pick = np.linspace(0, T - 1, cfg.max_tracks).round().astype(int)
        tracks = _Picked(np.asarray(tracks.uv)[:, pick], np.asarray(tracks.weight)[:, pick])
    start = float(K[0, 0])
    est = FocalEstimate(float("nan"), start, "at bound")
    outcomes: dict[float, BAOutcome] = {}

    def cost(log_factor: float) -> float:
        factor = float(np.exp(log_factor))
        try:
            out = track_bundle_adjust(scaled_focal(K, factor), lm, tracks, None, poses, ba,
                                      cfg.landmark_weight)
        except (InputError, SolverError):  # e.g. nothing triangulates at an extreme trial
            est.factors.append(factor)
            est.costs.append(float("inf"))
            return float("inf")
        est.factors.append(factor)
        est.costs.append(out.final_cost)
        outcomes[factor] = out
        return out.final_cost

    grid = np.linspace(np.log(cfg.low), np.log(cfg.high), cfg.grid)
    costs = np.array([cost(g) for g in grid])
    if not np.isfinite(costs).any():
        raise InputError("focal: the bundle adjustment failed at every trial focal length")
    i = int(np.nanargmin(costs))
    if i in (0, len(grid) - 1):
        return est
    if max(costs[i - 1], costs[i + 1]) - costs[i] < cfg.min_rise * costs[i]:
        est.status = "flat"
        return est
    a, b = grid[i - 1], grid[i + 1]
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = cost(c), cost(d)
    while b - a > np.log1p(cfg.tolerance):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = cost(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = cost(d)
    best = min(zip(est.costs, est.factors))[1]
    est.focal, est.status = best * start, "estimated"
    est.ba = outcomes[best]
    return est
