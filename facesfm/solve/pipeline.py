"""``facesfm solve``: frames -> landmarks -> depth and poses -> BA -> fusion -> outputs.

:func:`solve_frames` runs the stages of :mod:`facesfm.solve.stages` in order. Photo folders
and videos first pass the face front end (:mod:`facesfm.solve.frontend`): frames without a
face are skipped, the others cropped to the face (never squashed); outputs are in the
original frames' pixels.

=================  ==========================================  ===============================
stage              learned                                      oracle
=================  ==========================================  ===============================
landmarks          LandmarkNet (``--landmark-checkpoint``): uv, ``--oracle-landmarks``: the
                   BA weight where visibility >= 0.5            sequence's uv / visible
depth + mask       DepthNet (``--checkpoint``); mask = convex   ``--oracle-depth``: GT depth
                   hull of the frame's visible landmarks        maps and face masks
initial poses      PoseNet (``--checkpoint``) on consecutive    ``--poses-init gt`` (alias
                   usable frames, chained                       ``--oracle-poses``) or
                                                                ``gt-perturbed``
=================  ==========================================  ===============================

Without any network beyond the landmark detector: ``--poses-init landmarks`` (a
factorisation of the landmark tracks, :mod:`facesfm.solvers.initial_poses`) and ``--depth
landmarks`` (depth maps interpolated from the bundle-adjusted landmark points).

Bundle adjustment: :mod:`facesfm.solvers.landmark_ba` (``classical``: poses + landmark points;
``depth``: equation 2 of the paper, poses + per-frame depth scales). Two optional photometric
stages follow it: ``--tracks`` (:mod:`facesfm.solve.tracks`) matches skin patches between
neighbouring frames and runs the classical BA again with them beside the landmarks;
``--stereo`` (:mod:`facesfm.solve.stereo`) refines the depth maps by a plane sweep before
fusion. Either one that finds nothing to match is skipped with a warning. Fusion uses the
optimised poses and the depth maps times ``exp(s_f)``; with ground truth the result is scored
(:mod:`facesfm.eval.ground_truth`).

Frames where no face is found (fewer than ``min_face_landmarks`` landmarks with weight > 0)
are skipped with a warning; fewer than ``min_frames`` usable frames is an InputError. With
more usable frames than ``joint_frames``, the stages from the initial poses to the checks run
on that many keyframes, and the other frames are then registered to their reconstruction
(:mod:`facesfm.solve.register`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from facesfm.data.colmap import colmap_name
from facesfm.data.format import frames_digest
from facesfm.errors import InputError, warn
from facesfm.eval.ground_truth import evaluate_against_gt
from facesfm.io import atomic_dir, check_writable
from facesfm.solve.checks import check_result, motion_check_meshes
from facesfm.solve.config import SolveConfig
from facesfm.solve.frontend import KeyframeFinder
from facesfm.solve.inputs import FrameSet, is_video, load_input
from facesfm.solve.outputs import write_outputs
from facesfm.solve.refine import estimate_focal_length, refine_with_stereo, refine_with_tracks
from facesfm.solve.register import keyframes_of, register_others
from facesfm.solve.stages import (
    SolveResult,
    adjust,
    detect_landmarks,
    face_frames,
    factorised_start,
    find_faces_and_crop,
    first_pass_views,
    fuse,
    initial_poses,
    landmark_reprojection,
    load_stage_networks,
    make_depth_maps,
    person_region,
    points_depth_maps,
    redetect_keyframes,
    within,
)

__all__ = ["run_solve", "solve_frames"]


class _Clock:
    """Seconds per stage: each call books the time since the last to ``name``."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._t
        self._t = now


def _landmarks(frames: FrameSet, cfg: SolveConfig, nets, echo):
    """Every frame's landmarks, the frames with a face (``keep``) and those the joint stages
    run on (``joint``); a long sequence is detected in two passes (one crop view, then every
    view on the keyframes)."""
    views = first_pass_views(frames, cfg, nets)
    lm = detect_landmarks(frames, cfg, nets, views)
    keep = face_frames(frames, lm, cfg, echo)
    joint = keyframes_of(frames, keep, cfg, echo)
    if views is not None:
        lm = redetect_keyframes(frames, joint, lm, nets)
    return lm, keep, joint


def _adjusted(used: FrameSet, lm, dm, poses0, cfg: SolveConfig, echo, person, lap):
    """The bundle adjustment; where K is only the default guess, the focal length estimated
    and the bundle adjustment run again from the same start with it, so that the rest runs
    as with a K given. Returns (frames with the K used, outcome, start, classical, focal)."""
    ba, poses0, classical = adjust(used, lm, dm, poses0, cfg)
    lap("ba")
    focal = None
    if used.K_source == "default" and cfg.focal.enabled and cfg.ba.enabled:
        used, focal, poses0 = estimate_focal_length(used, lm, dm, poses0, ba, cfg, echo,
                                                    person)
        lap("focal")
        if used.K_source == "estimated":
            ba, poses0, classical = adjust(used, lm, dm, poses0, cfg)
            lap("ba")
    return used, ba, poses0, classical, focal


def _refined(used: FrameSet, lm, dm, poses0, ba, classical: bool, cfg: SolveConfig, person,
             echo, lap):
    """The depth maps from the BA's points (``--depth landmarks``, again after the tracks'
    BA), the photometric tracks and plane sweep where asked for, and the landmarks'
    reprojection. Returns (depth maps, outcome, photometric summary, landmark points,
    reprojection errors before and after)."""
    X0 = ba.points_initial if classical else None
    from_points = dm is None
    if from_points:
        dm = points_depth_maps(used, lm, ba, person)
        lap("depth")
    photometric: dict = {}
    if cfg.tracks.enabled:
        ba, rerun = refine_with_tracks(used, lm, dm, ba, cfg, photometric, echo, lap)
        if rerun and from_points:
            dm = points_depth_maps(used, lm, ba, person)
            lap("depth")
    X1, rep0, rep1 = landmark_reprojection(used, lm, dm, poses0, X0, ba, classical)
    if cfg.stereo.enabled:
        dm = refine_with_stereo(used, dm, ba, cfg, photometric, echo)
        lap("stereo")
    return dm, ba, photometric, X1, rep0, rep1


def _checked(frames: FrameSet, used: FrameSet, ba, cloud, mesh, X1, lm, cfg: SolveConfig,
             echo):
    """The whole-solve checks: InputError (nothing written) when one fails, unless
    ``cfg.keep_unreliable``, which warns and goes on."""
    checks = check_result(used, ba, cloud, mesh, cfg, motion_check_meshes(used, cfg, echo),
                          X1, lm.ids)
    if checks.problems and not cfg.keep_unreliable:
        raise InputError(f"{frames.path}: the result is not reliable, nothing written: "
                         f"{'; '.join(checks.problems)} (--keep-unreliable writes it, marked)")
    for p in checks.problems:
        warn(echo, f"unreliable result: {p}")
    return checks


def solve_frames(frames: FrameSet, cfg: SolveConfig, echo=None,
                 reading: KeyframeFinder | None = None) -> SolveResult:
    """Run every stage on ``frames`` (no files written; see :func:`run_solve`); ``reading``:
    the finder that chose a video's keyframes as it was read (``frames`` are those)."""
    lap = _Clock()
    nets = load_stage_networks(frames, cfg)  # first: option errors before any work
    lap("load")
    frames_in = frames
    frames, with_face = find_faces_and_crop(frames, cfg, echo, reading)
    lap("faces")
    lm, keep, joint = _landmarks(frames, cfg, nets, echo)  # joint: the keyframes
    lap("landmarks")
    factorised = None
    if cfg.poses_init == "landmarks":  # needs only the tracks: may drop frames before depth
        factorised, placed = factorised_start(frames, joint, lm, cfg, echo)
        keep, joint = keep & ~(joint & ~placed), placed
        lap("poses")
    used, lm_all, lm = frames.select(joint), lm, lm.select(joint)
    person = person_region(used, cfg)  # None unless the person mask is on
    lap("faces")
    dm = within(make_depth_maps(frames, joint, used, lm, cfg, nets), person)
    lap("depth")
    gt = None if frames.sequence is None else frames.sequence.cam_T_world[joint]
    poses0 = initial_poses(used, cfg, nets, gt, factorised)
    if cfg.poses_init != "landmarks":
        lap("poses")
    used, ba, poses0, classical, focal = _adjusted(used, lm, dm, poses0, cfg, echo, person,
                                                   lap)
    dm, ba, photometric, X1, rep0, rep1 = _refined(used, lm, dm, poses0, ba, classical, cfg,
                                                   person, echo, lap)
    cloud, mesh = fuse(used, dm, ba, cfg, lap)
    checks = _checked(frames, used, ba, cloud, mesh, X1, lm, cfg, echo)
    lap("checks")
    registration = None
    if not np.array_equal(joint, keep):  # the other frames, registered to the keyframes
        keep, registration, used, lm, poses0, ba, rep0, rep1 = register_others(
            frames, keep, joint, used, lm_all, dm, poses0, ba, X1, rep0, rep1, cfg, echo)
        gt = None if frames.sequence is None else frames.sequence.cam_T_world[keep]
        lap("register")
    kept = with_face.copy()  # of the frames read
    kept[with_face] = keep
    kept = frames_in.in_input(kept)  # of the input's frames
    res = SolveResult(used, kept, lm, dm, poses0, gt, ba, X1, rep0, rep1, cloud, mesh,
                      lap.timings, None, cfg, photometric=photometric, checks=checks,
                      focal=focal, keyframes=None if registration is None else joint[keep],
                      registration=registration)
    if cfg.evaluate and frames.sequence is not None:
        res.evaluation = evaluate_against_gt(frames.sequence, kept, poses0, ba.poses, X1,
                                             lm.ids, cloud.points, mesh.vertices,
                                             mesh_faces=mesh.faces if cfg.evaluate_now
                                             else None)
        lap("evaluate")
    return res


def run_solve(input_path, out, cfg: SolveConfig | None = None, overwrite: bool = False,
              focal: float | None = None, intrinsics: str | None = None,
              echo=print, html: bool = True) -> SolveResult:
    """Read ``input_path``, run :func:`solve_frames` and write the output folder ``out``
    atomically (cloud.ply, mesh.ply, mesh.obj, cameras.json, colmap/, report.json,
    report.html). Nothing is left at ``out`` when any step fails. ``cfg``: default
    :class:`SolveConfig`."""
    cfg = SolveConfig() if cfg is None else cfg
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output path is a file, not a folder: {out}")
    if out.exists() and not overwrite:
        raise InputError(f"output folder exists: {out} (pass --overwrite to replace it)")
    check_writable(out)
    t0 = time.perf_counter()
    reading = None
    if is_video(input_path) and cfg.face_crop != "off" and cfg.keyframe_deg > 0:
        # faces found and keyframes chosen while decoding: only the keyframes are held
        with KeyframeFinder(cfg.keyframe_deg) as reading:
            frames = load_input(input_path, focal=focal, intrinsics=intrinsics,
                                video_keep=reading)
        frames = replace(frames, face_mesh=reading.meshes)
    else:
        frames = load_input(input_path, focal=focal, intrinsics=intrinsics)
    if frames.sequence is not None and frames.K_source == "option" and \
            not np.allclose(frames.K, frames.sequence.K):
        warn(echo, f"--focal/--intrinsics replace the sequence's own K (focal "
                   f"{frames.sequence.K[0, 0]:g} px, principal point "
                   f"{frames.sequence.K[0, 2]:g}, {frames.sequence.K[1, 2]:g}) with focal "
                   f"{frames.K[0, 0]:g} px, principal point {frames.K[0, 2]:g}, "
                   f"{frames.K[1, 2]:g}")
    spaced = [n for n in frames.names if colmap_name(n) != n]
    if spaced:
        warn(echo, f"COLMAP's text format cannot hold white space in image names: colmap/ "
                   f"names {len(spaced)} frame(s) with '_' instead (e.g. {spaced[0]!r} -> "
                   f"{colmap_name(spaced[0])!r}); cameras.json keeps the names")
    t_in = time.perf_counter() - t0
    res = solve_frames(frames, cfg, echo=echo, reading=reading)
    res.input_sha256 = frames_digest(frames.images)
    res.timings = {"input": t_in, **res.timings}
    t1 = time.perf_counter()

    def final_timings():  # the reports' own writing is the only part they do not count
        res.timings["outputs"] = time.perf_counter() - t1
        res.timings["total"] = time.perf_counter() - t0

    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_outputs(tmp, res, html=html, before_reports=final_timings)
    res.out = out
    return res
