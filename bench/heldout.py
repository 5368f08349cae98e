"""The full ``facesfm solve`` on held-out faces, method by method, against the truth.

    python bench/heldout.py [--face ict] [--subjects 20] [--seed 3000] [--data DIR]
                            [--sfm CKPT | --no-sfm] [--appearance realistic]
                            [--landmark-checkpoint CKPT]

Renders ``--subjects`` faces (master seed ``--seed``, never used in training: training and
validation used 1000-1100 / 2000-2100) as in the paper (61 frames, yaw -60..60 every 2
degrees, 384x384, focal 500 px), unless ``--data`` already holds them, plain or with an
appearance preset (``--appearance realistic``: held-out photographs behind the faces, a worse
camera, harder light, changed skin, occluders; the realistic held-out set uses seed 3500),
then solves each with the shipped detector of that face source (or
``--landmark-checkpoint``) and, method by method:

* ``ours, full``: depth network + BA layer (classical, from the landmark factorisation) +
  fusion of the network depth maps (needs the depth/pose networks: ``--sfm``, default the
  shipped ``sfm_ict.pt`` for ICT faces);
* ``ours, without BA``: depth network + PoseNet's learned poses, no bundle adjustment;
* ``ours, detector only``: no depth or pose network: factorisation + BA, depth maps
  interpolated from the adjusted landmarks;
* ``... --tracks --stereo`` (``full_photo``, ``detector_photo``): the same, then the BA again
  with photometric point tracks beside the landmarks, and the depth maps refined by a
  photometric plane sweep before fusion;
* ``... --person-mask on``: the depth maps' masks (landmark hulls) cut to MediaPipe's selfie
  segmentation of the person (on by default for photo folders and videos, not for sequence
  folders);
* ``factorisation, 68 landmarks``: Tomasi-Kanade on the first 68 landmarks, no BA, depth
  interpolated from the triangulated landmarks (the paper's related work [14]);
* ``COLMAP/Ceres``: triangulation + Ceres BA via pycolmap on the same detected landmarks,
  initialised by the factorisation (poses only: it makes no dense surface).

Per face: mean rotation error over frames after a similarity alignment of the trajectory, and
the fused cloud's distance to the GT surface after landmark + ICP alignment (mm), with a free
ICP scale and again at the landmarks' scale (rigid ICP). The paper's
published errors (its own data) are quoted in their own column.

Writes bench/results/heldout_<face>.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from facesfm.data.dataset import find_sequences
from facesfm.errors import InputError
from facesfm.eval.detector import HeldOut, render_held_out
from facesfm.io import atomic_path, write_json
from facesfm.solve.config import with_settings
from facesfm.solve.methods import (
    BA_START,
    COLMAP,
    DETECTOR_ONLY,
    METHOD_LABELS,
    method_configs,
    solve_methods,
    summarise,
)
from facesfm.weights import shipped_landmark_checkpoint, shipped_sfm_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_FULL_MM = "4.26 (Stirling) / 7.09 (FaceScape)"
DEFAULT_METHODS = ("full", "no_ba", "detector", "tk68")


def markdown(args, detector: str, sfm, order: list, summary: dict, rows: list) -> str:
    """The results table, and how to read it."""
    methods = [m for m in order if m not in (BA_START, COLMAP)]

    def cell(name, k, stat, digits=2):
        v = summary[name].get(k, stat)
        return "–" if v is None else f"{v:.{digits}f}"

    lines = [
        f"# `facesfm solve` on {args.subjects} held-out {args.face} faces (bench/heldout.py)",
        "",
        (f"Seed {args.seed}, 61 frames each, 384x384, focal 500 px, "
        f"{'plain renders' if args.appearance is None else 'appearance preset ' + repr(args.appearance)}, "
        f"detector `{detector}`, depth/pose networks `{Path(sfm).name if sfm else 'none'}`"
        f"{''.join(f', `--set {x}`' for x in args.sets)}. Rotation: "
        "mean over frames after a similarity alignment of the trajectory (mean / median over "
        "faces); cloud: the fused cloud's distance to the GT surface after landmark + ICP "
        "alignment, mean over points (mean / median over faces)."),
        "",
        ("| method | rotation (deg) | cloud mean (mm) | cloud median (mm) "
        "| cloud mean, landmark scale (mm) | ICP scale / landmark scale | completeness "
        "| NoW median (mm) | NoW metric median (mm) "
        "| solve (s) | solve failed / cloud unusable | paper, not measured on our data (mm) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        paper = PAPER_FULL_MM if name.startswith("ours, full") else ""
        lines.append(
            f"| {name} | {cell(name, 'rot_deg', 'mean')} / {cell(name, 'rot_deg', 'median')} "
            f"| {cell(name, 'cloud_mean_mm', 'mean')} / {cell(name, 'cloud_mean_mm', 'median')} "
            f"| {cell(name, 'cloud_median_mm', 'mean')} "
            f"/ {cell(name, 'cloud_median_mm', 'median')} "
            f"| {cell(name, 'cloud_ls_mean_mm', 'mean')} "
            f"/ {cell(name, 'cloud_ls_mean_mm', 'median')} "
            f"| {cell(name, 'icp_scale_ratio', 'mean', 3)} "
            f"| {cell(name, 'completeness', 'mean')} "
            f"| {cell(name, 'now_median_mm', 'mean')} "
            f"| {cell(name, 'now_metric_median_mm', 'mean')} "
            f"| {cell(name, 'seconds', 'mean')} "
            f"| {summary[name].failures} ({summary[name].refused} refused) "
            f"/ {summary[name].no_cloud} | {paper} |")
    lines += ["", ("Refused: the solve's own checks found the result unreliable "
              "(`facesfm solve` exits 2 and writes nothing); its figures, kept here, are not in "
              "the means. Median motion disagreement of each solve (its cameras against the "
              "head's turning MediaPipe sees; refused above 10 deg), with its rotation error:"),
              ""]
    for name in methods:
        figs = [(r.sequence, r.figures(name)) for r in rows]
        pairs = sorted((f.motion_disagreement_deg, f.rot_deg, seq, f.refused is not None)
                       for seq, f in figs
                       if f is not None and f.motion_disagreement_deg is not None)
        lines.append(f"- {name}: " + ", ".join(
            f"{seq} {m:.1f} deg ({rot:.1f} deg off{', refused' if ref else ''})"
            for m, rot, seq, ref in pairs[::-1]))
    lines += ["", ("Completeness: the share of the GT face surface the cameras saw (GT depth in "
              "the GT face masks of the used frames) that has a cloud point within 2 mm after "
              "alignment (mean over faces)."),
              "", ("NoW: the NoW benchmark's protocol on the solve's mesh (facesfm.eval.now; "
              "the scan is the GT mesh within 100 mm of the nose tip, so surface the cameras "
              "did not see counts as error), median over scan points, mean over faces; "
              "metric: no scale from the landmarks. The solve times include it (2-4 s)."),
              "", ("Cloud unusable: the landmark + ICP alignment to the GT collapsed (the cloud "
              "spreads over less than a tenth of the face's size after alignment), so no cloud "
              "error is counted for that face."),
              "", ("Two alignment protocols. `cloud mean`: landmark similarity, then ICP with a "
              "free scale. `landmark scale`: the same start, then rigid ICP at the scale of the "
              "landmarks, which cannot shrink the cloud; a free ICP scale pulls a noisy cloud "
              "in, which lowers its error (the column `ICP scale / landmark scale`, mean over "
              "faces, says by how much). Faces whose free-scale alignment collapsed still have "
              "a landmark-scale figure."),
              "", ("`BA start` is the start of `ours, detector only` (poses only): the "
              "factorisation or the mean face's per-frame poses, whichever the BA reached the "
              "lower cost from; the COLMAP row solves the same tracks from the factorisation "
              "(poses only). The paper's "
              "figures are its Table 2 errors on Stirling / FaceScape scans.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--face", default="ict", choices=["ict", "builtin"])
    ap.add_argument("--subjects", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--ict-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sfm", type=Path, default=None,
                    help="Stage-2 checkpoint [default: the shipped one for --face, if any].")
    ap.add_argument("--no-sfm", action="store_true", help="Leave out the network rows.")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"Comma-separated, of {list(METHOD_LABELS)}.")
    ap.add_argument("--appearance", default=None, choices=["varied", "realistic"],
                    help="Render the faces with this appearance preset [default: plain].")
    ap.add_argument("--landmark-checkpoint", type=Path, default=None,
                    help="Detector to solve with [default: the shipped one for --face].")
    ap.add_argument("--tag", default=None,
                    help="Write heldout_<face>_<tag>.{json,md} instead of heldout_<face>.")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a solve setting for every method (as facesfm solve --set)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    spec = HeldOut(args.face, args.seed, args.subjects, 61, appearance=args.appearance)
    data = args.data
    if data is None or not (data / "dataset.json").is_file():
        data = data or Path(tempfile.mkdtemp()) / "data"
        t0 = time.perf_counter()
        render_held_out(spec, data, ict_dir=args.ict_dir, workers=2, progress=True)
        print(f"rendered {args.subjects} faces in {time.perf_counter() - t0:.0f} s", flush=True)
    ckpt = args.landmark_checkpoint or shipped_landmark_checkpoint(args.face)
    sfm = args.sfm
    if sfm is None and not args.no_sfm:
        try:
            sfm = shipped_sfm_checkpoint(args.face)
        except InputError as e:
            print(f"no network rows: {e}", flush=True)
    try:
        methods = method_configs(ckpt, sfm, [k.strip() for k in args.methods.split(",")
                                             if k.strip()])
    except InputError as e:
        ap.error(f"--methods: {e}")
    if args.sets:
        methods = {k: with_settings(c, args.sets) for k, c in methods.items()}
    rows = solve_methods(find_sequences(data)[:args.subjects], methods, on_face=lambda i, row:
                         print(f"{i + 1}/{args.subjects} {row.summary_line()}", flush=True))
    order = list(methods) + ([BA_START, COLMAP] if DETECTOR_ONLY in methods else [])
    summary = summarise(rows, order)
    stem = f"heldout_{args.face}" + (f"_{args.tag}" if args.tag else "")
    write_json(RESULTS / f"{stem}.json",
               {"protocol": spec.to_dict(), "detector": ckpt.name,
                "sfm": None if sfm is None else Path(sfm).name, "sets": args.sets,
                "rows": [r.to_dict() for r in rows],
                "summary": {k: v.to_dict() for k, v in summary.items()}})

    text = markdown(args, ckpt.name, sfm, order, summary, rows)
    with atomic_path(RESULTS / f"{stem}.md") as tmp:
        Path(tmp).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
