"""``facesfm demo`` (what ``make demo`` runs): render a built-in face sequence, solve it with
the shipped weights, and print how close the result is to the ground truth.

Needs no shared data: the face comes from :class:`facesfm.faces.builtin.BuiltinFaceModel` and
the landmark detector is the shipped built-in one (:mod:`facesfm.weights`). The shipped depth
and pose networks were trained on ICT-FaceKit faces only (and the detector-only path is the
more accurate one on held-out faces today), so the solve runs on the detector alone: initial poses
from a factorisation of the detected landmark tracks, a classical bundle adjustment of poses
and landmark points, and depth maps interpolated from the adjusted landmarks
(``facesfm solve --poses-init landmarks --depth landmarks``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facesfm.render.config import RenderConfig

__all__ = ["run_demo"]


def run_demo(out: str | Path = "out/demo", seed: int = 0, overwrite: bool = True,
             solve: bool = True, echo=print):
    """Render a 61-frame 384x384 yaw sweep (-60..+60 degrees every 2) of the built-in face
    with seed ``seed`` into ``out/sequence``, then (``solve``) run ``facesfm solve`` on it
    with the shipped detector into ``out/solve`` and print its accuracy against the ground
    truth. Returns (SequenceResult, SolveResult or None)."""
    from facesfm.faces.builtin import BuiltinFaceModel
    from facesfm.render.writer import render_sequence

    out = Path(out)
    seq_dir = out / "sequence"
    t0 = time.perf_counter()
    mesh, coeffs = BuiltinFaceModel().sample(seed)
    t_face = time.perf_counter() - t0
    cfg = RenderConfig()
    res = render_sequence(mesh, seq_dir, cfg, seed=seed, overwrite=overwrite,
                          face_info={"source": "builtin", "name": mesh.name, "seed": seed,
                                     "coeffs": coeffs})
    vis = res.visible_per_frame
    echo(f"facesfm demo: built-in face (seed {seed}), {len(mesh.vertices)} vertices, "
         f"made in {t_face:.1f} s")
    echo(f"rendered {res.frames} frames {cfg.width}x{cfg.height} (yaw "
         f"{cfg.trajectory.yaw_min:+.0f}..{cfg.trajectory.yaw_max:+.0f} deg) with all ground "
         f"truth in {res.seconds:.1f} s ({res.frames / res.seconds:.1f} frames/s)")
    echo(f"visible landmarks per frame (of {cfg.landmarks}): min {vis.min()}, "
         f"mean {np.mean(vis):.1f}, max {vis.max()}")
    from facesfm.render.preview import contact_sheet

    preview = contact_sheet(seq_dir, seq_dir / "preview.png", n_frames=5)
    echo(f"sequence: {seq_dir}/ (sequence.json, rgb/, depth/, mask/, landmarks.npz, mesh.ply, "
         f"colmap/); preview {preview}")
    if not solve:
        return res, None
    return res, _solve(seq_dir, out / "solve", overwrite, echo)


def _solve(seq_dir: Path, out: Path, overwrite: bool, echo):
    from facesfm.eval.metrics import landmark_errors
    from facesfm.eval.results import SolveEvaluation
    from facesfm.solve.config import SolveConfig
    from facesfm.solve.pipeline import run_solve
    from facesfm.solve.stereo import StereoConfig
    from facesfm.solve.tracks import TrackConfig
    from facesfm.weights import shipped_landmark_checkpoint

    ckpt = shipped_landmark_checkpoint("builtin")
    cfg = SolveConfig(landmark_checkpoint=str(ckpt), poses_init="landmarks", depth="landmarks",
                      tracks=TrackConfig(enabled=True), stereo=StereoConfig(enabled=True))
    echo(f"solving with the shipped detector {ckpt.name} (landmarks -> factorisation and "
         f"mean-face starts -> bundle adjustment -> photometric tracks -> bundle adjustment again -> landmark "
         f"depth -> photometric depth refinement -> fusion) ...")
    sr = run_solve(seq_dir, out, cfg, overwrite=overwrite, echo=echo)
    ev = sr.evaluation or SolveEvaluation()
    lm = sr.landmarks
    gt_uv = sr.frames.sequence.uv[sr.kept][:, lm.ids]
    gt_vis = sr.frames.sequence.visible[sr.kept][:, lm.ids]
    both = (lm.weight > 0) & gt_vis
    err = landmark_errors(lm.uv, gt_uv, both)
    echo(f"landmarks: {lm.uv.shape[1]} per frame, error {err.mean:.2f} px mean / "
         f"{err.median:.2f} px median over {both.sum()} detections that are visible")
    pi, po = ev.poses_initial, ev.poses_optimised
    if pi is not None and po is not None:
        echo(f"camera rotation error vs ground truth (after a similarity alignment): "
             f"{pi.rotation_deg.mean():.2f} deg initial ({sr.ba.start.split(' + ')[0]}) -> "
             f"{po.rotation_deg.mean():.2f} deg after bundle adjustment "
             f"(BA {sr.ba.iterations} iterations, {sr.ba.rms_px:.2f} px RMS)")
    c, c_lm = ev.cloud, ev.cloud_landmark_scale
    if c is not None:
        echo(f"fused cloud to the ground-truth surface after ICP: {c.mean:.2f} mm mean, "
             f"{c.median:.2f} mm median ({c.n} points)")
    elif "alignment" in ev.errors:
        echo(f"fused cloud: no accuracy figure with a free ICP scale "
             f"({ev.errors['alignment']})")
    if c_lm is not None:
        echo(f"  at the landmarks' scale (rigid ICP): {c_lm.mean:.2f} mm mean, "
             f"{c_lm.median:.2f} mm median")
    total = sr.timings.get("total", float("nan"))
    echo(f"solve took {total:.1f} s; outputs in {out}/: cloud.ply, mesh.ply, mesh.obj, "
         f"cameras.json, colmap/, report.json, report.html")
    return sr
