"""Benchmark: the face front end on captures made from our renders, beside the same faces
solved from their sequence folders, with our detector and with MediaPipe's face mesh as the
landmark source.

Each face (``--face builtin`` or ``ict``, seeds ``--faces``) is rendered on the paper's sweep
(61 frames, yaw -60..60 deg, 384x384, f = 500 px) or, with ``--path pitch``, on the same
sweep tilting from 15 deg below to 15 deg above the head, with irregular steps (each yaw
+-0.3 of a step) and +-3 deg of roll; it is solved with the shipped detector of that face
model and no other network, with the solve preset ``--preset`` (``fast``: the landmarks
only; ``accurate``: point tracks and the plane sweep too) and any ``--set`` items, in these
cases:

* ``plain``: the sequence folder (no front end);
* ``pasted``: each render pasted whole, off-centre, into a 480x640 portrait frame over a
  photograph (scikit-image's ``coffee``), K given: the front end's geometry alone;
* ``head on photo``: only the head's pixels pasted over the photograph, K given: the
  landmarks meet a real background;
* ``head on photo, focal unknown``: the same without K (the default guess, 1.2 x 640 px,
  then the estimate). The solve takes the principal point at the frame's centre, and the
  render's is 72 px from it here, as in a cropped photograph;
* ``head on photo, centred, focal unknown``: the head pasted so that the render's principal
  point is the frame's centre, as in an uncropped photograph or video;
* ``head on photo, panned`` and ``head on photo, panned, focal unknown``: a camera that pans
  from -18 to +18 deg (and tilts up to 5.4 deg) about its own centre while the head turns,
  so that the head crosses a 960x640 landscape frame (principal point at its centre),
  pasted over the photograph (:func:`facesfm.render.composite.panned_capture`); its true
  cameras are the sequence's turned by the pan;
* ``head on photo, video`` and ``head on photo, centred, focal unknown, video``: those two
  captures as H.264 mp4 clips at 30 fps (``--frames 601``: a 20 s clip), solved from the
  keyframes the front end picks while decoding.

A solve that fails the solve's checks is refused (exit 2, nothing written) in use; here it is
written anyway (``keep_unreliable``) so that the table gives the figures of what the refusal
kept back, beside the reason.

each with the shipped built-in detector (``detector``) and with ``--landmarks-from
mediapipe``. Printed and recorded per case: written or refused (and why), frames used, mean
rotation error after a similarity alignment to the ground truth, the cloud's mean distance
to the true surface at the aligned scale and at the cameras' scale, completeness (2 mm)
(the solve's own evaluation, :func:`facesfm.eval.ground_truth.evaluate_against_gt`, run on
the written cameras and cloud of every case alike, its ICP started from the similarity
between the written and the true cameras), seconds; the rotation ratio to the same source's
``plain``. Writes bench/results/capture.{json,md}.

    PYOPENGL_PLATFORM=osmesa .venv/bin/python bench/capture.py [--faces 0,1,2]
        [--face ict --ict-dir DIR] [--path pitch] [--sources detector] [--stem capture_ict]
        [--preset accurate] [--set KEY=VALUE ...] [--frames 601]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

from common import num, run_meta, score_written_solve, write_results

from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.faces.builtin import BuiltinFaceModel
from facesfm.render.composite import composite_capture, panned_capture
from facesfm.render.config import RenderConfig, TrajectoryConfig
from facesfm.render.writer import render_sequence
from facesfm.solve.config import build_solve_config
from facesfm.solve.pipeline import run_solve

REPO = Path(__file__).resolve().parents[1]
CASES = ("plain", "pasted", "head on photo", "head on photo, focal unknown",
         "head on photo, centred, focal unknown", "head on photo, video",
         "head on photo, centred, focal unknown, video", "head on photo, panned",
         "head on photo, panned, focal unknown")
WIDE = (960, 640)  # landscape, for the panning camera
PAN_DEG = 18.0  # the camera's pan at the ends of the sweep (and 0.3 x that of tilt)
SOURCES = ("detector", "mediapipe")
FRAME = (480, 640)  # portrait
OFFSET = (60, 200)  # the 384 px render's top-left: off-centre
CENTRED = ((FRAME[0] - 384) // 2, (FRAME[1] - 384) // 2)  # its principal point at the centre
PATHS = {"sweep": TrajectoryConfig(),
         "pitch": TrajectoryConfig(pitch=-15.0, pitch_end=15.0, yaw_jitter=0.3,
                                   roll_jitter=3.0)}


def _video(folder: Path, out: Path) -> Path:
    """The frames of the image folder ``folder`` as an H.264 mp4 at 30 fps (a phone's
    rate: 601 frames are a 20 s clip)."""
    import imageio.v3 as iio
    import numpy as np
    from PIL import Image

    names = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in names])
    iio.imwrite(out, frames, fps=30, codec="libx264", quality=8)
    return out


def _inputs(seq: Path, tmp: Path, cases=CASES) -> dict[str, tuple[Path, str | None]]:
    """Each case's input folder (or clip) and ``--intrinsics`` (None: the sequence's own K,
    or the default guess for an image folder or video); the composites are written once per
    face, the clips only where a video case is asked for."""
    from skimage import data

    whole = composite_capture(seq, tmp / "pasted", *FRAME, OFFSET, data.coffee(),
                              head_only=False)
    head = composite_capture(seq, tmp / "head", *FRAME, OFFSET, data.coffee(), head_only=True)
    centred = composite_capture(seq, tmp / "centred", *FRAME, CENTRED, data.coffee(),
                                head_only=True)

    def given(K):
        return f"{K[0, 0]},{K[0, 2]},{K[1, 2]}"

    out = {"plain": (seq, None), "pasted": (whole.path, given(whole.K)),
           "head on photo": (head.path, given(head.K)),
           "head on photo, focal unknown": (head.path, None),
           "head on photo, centred, focal unknown": (centred.path, None)}
    if any("panned" in c for c in cases):
        t = np.linspace(-1, 1, len(load_sequence(seq)))
        pan = panned_capture(seq, tmp / "panned", *WIDE, PAN_DEG * t,
                             0.3 * PAN_DEG * np.sin(np.pi * t), data.coffee())
        out["head on photo, panned"] = (pan.path, given(pan.K), pan.cam_T_world)
        out["head on photo, panned, focal unknown"] = (pan.path, None, pan.cam_T_world)
    if "head on photo, video" in cases:
        out["head on photo, video"] = (_video(head.path, tmp / "head.mp4"), given(head.K))
    if "head on photo, centred, focal unknown, video" in cases:
        out["head on photo, centred, focal unknown, video"] = (
            _video(centred.path, tmp / "centred.mp4"), None)
    return out


def _case(seq: Path, src: Path, intr: str | None, out: Path, source: str, face: str,
          preset: str = "fast", sets=(), capture_poses=None) -> dict:
    gt = load_sequence(seq)
    lm = ({"landmark_checkpoint": face} if source == "detector"
          else {"landmarks_from": "mediapipe"})
    # written even when a check fails, so that the table shows what a refusal kept back
    cfg = build_solve_config(preset=preset, keep_unreliable=True, sets=sets, **lm)
    said: list[str] = []
    t0 = time.perf_counter()
    try:
        run_solve(src, out, cfg, intrinsics=intr, echo=said.append, html=False)
    except InputError as e:
        return {"status": "refused", "why": str(e).split(": ", 1)[-1],
                "seconds": time.perf_counter() - t0, "warnings": said}
    seconds = time.perf_counter() - t0
    r = score_written_solve(out, gt, capture_poses)
    r["status"] = "written" if r["status"] == "ok" else "unreliable"
    return {**r, "seconds": seconds, "warnings": said}


def _why(msg: str) -> str:
    """A refusal in a table cell: the problem, without the sentence around it."""
    msg = msg.replace("the result is not reliable, nothing written: ", "")
    msg = msg.split(" (--keep-unreliable")[0]
    return msg.split("; worst")[0] + ")" if "; worst" in msg else msg



def markdown(rows: list, meta: dict, note: str = "") -> str:
    seeds = meta["faces"]
    model = {"builtin": "Built-in", "ict": "ICT-FaceKit"}[meta.get("face", "builtin")]
    path = ("the paper's sweep" if meta.get("path", "sweep") == "sweep" else
            "the sweep tilting from -15 to +15 deg pitch, irregular steps (+-0.3 of a step), "
            "+-3 deg roll")
    plain = {(r["face"], r["source"]): r for r in rows if r["case"] == "plain"}
    md = ["# The face front end on captures made from our renders", "",
          (f"{model} faces {seeds}, {path} ({meta.get('frames', 61)} frames, 384 px, "
           f"f = 500 px), "
           f"landmarks from the shipped {meta.get('face', 'builtin')} detector or from "
           f"MediaPipe's face mesh, no other network, `--preset {meta.get('preset', 'fast')}`"
           f"{''.join(f' `--set {x}`' for x in meta.get('sets', []))}. Captures: "
           f"{FRAME[0]}x{FRAME[1]} portrait frames, render at {OFFSET}, over scikit-image's "
           f"`coffee`"
           + (f"; the panned cases: {WIDE[0]}x{WIDE[1]} landscape frames, the camera "
              f"panning -{PAN_DEG:g} to +{PAN_DEG:g} deg about its centre (the head crossing "
              f"the frame), the true cameras turned with it"
              if any("panned" in r["case"] for r in rows) else "")
           + ". Rotation: mean error after a similarity alignment to the ground truth. "
           "Cloud: mean distance to the true surface after ICP with scale (`cloud mm`) and "
           "at the cameras' scale (`fixed`), ICP started from the written cameras' "
           "similarity to the true ones (every case alike); completeness: share of the true "
           "surface within 2 mm; shape: the landmark points' RMS distance from the mean face "
           "after a similarity fit (the solve's `face_shape_mm` check)."),
          "", ("| face | landmarks | case | result | frames | rotation deg | x plain | cloud mm "
               "| fixed | complete | shape mm | focal px | s |"),
          "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['face']} | {r['source']} | {r['case']} |"
        if r["status"] != "refused":
            p = plain.get((r["face"], r["source"]), {}).get("rotation_mean_deg")
            ratio = f"{r['rotation_mean_deg'] / p:.2f}" if p else "-"
            res = ("written" if r["status"] == "written"
                   else "refused: " + "; ".join(_why(p) for p in r["problems"]))
            md.append(f"{head} {res} | {r['frames']} | {r['rotation_mean_deg']:.2f} | "
                      f"{ratio} | {num(r['cloud_mm'], '.2f')} | "
                      f"{num(r['cloud_mm_fixed_scale'], '.2f')} | "
                      f"{num(r['completeness'], '.2f')} | "
                      f"{num(r.get('face_shape_mm'), '.1f')} | {r['focal_px']:.0f} | "
                      f"{r['seconds']:.1f} |")
        else:
            md.append(f"{head} refused: {_why(r['why'])} | - | - | - | - | - | - | - | - | "
                      f"{r['seconds']:.1f} |")
    md += ["", (f"Run {meta['time']} at {meta['commit']} on {meta['cpus']} cores, one case "
                f"after the other (load {meta['load_average_1m']} at the end). {note}").strip()]
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", default="0,1,2", help="face seeds")
    ap.add_argument("--face", default="builtin", choices=["builtin", "ict"],
                    help="face model (and shipped detector)")
    ap.add_argument("--ict-dir", default=None, help="ICT-FaceKit folder [default: found]")
    ap.add_argument("--path", default="sweep", choices=sorted(PATHS))
    ap.add_argument("--frames", type=int, default=61,
                    help="frames over the sweep (601: a 20 s clip at 30 fps)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="landmark sources")
    ap.add_argument("--cases", default=";".join(CASES), help="';'-separated, of CASES")
    ap.add_argument("--preset", default="fast", choices=["fast", "accurate"],
                    help="the solve preset every case is solved with")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a solve setting for every case (as facesfm solve --set)")
    ap.add_argument("--stem", default="capture", help="bench/results/<stem>.{json,md}")
    ap.add_argument("--note", default="", help="a sentence for the table's foot")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = ap.parse_args()
    seeds = [int(s) for s in a.faces.split(",") if s]
    cases = [c.strip() for c in a.cases.split(";") if c.strip()]
    if set(cases) - set(CASES):
        ap.error(f"--cases: unknown {sorted(set(cases) - set(CASES))}")
    if a.face == "ict":
        from facesfm.faces.ict import ICTFaceModel
        from facesfm.paths import find_ict_dir

        model = ICTFaceModel(find_ict_dir(a.ict_dir))
    else:
        model = BuiltinFaceModel()
    rows = []
    with tempfile.TemporaryDirectory(prefix="capture_") as tmp:
        tmp = Path(tmp)
        for seed in seeds:
            mesh, coeffs = model.sample(seed)
            seq = tmp / f"face{seed}" / "sequence"
            traj = replace(PATHS[a.path], frames=a.frames)
            render_sequence(mesh, seq, RenderConfig(trajectory=traj), seed=seed,
                            face_info={"source": a.face, "seed": seed, "coeffs": coeffs})
            inputs = _inputs(seq, tmp / f"face{seed}", cases)
            for source in a.sources.split(","):
                for case in cases:
                    src, intr, *truth = inputs[case]
                    out = tmp / f"face{seed}" / f"out_{case}_{source}".replace(" ", "_")
                    r = {"face": seed, "source": source, "case": case,
                         **_case(seq, src, intr, out, source, a.face, a.preset, a.sets,
                                 *truth)}
                    rows.append(r)
                    print(f"face {seed} | {source} | {case}: {r['status']}",
                          r.get("rotation_mean_deg"), r.get("cloud_mm"), r.get("why", ""),
                          f"{r['seconds']:.1f} s", flush=True)
    meta = run_meta(faces=seeds, face=a.face, path=a.path, preset=a.preset, sets=a.sets,
                    frames=a.frames)
    write_results(a.out, a.stem, {"meta": meta, "rows": rows}, markdown(rows, meta, a.note))


if __name__ == "__main__":
    main()
