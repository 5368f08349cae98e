"""The stage-2 BA layer's cost and accuracy against its pair selection (``sfm.ba.pairs``):
all co-visible pairs, each frame's ``pairs_k`` most co-visible frames ("top"), or frames 1, 2,
4, 8, ... apart ("log"), over the sequence length.

    python bench/ba_layer.py [--frames 8,16,32,61] [--pairs top,log,all] [--pairs-k 4]
                             [--landmarks 800] [--batch 2] [--threads 1]

The layer alone (:func:`facesfm.training.ba_layer.refine_poses`, depth parameterisation, float64,
implicit backward, 20 LM iterations at most, as in the ``paper`` preset), on seeded synthetic
faces (:mod:`facesfm.solvers.synthetic`): cameras every 2 degrees on a yaw arc (61 frames =
-60..+60 degrees), f = 500 px at 384 px, 1 px noise on the landmarks, 0.5% noise (2.5 mm at
500 mm) on the depths the layer reads (standing in for the depth network), start poses perturbed by 3 deg / 10 mm.
For each frame count and pair selection: forward (solve) and backward (a loss on the refined
poses w.r.t. the depths) seconds, LM iterations, and the mean rotation / translation error of
the refined poses against the truth. The ratio column is the all-pairs time over the row's,
from the same run.

Writes bench/results/ba_layer.json and bench/results/ba_layer.md (atomically).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from common import run_meta, write_results

from facesfm.geometry.camera import invert_pose
from facesfm.solvers import BAState, Parameterization
from facesfm.solvers.landmark_ba import PairRule
from facesfm.solvers.synthetic import make_face_problem, perturb_state
from facesfm.training.ba_layer import refine_poses
from facesfm.training.config import TRAINING_BA

RESULTS = Path(__file__).resolve().parent / "results"


def _rot_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (deg) of a_R^T b_R for (F, 4, 4) poses."""
    r = a[:, :3, :3].transpose(1, 2) @ b[:, :3, :3]
    c = ((r.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(c))


def sequence(frames: int, landmarks: int, seed: int):
    """(K, uv, weight, depth, start, truth) of one synthetic sequence, frame 0 = identity."""
    face = make_face_problem(
        frames=frames, landmarks=landmarks, seed=seed, noise_px=1.0,
        parameterization=Parameterization.DEPTH, yaw_deg=float(frames - 1), depth_noise=0.005,
    )
    p = face.problem
    start = perturb_state(BAState(face.truth.poses, None), seed=seed + 1, rot_deg=3.0,
                          trans_mm=10.0).poses
    to0 = lambda P: P @ invert_pose(P[0])[None]  # re-anchor the world at camera 0
    return p.K[0], p.uv, p.weight, p.depth, to0(start), to0(face.truth.poses)


def run(frames: int, pairs: str, pairs_k: int, batch: int, landmarks: int) -> dict:
    seqs = [sequence(frames, landmarks, seed=s) for s in range(batch)]
    K, uv, w, depth, start, truth = (torch.stack(x) for x in zip(*seqs))
    depth = depth.clone().requires_grad_(True)
    ba = replace(TRAINING_BA, max_iterations=20, pairs=PairRule(pairs), pairs_k=pairs_k)
    t0 = time.perf_counter()
    poses, m = refine_poses(K, uv, w, depth, start, ba)
    fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    poses[:, :, :3, 3].square().sum().backward()
    bwd = time.perf_counter() - t0
    rot = torch.cat([_rot_deg(poses[b].detach(), truth[b])[1:] for b in range(batch)])
    tr = torch.cat([(poses[b, 1:, :3, 3].detach() - truth[b, 1:, :3, 3]).norm(dim=-1)
                    for b in range(batch)])
    finite = bool(torch.isfinite(depth.grad).all())
    return {
        "frames": frames, "pairs": pairs, "pairs_k": pairs_k, "batch": batch, "landmarks": landmarks,
        "forward_s": fwd, "backward_s": bwd, "iterations": float(m["ba_iterations"]),
        "rms_px": float(m["ba_rms_px"]), "failures": float(m["ba_failures"]),
        "rot_err_deg": float(rot.mean()), "trans_err_mm": float(tr.mean()),
        "grad_finite": finite,
    }


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# BA layer cost against its pair selection (stage 2, depth parameterisation)",
        "",
        (
            f"{meta['cpu']}, torch {meta['torch']}, {meta['threads']} thread(s), commit "
            f"{meta['commit']}, 1-min load average {meta['load_average_1m']} at the end; "
            f"{meta['batch']} synthetic sequences x {meta['landmarks']} landmarks per row, one "
            f"run each (see bench/ba_layer.py). Error: mean over the non-gauge frames of the "
            f"refined poses against the truth. Ratio: all pairs / this row, time of forward + "
            f"backward. Pairs: top k = each frame's k most co-visible frames; log = frames 1, "
            f"2, 4, 8, ... apart."
        ),
        "",
        ("| frames | pairs | forward s | backward s | total s | ratio | LM iters | RMS px | "
         "rot err deg | trans err mm |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["frames"], r["pairs"]): r for r in rows}
    for r in rows:
        tot = r["forward_s"] + r["backward_s"]
        ratio = ""
        allp = by.get((r["frames"], "all"))
        if r["pairs"] != "all" and allp:
            ratio = f"{(allp['forward_s'] + allp['backward_s']) / tot:.1f}x"
        pairs = f"top {r['pairs_k']}" if r["pairs"] == "top" else r["pairs"]
        lines.append(
            f"| {r['frames']} | {pairs} | {r['forward_s']:.2f} | {r['backward_s']:.2f} | "
            f"{tot:.2f} | {ratio} | {r['iterations']:.1f} | {r['rms_px']:.3f} | "
            f"{r['rot_err_deg']:.3f} | {r['trans_err_mm']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", default="8,16,32,61")
    ap.add_argument("--pairs", default="top,log,all")
    ap.add_argument("--pairs-k", type=int, default=4)
    ap.add_argument("--landmarks", type=int, default=800)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    run(4, "top", a.pairs_k, 1, 68)  # warm-up
    for f in (int(x) for x in a.frames.split(",")):
        for sel in a.pairs.split(","):
            r = run(f, sel, a.pairs_k, a.batch, a.landmarks)
            rows.append(r)
            pairs = f"top {a.pairs_k}" if sel == "top" else sel
            print(f"{f} frames, pairs {pairs}: "
                  f"{r['forward_s']:.2f} + {r['backward_s']:.2f} s, "
                  f"{r['rot_err_deg']:.3f} deg, {r['trans_err_mm']:.2f} mm", flush=True)
    meta = run_meta(threads=a.threads, batch=a.batch, landmarks=a.landmarks)
    write_results(a.out, "ba_layer", {"meta": meta, "rows": rows}, to_markdown(rows, meta))


if __name__ == "__main__":
    main()
