"""Benchmark: the focal length estimated when nothing gives it, beside the true and the
guessed focal length.

Each built-in face (seeds ``--faces``) is rendered on the paper's sweep (61 frames, yaw
-60..60 deg, 384x384) at focal lengths ``--focals`` px, each with the camera as far away
as the focal length in px is in mm, so that the head fills the frame alike and only the
perspective differs (300 px at 300 mm: a phone at arm's length; 900 px at 900 mm: a longer
lens further away). Each render is pasted whole, centred, into a 480x640 portrait frame over
a photograph (scikit-image's ``coffee``), so that the front end finds, crops and converts K as
for a real capture. Each capture is solved (the shipped built-in detector unless
``--landmark-checkpoint`` names another, ``--preset fast`` unless ``--preset`` says) three
ways (``--ways`` picks some):

* ``given``: the true K (``--intrinsics``);
* ``guessed``: no K and the estimate off (the default guess, 1.2 x 640 = 768 px);
* ``estimated``: no K, the focal length estimated from photometric point tracks
  (:mod:`facesfm.solvers.focal`).

Printed and recorded: the focal length used and its error, mean rotation error after a
similarity alignment to the ground truth, the cloud's mean distance to the true surface (ICP
with scale, started from the written cameras' similarity to the true ones) and at the cameras'
scale, seconds; the ratio of each to ``given``. Writes bench/results/focal.{json,md}
(``--stem`` names another).

    PYOPENGL_PLATFORM=osmesa .venv/bin/python bench/focal.py [--faces 0,1,2] [--focals 300,500,900]
        [--preset accurate] [--set focal.kernel_px=1.0] [--stem focal_accurate]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np
from common import num, run_meta, score_written_solve, write_results

from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.faces.builtin import BuiltinFaceModel
from facesfm.render.composite import composite_capture
from facesfm.render.config import RenderConfig, TrajectoryConfig
from facesfm.render.writer import render_sequence
from facesfm.solve.config import build_solve_config
from facesfm.solve.pipeline import run_solve

REPO = Path(__file__).resolve().parents[1]
WAYS = ("given", "guessed", "estimated")
FRAME = (480, 640)  # portrait
# the 384 px render's top-left: centred, so that the true principal point is the frame's
# centre, as the guess and the estimate assume (an off-centre paste moves it: 72 px off at
# (60, 200) cost 4-5 degrees of rotation whatever the focal length)
OFFSET = ((FRAME[0] - 384) // 2, (FRAME[1] - 384) // 2)


def _solve(seq: Path, capture, way: str, out: Path, detector: str = "builtin",
           preset: str = "fast", sets=()) -> dict:
    gt = load_sequence(seq)
    cfg = build_solve_config(preset=preset, landmark_checkpoint=detector, keep_unreliable=True,
                             sets=[f"focal.enabled={str(way == 'estimated').lower()}",
                                   *sets])
    K = capture.K
    intr = f"{K[0, 0]},{K[0, 2]},{K[1, 2]}" if way == "given" else None
    said: list[str] = []
    t0 = time.perf_counter()
    try:
        run_solve(capture.path, out, cfg, intrinsics=intr, echo=said.append, html=False)
    except InputError as e:
        return {"status": "refused", "why": str(e), "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    return {**score_written_solve(out, gt), "seconds": seconds, "warnings": said}


def markdown(rows: list, meta: dict, note: str = "") -> str:
    given = {(r["face"], r["focal_true"]): r for r in rows if r["way"] == "given"}
    detector = meta.get("detector", "builtin")
    md = ["# The focal length: given, guessed, estimated", "",
          (f"Built-in faces {meta['faces']}, the paper's sweep (61 frames, 384 px) rendered at "
           f"each true focal length with the camera as many mm away as the focal length has "
           f"px, pasted whole into {FRAME[0]}x{FRAME[1]} portrait frames over scikit-image's "
           f"`coffee` (the front end crops and converts K); detector `{detector}`, "
           f"`--preset {meta.get('preset', 'fast')}`"
           f"{''.join(f' `--set {x}`' for x in meta.get('sets', []))}. Rotation: mean error after a "
           f"similarity alignment; cloud: mean distance to the true surface after ICP with "
           f"scale (`cloud mm`) and at the cameras' scale (`fixed`). `x given`: ratio to the "
           f"same capture solved with the true K."),
          "", ("| face | true f px | K | result | f used px | f error | rotation deg "
               "| x given | cloud mm | x given | fixed mm | s |"),
          "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['face']} | {r['focal_true']:.0f} | {r['way']} |"
        if r["status"] == "unreliable":  # written only because the bench keeps everything
            head += " refused: " + "; ".join(r["problems"]).split(" (")[0] + " |"
        else:
            head += " written |"
        if r["status"] == "refused":
            md.append(f"| {r['face']} | {r['focal_true']:.0f} | {r['way']} | refused: "
                      f"{r['why']} | | | | | | | | {r['seconds']:.1f} |")
            continue
        g = given.get((r["face"], r["focal_true"]), {})
        rr = r["rotation_mean_deg"] / g["rotation_mean_deg"] if g.get("rotation_mean_deg") \
            else None
        cr = (r["cloud_mm"] / g["cloud_mm"]) if r["cloud_mm"] and g.get("cloud_mm") else None
        ferr = r["focal_px"] / r["focal_true"] - 1
        mark = "" if r["focal_source"] == "estimated" or r["way"] != "estimated" else \
            f" ({r['focal_source']})"
        md.append(f"{head} {r['focal_px']:.0f}{mark} | {ferr:+.1%} | "
                  f"{r['rotation_mean_deg']:.2f} | {num(rr, '.2f')} | "
                  f"{num(r['cloud_mm'], '.2f')} | "
                  f"{num(cr, '.2f')} | {num(r['cloud_mm_fixed_scale'], '.2f')} | "
                  f"{r['seconds']:.1f} |")
    est = [r for r in rows if r.get("focal_source") == "estimated"]
    if est:
        errs = np.array([abs(r["focal_px"] / r["focal_true"] - 1) for r in est])
        md += ["", (f"Estimated focal length: median error {np.median(errs):.1%}, worst "
                    f"{errs.max():.1%} over the {len(est)} captures where it was estimated.")]
    failed = [r for r in rows if r.get("cloud_alignment_error")]
    if failed:
        md += ["", (f"`cloud mm` -: the ICP with scale shrank the cloud to nothing and "
                    f"refused it ({len(failed)} solves; see `cloud_alignment_error` in "
                    f"focal.json); `fixed mm` is the rigid ICP at the cameras' scale.")]
    md += ["", (f"Run {meta['time']} at {meta['commit']} on {meta['cpus']} cores, one solve "
                f"after the other (load {meta['load_average_1m']} at the end). {note}").strip()]
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", default="0,1,2", help="built-in face seeds")
    ap.add_argument("--focals", default="300,500,900", help="true focal lengths, px")
    ap.add_argument("--ways", default=",".join(WAYS), help="which of " + ", ".join(WAYS))
    ap.add_argument("--landmark-checkpoint", default="builtin",
                    help="the detector (a checkpoint path, or builtin / ict)")
    ap.add_argument("--preset", default="fast", choices=["fast", "accurate"],
                    help="the solve preset each capture is solved with")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a solve setting for every capture (as facesfm solve --set)")
    ap.add_argument("--stem", default="focal", help="write <stem>.{json,md}")
    ap.add_argument("--note", default="", help="a sentence for the table's foot")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = ap.parse_args()
    seeds = [int(s) for s in a.faces.split(",") if s]
    focals = [float(s) for s in a.focals.split(",") if s]
    rows = []
    from skimage import data

    with tempfile.TemporaryDirectory(prefix="focal_") as tmp:
        tmp = Path(tmp)
        for seed in seeds:
            mesh, coeffs = BuiltinFaceModel().sample(seed)
            for f in focals:
                case = tmp / f"face{seed}_f{f:.0f}"
                seq = case / "sequence"
                rc = RenderConfig(focal=f, trajectory=TrajectoryConfig(distance=f))
                render_sequence(mesh, seq, rc, seed=seed,
                                face_info={"source": "builtin", "seed": seed, "coeffs": coeffs})
                cap = composite_capture(seq, case / "capture", *FRAME, OFFSET, data.coffee(),
                                        head_only=False)
                for way in a.ways.split(","):
                    r = {"face": seed, "focal_true": f, "way": way,
                         **_solve(seq, cap, way, case / f"out_{way}", a.landmark_checkpoint,
                                 a.preset, a.sets)}
                    rows.append(r)
                    print(f"face {seed} | f {f:.0f} | {way}: {r['status']} "
                          f"f {r.get('focal_px', float('nan')):.0f} "
                          f"rot {r.get('rotation_mean_deg', float('nan')):.2f} "
                          f"cloud {r.get('cloud_mm')} {r['seconds']:.1f} s", flush=True)
    meta = run_meta(faces=seeds, focals=focals, detector=a.landmark_checkpoint,
                    preset=a.preset, sets=a.sets)
    write_results(a.out, a.stem, {"meta": meta, "rows": rows}, markdown(rows, meta, a.note))


if __name__ == "__main__":
    main()
