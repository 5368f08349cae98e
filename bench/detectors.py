"""Landmark detectors side by side on the plain and the realistic held-out sets.

    python bench/detectors.py CKPT [CKPT ...] [--names A,B] [--sets held_out,realistic]
                              [--data DIR] [--ict-dir DIR] [--tag TAG] [--threads 1]

Each checkpoint (a stage-1 checkpoint or shipped weights; ``shipped`` names the shipped ICT
detector) is measured on the same rendered frames of each set, so that the figures differ by
the detector only:

* ``held_out``: 20 ICT faces x 61 frames, master seed 3000, plain renders (the model card's
  held-out set);
* ``realistic``: 20 ICT faces x 61 frames, master seed 3500 (never used in training), with
  the ``realistic`` appearance preset: held-out photographs behind every face, a worse camera,
  harder light with a sheen, changed skin, more occluders
  (:data:`facesfm.render.config.REALISTIC_APPEARANCE`).

Sets are rendered into ``--data`` (kept, and reused when already there) or a temporary folder.
Prints mean / median / p95 px and visibility F1 per detector and set with the ratio to the
first detector, and writes bench/results/detectors[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import run_meta, write_results

from facesfm.eval.detector import DETECTOR_SETS, detector_errors, render_held_out

RESULTS = Path(__file__).resolve().parent / "results"
SETS = {k: DETECTOR_SETS["ict"][k] for k in ("held_out", "realistic")}
#: the targets a detector for real captures should meet on the realistic set
TARGET = {"lm_mean_px": 2.5, "vis_f1": 0.95}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--names", default=None, help="Comma-separated labels, one per checkpoint.")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--data", type=Path, default=None, help="Folder to keep the rendered sets.")
    ap.add_argument("--ict-dir", default=None)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from facesfm.weights import shipped_landmark_checkpoint

    ckpts = [shipped_landmark_checkpoint("ict") if c == "shipped" else Path(c)
             for c in args.checkpoints]
    names = args.names.split(",") if args.names else [str(c) for c in args.checkpoints]
    if len(names) != len(ckpts):
        ap.error("--names: one label per checkpoint")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    if set(sets) - set(SETS):
        ap.error(f"--sets: unknown {sorted(set(sets) - set(SETS))}; choose from {list(SETS)}")
    root = args.data or Path(tempfile.mkdtemp())
    rows = []
    for key in sets:
        spec, data = SETS[key], root / key
        if not (data / "dataset.json").is_file():
            t0 = time.perf_counter()
            render_held_out(spec, data, ict_dir=args.ict_dir, workers=2, progress=True)
            print(f"rendered {key} in {time.perf_counter() - t0:.0f} s", flush=True)
        for name, ck in zip(names, ckpts):
            t0 = time.perf_counter()
            m = detector_errors(ck, data)
            rows.append({"set": key, "protocol": spec.to_dict(), "detector": name,
                         "checkpoint": str(ck), "seconds": time.perf_counter() - t0, **m})
            print(f"{key} {name}: mean {m['lm_mean_px']:.3f} px, median "
                  f"{m['lm_median_px']:.3f}, p95 {m['lm_p95_px']:.3f}, F1 {m['vis_f1']:.4f}",
                  flush=True)
    stem = "detectors" + (f"_{args.tag}" if args.tag else "")
    md = _markdown(rows, names)
    write_results(RESULTS, stem, {"meta": run_meta(threads=args.threads), "target": TARGET,
                                  "rows": rows}, md)
    print(md)
    return 0


def _markdown(rows: list[dict], names: list[str]) -> str:
    lines = [
        "# Landmark detectors on the plain and the realistic held-out sets",
        "",
        ("ICT faces rendered with master seeds never used in training, 384x384, focal 500 px, "
         "yaw -60..60, 20 faces x 61 frames per set; errors in frame pixels over the visible "
         "landmarks (bench/detectors.py). `held_out` is plain (our backgrounds, one camera, "
         "key and fill light); `realistic` has the held-out photographs, a worse camera, harder "
         "light with a sheen, changed skin and occluders. Ratios are to the first detector on "
         f"the same frames. Target on `realistic`: mean <= {TARGET['lm_mean_px']} px, "
         f"F1 >= {TARGET['vis_f1']}."),
        "",
        "| set | detector | mean px | median px | p95 px | vis F1 | mean / first |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        first = next(x for x in rows if x["set"] == r["set"] and x["detector"] == names[0])
        lines.append(
            f"| {r['set']} | {r['detector']} | {r['lm_mean_px']:.2f} | {r['lm_median_px']:.2f} "
            f"| {r['lm_p95_px']:.2f} | {r['vis_f1']:.4f} "
            f"| {r['lm_mean_px'] / first['lm_mean_px']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
