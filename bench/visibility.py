"""Where the landmark detector's visibility errors lie, on rendered held-out sequences.

    python bench/visibility.py --data DIR [--checkpoint CKPT] [--subjects 20] [--threads 1]

A rendered landmark is visible when it is in the image, faces the camera (``n . (C - X) > 0``
with ``n`` the normal of the surface patch within ``facing_radius`` of it, or its vertex normal
for sets rendered before that option, whose dataset.json lacks it) and nothing is more than
2 mm in front of it (``facesfm.render.visibility``). The facing test flips where the view grazes the surface;
in a sweep with one frame every 2 degrees of yaw, a landmark within about 2 degrees of grazing
may be labelled either way by a sub-frame change of angle that the image hardly shows. This
script detects every frame with the detector (as its training run validates it), and splits
the visibility errors by the grazing angle ``asin(n . (C - X) / |C - X|)`` of the landmark in
that frame (from the GT mesh ``mesh.ply`` and poses of each sequence), by landmark (the inner lip
contour apart), and by the distance in frames to the nearest flip of the label.

Writes bench/results/visibility_<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import run_meta, write_results

RESULTS = Path(__file__).resolve().parent / "results"
ANGLE_BINS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 90.0)
#: the inner lip contour of the 68-point scheme (IDs 60-67, the first 68 of every N)
INNER_LIP = np.arange(60, 68)


def _name(ckpt) -> str:
    """A checkpoint's file name, with its run folder for a run's checkpoints/last.pt."""
    p = Path(ckpt)
    return f"{p.parents[1].name}/{p.name}" if p.parent.name == "checkpoints" else p.name


def facing_radius(data: Path) -> float:
    """The facing test's patch radius (mm) a rendered set was made with (0: vertex normals)."""
    from facesfm.data.dataset import label_rule

    rule = label_rule(data)
    return rule["facing_radius"] if rule else 0.0


def grazing_angles(seq, n: int, radius: float) -> np.ndarray:
    """(F, n) degrees: elevation of each camera centre over the tangent plane of the first
    ``n`` landmarks (positive: the surface faces the camera), with the normals the facing test
    of a set rendered with ``radius`` used."""
    import trimesh
    from scipy.spatial import cKDTree

    from facesfm.geometry.camera import camera_center
    from facesfm.render.visibility import landmark_normals

    mesh = trimesh.load(seq.root / "mesh.ply", process=False)
    v = np.asarray(mesh.vertices, np.float64)
    xyz = seq.landmark_xyz[:n]
    dist, idx = cKDTree(v).query(xyz)
    if dist.max() > 1e-3:
        raise ValueError(f"{seq.root}: landmark vertices are not vertices of mesh.ply")
    nl = landmark_normals(v, np.asarray(mesh.faces, np.int64), idx, radius)
    out = np.empty((len(seq.cam_T_world), n))
    for f, T in enumerate(seq.cam_T_world):
        d = camera_center(T)[None] - xyz
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        out[f] = np.degrees(np.arcsin(np.clip((nl * d).sum(1), -1.0, 1.0)))
    return out


def frames_to_flip(visible: np.ndarray) -> np.ndarray:
    """(F, n) int: frames to the nearest change of the label along the sequence (a large
    number for a landmark whose label never changes)."""
    F, n = visible.shape
    flip = np.zeros((F, n), bool)
    ch = visible[1:] != visible[:-1]
    flip[1:] |= ch
    flip[:-1] |= ch
    out = np.full((F, n), 10**6)
    for f in range(F):
        for g in np.flatnonzero(flip.any(1)):
            out[f] = np.where(flip[g], np.minimum(out[f], abs(f - g)), out[f])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="Rendered held-out sequences.")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="Stage-1 checkpoint [default: the shipped ICT detector].")
    ap.add_argument("--subjects", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="ict")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from facesfm.data.dataset import SequenceDataset, find_sequences
    from facesfm.data.format import load_sequence
    from facesfm.eval.metrics import visibility_scores
    from facesfm.training.landmarks import detect, load_landmark_net
    from facesfm.weights import shipped_landmark_checkpoint

    ckpt = args.checkpoint or shipped_landmark_checkpoint("ict")
    net, cfg = load_landmark_net(ckpt)
    n = cfg.data.landmarks
    seqs = [load_sequence(p) for p in find_sequences(args.data)[: args.subjects]]
    radius = facing_radius(args.data)
    ds = SequenceDataset(args.data, window=None, landmarks=n, load_depth=False, load_mask=False)
    logits, labels, angles, to_flip = [], [], [], []
    t0 = time.perf_counter()
    for i, seq in enumerate(seqs):
        s = ds[i]
        with torch.no_grad():
            out = detect(net, cfg, s.images)
        vis = s.visible.numpy().astype(bool)
        logits.append(out.visibility_logits.numpy())
        labels.append(vis)
        angles.append(grazing_angles(seq, n, radius))
        to_flip.append(frames_to_flip(vis))
        print(f"{i + 1}/{len(seqs)} {seq.root.name}", flush=True)
    L, T = np.concatenate(logits), np.concatenate(labels)
    A, D = np.concatenate(angles), np.concatenate(to_flip)
    P = L > 0
    err = P != T
    f1 = visibility_scores(P, T).f1
    bins = []
    for lo, hi in itertools.pairwise(ANGLE_BINS):
        m = (np.abs(A) >= lo) & (np.abs(A) < hi)
        bins.append({"from_deg": lo, "to_deg": hi, "label_share": float(m.mean()),
                     "errors": int((err & m).sum()), "error_rate": float(err[m].mean())
                     if m.any() else None})
    near = np.abs(A) < 2.0
    f1_far = visibility_scores(P[~near], T[~near]).f1
    inner = np.setdiff1d(np.arange(n), INNER_LIP)
    f1_no_inner = visibility_scores(P[:, inner], T[:, inner]).f1
    flip_rows = []
    for k in (0, 1, 2):
        m = D == k
        flip_rows.append({"frames_to_flip": k, "errors": int((err & m).sum())})
    flip_rows.append({"frames_to_flip": ">2", "errors": int((err & (D > 2)).sum())})
    per_lm = err.mean(0)
    worst = [{"landmark": int(k), "error_rate": float(per_lm[k]),
              "visible_share": float(T[:, k].mean()), "predicted_share": float(P[:, k].mean())}
             for k in np.argsort(-per_lm)[:10]]
    sweep = {f"{t:+.1f}": visibility_scores(L > t, T).f1 for t in (-1.0, -0.5, 0.0, 0.5, 1.0)}
    payload = {
        "meta": run_meta(checkpoint=str(ckpt), data=str(args.data), subjects=len(seqs),
                         frames=len(L), landmarks=n,
                         seconds=round(time.perf_counter() - t0, 1)),
        "facing_radius_mm": radius, "f1": f1, "errors": int(err.sum()), "false_visible": int((P & ~T).sum()),
        "false_hidden": int((~P & T).sum()), "by_grazing_angle": bins,
        "f1_without_labels_within_2_deg_of_grazing": f1_far,
        "f1_without_inner_lip_contour": f1_no_inner,
        "inner_lip_contour_errors": int(err[:, INNER_LIP].sum()),
        "by_frames_to_label_flip": flip_rows, "worst_landmarks": worst,
        "f1_by_logit_threshold": sweep,
    }
    md = [
        (f"# Landmark visibility errors ({len(seqs)} held-out faces x {len(L) // len(seqs)} "
        f"frames, N = {n}; bench/visibility.py)"), "",
        (f"Detector `{_name(ckpt)}`, labels of `{Path(args.data).name}` (facing radius "
         f"{radius:g} mm); F1 {f1:.4f}; {err.sum()} wrong labels of {err.size} "
        f"({(P & ~T).sum()} predicted visible but hidden, {(~P & T).sum()} the other way)."), "",
        "| grazing angle (deg) | share of labels | errors | error rate |", "|---|---|---|---|",
    ]
    md += [f"| {b['from_deg']:g}-{b['to_deg']:g} | {100 * b['label_share']:.1f}% "
           f"| {b['errors']} | {100 * (b['error_rate'] or 0):.1f}% |" for b in bins]
    md += ["", (f"F1 without the labels within 2 degrees of grazing (one frame step of the "
           f"sweep): {f1_far:.4f}."), "",
           (f"The inner lip contour (IDs 60-67, 8 of the {n} landmarks) holds "
           f"{err[:, INNER_LIP].sum()} of the errors; F1 without it: {f1_no_inner:.4f}."), "",
           "| frames to the nearest flip of the label | errors |", "|---|---|"]
    md += [f"| {r['frames_to_flip']} | {r['errors']} |" for r in flip_rows]
    md += ["", "| landmark | error rate | visible in | predicted visible in |",
           "|---|---|---|---|"]
    md += [f"| {w['landmark']} | {100 * w['error_rate']:.1f}% | {100 * w['visible_share']:.0f}% "
           f"| {100 * w['predicted_share']:.0f}% |" for w in worst]
    md += ["", "F1 by logit threshold: " + ", ".join(f"{k}: {v:.4f}" for k, v in sweep.items())
           + "."]
    write_results(RESULTS, f"visibility_{args.tag}", payload, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
