"""How far the shipped depth network is from the depth the test-time solve already has.

    python bench/depth_prior.py [--data DIR] [--subjects 6] [--appearance realistic]
                                [--ict-dir DIR] [--tag TAG]

On held-out ICT faces (master seed 3000, or 3500 with ``--appearance realistic``; rendered
into ``--data`` unless it holds them), every frame's depth by three sources, each scored by
the model card's measure (per frame median-scaled, mean absolute error in mm over face
pixels of the rendered mask, averaged over frames; :func:`facesfm.training.metrics.depth_errors`):

* the shipped depth network (``sfm_ict.pt``), as ``facesfm solve`` runs it;
* the landmark prior: the depth maps the detector-only solve interpolates from its
  bundle-adjusted landmark points (``--depth landmarks``, no network but the ICT detector);
* the plane sweep: the same solve with ``--tracks --stereo``, the pixels whose depth the
  sweep refined and kept.

The network is scored on the whole face mask and again on each other source's pixels, so
that each pair is compared where both have depth. The target beside them is the learned
depth's: 3.0 mm. Writes bench/results/depth_prior[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import run_meta, write_results

from facesfm.data.dataset import find_sequences
from facesfm.data.format import load_sequence
from facesfm.eval.detector import HeldOut, render_held_out

TARGET_MM = 3.0


def score_face(path: Path, nets, configs: dict) -> dict:
    """Depth errors (mm) and coverages of one sequence (see the module docstring)."""
    from facesfm.solve.inputs import load_input
    from facesfm.solve.pipeline import solve_frames
    from facesfm.training.inference import run_depth
    from facesfm.training.metrics import depth_errors

    seq = load_sequence(path)
    frames = load_input(path)
    gt = torch.from_numpy(np.stack([seq.depth(i) for i in range(len(seq))]))[:, None]
    face = torch.from_numpy(np.stack([seq.mask(i) for i in range(len(seq))]))[:, None]
    net = torch.from_numpy(run_depth(nets, frames.images))[:, None]
    row = {"sequence": path.name, "network_mm": depth_errors(net, gt, face)["depth_mm"]}
    for name, cfg in configs.items():
        res = solve_frames(frames, cfg)
        k = torch.from_numpy(res.kept)
        d = torch.from_numpy(res.depth.depth)[:, None]
        m = torch.from_numpy(res.depth.mask)[:, None] & (d > 0) & face[k]
        row[f"{name}_mm"] = depth_errors(d, gt[k], m)["depth_mm"]
        row[f"network_on_{name}_pixels_mm"] = depth_errors(net[k], gt[k], m)["depth_mm"]
        row[f"{name}_coverage"] = float(m.sum() / face[k].sum())
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--appearance", default=None, choices=["varied", "realistic"])
    ap.add_argument("--ict-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from facesfm.solve.config import SolveConfig
    from facesfm.solve.stereo import StereoConfig
    from facesfm.solve.tracks import TrackConfig
    from facesfm.training.inference import load_networks
    from facesfm.weights import shipped_landmark_checkpoint, shipped_sfm_checkpoint

    seed = 3500 if a.appearance == "realistic" else 3000
    spec = HeldOut("ict", seed, a.subjects, 61, appearance=a.appearance)
    data = a.data
    if data is None or not (data / "dataset.json").is_file():
        data = data or Path(tempfile.mkdtemp()) / "data"
        render_held_out(spec, data, ict_dir=a.ict_dir, workers=2, progress=True)
    sfm = shipped_sfm_checkpoint("ict")
    nets = load_networks(checkpoint=sfm)
    base = SolveConfig(landmark_checkpoint=str(shipped_landmark_checkpoint("ict")),
                       poses_init="landmarks", depth="landmarks", keep_unreliable=True)
    configs = {"landmarks": base,
               "sweep": replace(base, tracks=TrackConfig(enabled=True),
                                stereo=StereoConfig(enabled=True))}
    rows = []
    t0 = time.perf_counter()
    for i, path in enumerate(find_sequences(data)[:a.subjects]):
        rows.append(score_face(path, nets, configs))
        r = rows[-1]
        print(f"{i + 1}/{a.subjects} {path.name}: network {r['network_mm']:.2f} mm, landmark "
              f"prior {r['landmarks_mm']:.2f} mm ({r['landmarks_coverage']:.0%}), sweep "
              f"{r['sweep_mm']:.2f} mm ({r['sweep_coverage']:.0%})", flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "sequence"}

    def ratio(v):
        return f"{TARGET_MM / v:.2f}x"

    what = "plain" if a.appearance is None else f"appearance preset {a.appearance!r}"
    lines = [
        (f"# Depth: the shipped network beside the solve's own depth ({len(rows)} held-out ICT "
        f"faces)"), "",
        (f"Seed {seed}, 61 frames each, 384x384, {what}; network `{Path(sfm).name}`, detector "
        f"`{Path(base.landmark_checkpoint).name}`. Error: per frame median-scaled, mean "
        f"absolute error over face pixels of the rendered mask (the model card's measure), "
        f"mean over frames, then over faces. Target: {TARGET_MM} mm (ratio = target / "
        f"measured, > 1 meets it)."), "",
        ("| depth | pixels | coverage of the face mask | error mm | ratio to target "
        "| network on the same pixels mm |"),
        "|---|---|---|---|---|---|",
        (f"| shipped depth network | face mask | 1.00 | {mean['network_mm']:.2f} "
        f"| {ratio(mean['network_mm'])} | |"),
        (f"| landmark prior (`--depth landmarks`) | its landmark hulls | "
        f"{mean['landmarks_coverage']:.2f} | {mean['landmarks_mm']:.2f} "
        f"| {ratio(mean['landmarks_mm'])} | {mean['network_on_landmarks_pixels_mm']:.2f} |"),
        (f"| plane sweep (`--tracks --stereo`) | the pixels it kept | "
        f"{mean['sweep_coverage']:.2f} | {mean['sweep_mm']:.2f} "
        f"| {ratio(mean['sweep_mm'])} | {mean['network_on_sweep_pixels_mm']:.2f} |"),
        "", "Per face (mm): " + "; ".join(
            f"{r['sequence']} network {r['network_mm']:.2f}, prior {r['landmarks_mm']:.2f}, "
            f"sweep {r['sweep_mm']:.2f}" for r in rows) + ".",
        "", f"{time.perf_counter() - t0:.0f} s for the faces (rendering not included).", "",
    ]
    meta = run_meta(subjects=len(rows), seed=seed, appearance=a.appearance)
    lines.append(f"Run {meta['time']} at {meta['commit']}, {meta['cpus']} CPUs, load "
                 f"{meta['load_average_1m']} at the end.")
    stem = "depth_prior" + (f"_{a.tag}" if a.tag else "")
    write_results(a.out, stem, {**meta, "target_mm": TARGET_MM, "rows": rows, "mean": mean},
                  "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
