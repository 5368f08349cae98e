"""The refinements of ``facesfm solve`` after the landmark bundle adjustment, each on the
values :mod:`facesfm.solve.stages` passes: the shared focal length where K is only a guess
(:func:`estimate_focal_length`), photometric point tracks in a second bundle adjustment
(:func:`refine_with_tracks`, ``--tracks``) and the plane sweep of the depth maps
(:func:`refine_with_stereo`, ``--stereo``). Each warns and leaves its input in place where it
finds nothing to go on.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from facesfm.errors import InputError, warn
from facesfm.solve.config import SolveConfig
from facesfm.solve.inputs import FrameSet
from facesfm.solve.stages import adjust, points_depth_maps
from facesfm.solve.stereo import refine_depth
from facesfm.solve.tracks import BA_BYTES_PER_PAIR, patch_tracks
from facesfm.solvers.focal import FocalEstimate, estimate_focal, scaled_focal
from facesfm.solvers.landmark_ba import BAOutcome, DepthMaps, Landmarks, track_bundle_adjust

__all__ = ["estimate_focal_length", "moved_away", "refine_with_stereo", "refine_with_tracks"]


def moved_away(poses: np.ndarray, factor: float) -> np.ndarray:
    """``poses`` (F, 4, 4) cam_T_world with their translations times ``factor``: the cameras
    ``factor`` times as far from the world origin (the head), which keeps the head's image
    when the focal length is ``factor`` times as long. A bundle adjustment keeps its start's
    scale (the scale is a gauge), so a start made at a guessed focal length carries the
    guess's distance, and a head in a world too small or too large for the millimetre
    settings of the plane sweep and fusion, unless it is moved so."""
    out = np.array(poses, dtype=np.float64)
    out[:, :3, 3] *= factor
    return out


def estimate_focal_length(used: FrameSet, lm: Landmarks, dm: DepthMaps | None,
                          poses0: np.ndarray, ba: BAOutcome, cfg: SolveConfig, echo,
                          region: np.ndarray | None = None
                          ) -> tuple[FrameSet, FocalEstimate | None, np.ndarray]:
    """Where K is only the default guess: one focal length for all frames from photometric
    point tracks matched with the guessed K and the landmark BA's poses
    (:func:`facesfm.solvers.focal.estimate_focal`), then ``cfg.focal.passes - 1`` times again
    with the bundle adjustment from ``poses0`` and the tracks redone at the last estimate, the
    search narrowed around it. ``dm``: the depth maps (None: from the BA's landmark points,
    their masks cut to ``region`` as the solve's are).
    Returns the frames with the estimated K (``K_source`` "estimated"), the last pass's
    estimate (``passes``: every pass's focal length, original pixels) and ``poses0``
    :func:`moved_away` to suit that K; the frames and ``poses0`` unchanged, with a warning,
    where the first pass made no estimate (no tracks, the cost lowest at the search's end, or
    flat). A later pass that makes none keeps the one before."""
    guess = float(used.K_original[0, 0])
    keep = (f"kept the guess {guess:.0f} px (1.2 x the longer side); give --focal or "
            f"--intrinsics if you know it")
    out, last, found = used, None, []
    for n in range(cfg.focal.passes):
        fc = cfg.focal if n == 0 else replace(cfg.focal, low=1 / cfg.focal.refine,
                                              high=cfg.focal.refine, grid=5)
        depth = dm if dm is not None else points_depth_maps(out, lm, ba, region)
        try:
            tracks = patch_tracks(out.images, depth.depth, depth.mask, out.K, ba.poses,
                                  np.exp(ba.log_scale),
                                  replace(cfg.tracks, search_px=cfg.focal.search_px))
            est = estimate_focal(out.K, lm, tracks, ba.poses,
                                 replace(cfg.ba, ftol=cfg.tracks.ftol), fc)
        except InputError as e:
            if n == 0:
                warn(echo, f"focal length not estimated ({e}); {keep}")
                return used, None, poses0
            break
        if not est.ok:
            if n == 0:
                why = {"at bound": f"the cost is lowest at the end of the searched range "
                                   f"({fc.low:g}-{fc.high:g} x the guess)",
                       "flat": "the cost hardly changes with it"}[est.status]
                warn(echo, f"focal length not estimated: {why}; {keep}")
                return used, est, poses0
            break
        out = replace(out, K=scaled_focal(out.K, est.focal / est.start), K_source="estimated")
        est.focal, est.start = float(out.K_original[0, 0]), guess  # in the original pixels
        est.factors = [f * found[-1] / guess for f in est.factors] if found else est.factors
        last = est
        found.append(est.focal)
        start = moved_away(poses0, out.K[0, 0] / used.K[0, 0])
        if n + 1 < cfg.focal.passes:
            ba, _, _ = adjust(out, lm, dm, start, cfg)
    last.passes = found
    return out, last, start


def refine_with_tracks(used: FrameSet, lm: Landmarks, dm: DepthMaps, ba: BAOutcome,
                       cfg: SolveConfig, photometric: dict, echo, lap) -> tuple[BAOutcome, bool]:
    """``--tracks``: match skin patches between neighbouring frames and run the classical BA
    again with them beside the landmarks; returns (outcome, whether it ran again). When
    nothing matches the BA is kept as it was, with a warning. Records the tracks' summary in
    ``photometric``."""
    try:
        tracks = patch_tracks(used.images, dm.depth, dm.mask, used.K, ba.poses,
                              np.exp(ba.log_scale), cfg.tracks)
    except InputError as e:  # nothing to match: the landmark-only BA stands
        photometric["tracks"] = {"skipped": str(e)}
        warn(echo, f"{e}; kept the landmark-only bundle adjustment")
        lap("tracks")
        return ba, False
    lap("tracks")
    photometric["tracks"] = tracks.summary()
    N = lm.uv.shape[1]
    kept = tracks.thinned(N, cfg.tracks.max_ba_gb)
    if len(kept) < len(tracks):
        F = len(used.names)
        warn(echo, f"tracks: {F} frames x {N + len(tracks):,} points would take the bundle "
                   f"adjustment to about {F * (N + len(tracks)) * BA_BYTES_PER_PAIR / 1e9:.3g} "
                   f"GB (tracks.max_ba_gb is {cfg.tracks.max_ba_gb:g}); kept {len(kept):,} "
                   f"of the {len(tracks):,} tracks, evenly over the sequence")
        photometric["tracks"] = {**kept.summary(), "thinned_from": len(tracks)}
        if len(kept) == 0:
            warn(echo, "no track fits; kept the landmark-only bundle adjustment")
            return ba, False
        tracks = kept
    start = ba.start
    ba = track_bundle_adjust(used.K, lm, tracks, None if cfg.depth == "landmarks" else dm,
                             ba.poses, replace(cfg.ba, ftol=cfg.tracks.ftol,
                                               kernel=cfg.tracks.kernel,
                                               kernel_px=cfg.tracks.kernel_px),
                             cfg.tracks.landmark_weight)
    ba.start = f"{start} + tracks"
    lap("ba")
    return ba, True


def refine_with_stereo(used: FrameSet, dm: DepthMaps, ba: BAOutcome, cfg: SolveConfig,
                       photometric: dict, echo) -> DepthMaps:
    """``--stereo``: the depth maps refined by a photometric plane sweep (the unrefined ones,
    with a warning, when no pixel finds a match). Records its summary in ``photometric``."""
    st = refine_depth(used.images, dm.depth, dm.mask, used.K, ba.poses, np.exp(ba.log_scale),
                      cfg.stereo)
    summary = st.summary(dm.mask)
    kept = summary["kept_fraction"]
    if st.mask.any() and kept >= cfg.stereo.min_support:
        photometric["stereo"] = summary
        return DepthMaps(st.depth.astype(np.float32), st.mask, dm.source + "+stereo")
    if st.mask.any():
        msg = (f"stereo: only {kept:.0%} of the pixels found a depth that the views before "
               f"and after the frame agree on (stereo.min_support is "
               f"{cfg.stereo.min_support:.0%}): too little photometric evidence (blurred, "
               f"noisy or shiny skin, or wrong poses)")
    else:
        msg = ("stereo: no pixel found a photometric match (the frames may be too far "
               "apart, the face too flat in texture, or the poses wrong)")
    photometric["stereo"] = {"skipped": msg}
    warn(echo, f"{msg}; fused the unrefined depth maps")
    return dm
