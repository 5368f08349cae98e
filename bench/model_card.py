"""Ship the landmark detectors: export their weights into the package and write the model card
from measurements on held-out faces.

    python bench/model_card.py --builtin RUN_DIR --ict RUN_DIR [--ict-dir DIR] [--threads 1]

RUN_DIR is a ``facesfm train landmarks`` run folder (its checkpoints/last.pt is exported).
For each face source two held-out sets are rendered with master seeds never used for
training or validation (training runs used 1000/1100, validation 2000/2100):

* ``test``: the small set ``tests/test_shipped_weights.py`` re-renders and re-measures (the
  card's figures there are the reference that test holds the shipped weights to);
* ``held_out``: 20 faces x 61 frames, the figure issue reports quote.

Writes facesfm/assets/weights/{landmarks_builtin.pt, landmarks_ict.pt, card.json,
MODEL_CARD.md} and bench/results/landmarks.{json,md}. Shows our error beside the figure the
paper reports for its detector (MSE 4.52, its own data and landmark set: not comparable
one-to-one).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from facesfm.eval.detector import HeldOut, detector_errors, render_held_out
from facesfm.io import atomic_path, write_json
from facesfm.training.checkpoint import code_version, export_weights, load_checkpoint
from facesfm.weights import CARD_PATH, WEIGHTS_DIR

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_MSE = 4.52

#: the protocol tests/test_shipped_weights.py re-renders (small: it runs in the test suite)
TEST_SETS = {"builtin": HeldOut("builtin", 4100, 3, 11), "ict": HeldOut("ict", 4000, 3, 11)}
HELD_OUT = {"builtin": HeldOut("builtin", 3100, 20, 61), "ict": HeldOut("ict", 3000, 20, 61)}


def _training_data(run: Path, ck: dict) -> dict:
    """What the run was trained on, from the dataset.json files of its data folders."""
    info: dict = {"run": run.name, "steps": ck["state"].get("step"),
                  "epochs": ck["state"].get("epoch"), "init_from": ck["extra"].get("init_from")}
    log = run / "config.yaml"
    info["config_file"] = log.name if log.is_file() else None
    return info


def _dataset_summary(folder: str | None) -> dict | None:
    if folder is None:
        return None
    d = json.loads((Path(folder) / "dataset.json").read_text())
    seqs = d["sequences"]
    return {"folder": Path(folder).name, "sequences": len(seqs),
            "subjects": len({s["subject"] for s in seqs}),
            "frames": int(sum(s["frames"] for s in seqs)),
            "master_seed": d.get("config", {}).get("seed")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builtin", type=Path, required=True)
    ap.add_argument("--ict", type=Path, required=True)
    ap.add_argument("--builtin-data", nargs=2, metavar=("TRAIN", "VAL"), required=True)
    ap.add_argument("--ict-data", nargs=2, metavar=("TRAIN", "VAL"), required=True)
    ap.add_argument("--ict-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-held-out", action="store_true",
                    help="Only the small test sets (quick check).")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    card: dict = {"format": "facesfm-model-card-1", "code": code_version(),
                  "machine": f"{platform.machine()}, torch {torch.__version__}, "
                             f"{args.threads} thread(s)",
                  "landmarks": {},
                  "not_shipped": {
                      "sfm": "the stage-2 depth and pose networks: training does not converge "
                             "yet (validation depth error grew over the first epochs), so none "
                             "is shipped and the card has no depth error"}}
    rows = []
    for face, run, data in (("builtin", args.builtin, args.builtin_data),
                            ("ict", args.ict, args.ict_data)):
        src = run / "checkpoints" / "last.pt"
        ck = load_checkpoint(src, stage="landmarks")
        name = f"landmarks_{face}.pt"
        dst = export_weights(src, WEIGHTS_DIR / name, {"source_run": run.name})
        entry = {
            "file": name,
            "bytes": dst.stat().st_size,
            "config": ck["config"],
            "trained_commit": ck["code_version"],
            "training": _training_data(run, ck),
            "data": {"train": _dataset_summary(data[0]), "val": _dataset_summary(data[1])},
        }
        sets = {"test": TEST_SETS[face]}
        if not args.skip_held_out:
            sets["held_out"] = HELD_OUT[face]
        for key, spec in sets.items():
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                render_held_out(spec, Path(tmp) / "data", ict_dir=args.ict_dir, workers=2)
                m = detector_errors(dst, Path(tmp) / "data")
            entry[key] = {"protocol": spec.to_dict(), "metrics": m,
                          "seconds": time.perf_counter() - t0}
            rows.append((face, key, spec, m))
            print(f"{face} {key}: mean {m['lm_mean_px']:.3f} px, median "
                  f"{m['lm_median_px']:.3f} px, F1 {m['vis_f1']:.4f} "
                  f"({m['frames']} frames)", flush=True)
        card["landmarks"][face] = entry

    with atomic_path(CARD_PATH) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2) + "\n")
    md = _markdown(card, rows)
    with atomic_path(WEIGHTS_DIR / "MODEL_CARD.md") as tmp:
        Path(tmp).write_text(md)
    write_json(RESULTS / "landmarks.json", {"rows": [
        {"face": f, "set": k, "protocol": s.to_dict(), **m} for f, k, s, m in rows]})
    with atomic_path(RESULTS / "landmarks.md") as tmp:
        Path(tmp).write_text(_table(rows))
    print(md)
    return 0


def _table(rows) -> str:
    lines = [
        "# Landmark detectors on held-out faces",
        "",
        "Frames rendered with seeds never used in training, 384x384, focal 500 px, yaw -60..60;"
        " errors in those frames' pixels over the visible landmarks (bench/model_card.py).",
        f"The paper reports an MSE of {PAPER_MSE} for its detector on its own data and "
        "68-landmark set; our MSE column is the mean squared euclidean error (px^2) on ours.",
        "",
        "| faces | set | seed | faces x frames | N | mean px | median px | p95 px | MSE px^2 "
        "| vis F1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f, k, s, m in rows:
        lines.append(
            f"| {f} | {k} | {s.seed} | {s.subjects} x {s.frames} | {m['landmarks']} "
            f"| {m['lm_mean_px']:.2f} | {m['lm_median_px']:.2f} | {m['lm_p95_px']:.2f} "
            f"| {m['lm_mse_px2']:.2f} | {m['vis_f1']:.4f} |")
    return "\n".join(lines) + "\n"


def _markdown(card: dict, rows) -> str:
    out = ["# facesfm model card: shipped landmark detectors", ""]
    for face, e in card["landmarks"].items():
        c = e["config"]
        d = e["data"]
        out += [
            f"## `{e['file']}` ({face} faces, {e['bytes'] / 1e6:.2f} MB)",
            "",
            f"- Network: LandmarkNet `{c['landmarks']['variant']}`, channels "
            f"{c['landmarks']['channels']}, N = {c['data']['landmarks']} landmarks, input "
            f"{c['data']['image_size']} px, face-crop refinement "
            f"{'on' if c['landmarks'].get('face_crop', 0) > 0 else 'off'} (margin "
            f"{c['landmarks'].get('crop_margin')}).",
            f"- Data: train {d['train']}, validation {d['val']}.",
            f"- Run: {e['training']}; trained at commit {e['trained_commit']}.",
            f"- Optimiser: Adam lr {c['optim']['lr']}, betas {c['optim']['betas']}, batch "
            f"{c['optim']['batch_size']}, seed {c['seed']}.",
            "",
        ]
    out += [_table(rows), "",
            f"Not shipped: {card['not_shipped']['sfm']}.", "",
            "`tests/test_shipped_weights.py` re-renders each `test` set and fails when the mean"
            " or median error, or the visibility error rate (1 - F1), is more than 10% worse "
            "than above.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
