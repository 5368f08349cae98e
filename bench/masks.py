"""Which head mask keeps the background out: candidate masks against the rendered truth.

    python bench/masks.py [--data DIR] [--appearance realistic] [--subjects 6] [--every 3]
                          [--ict-dir DIR] [--tag TAG]

The solve's tracks, plane sweep and fusion take pixels inside a mask only. Candidates, per
frame, on ICT faces rendered over photographs (``--appearance``, default the realistic
preset; master seed 3500, the realistic held-out set's):

* ``landmark hull``: the convex hull of the ICT detector's visible landmarks (the shipped one,
  or ``--landmark-checkpoint``; what the solve uses without the person mask);
* ``face-mesh``: MediaPipe FaceMesh's 468-point mesh rasterised triangle by triangle (not
  convex: the concavities of a profile stay out);
* ``selfie``: MediaPipe's selfie segmentation (the person, hair and neck included) at 0.5;
* the intersections ``hull & selfie`` and ``hull & face-mesh``.

Against the truth (the render's face-region mask and its depth): the share of the mask's
pixels that are background (no head there), the share outside the face region (background,
hair line, ears, neck), and the share of the face region it covers. Writes
bench/results/masks[_TAG].{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import run_meta, write_results
from PIL import Image, ImageDraw

from facesfm.data.format import load_sequence
from facesfm.eval.detector import HeldOut, render_held_out
from facesfm.geometry.multiview import hull_masks
from facesfm.solve.frontend import _mediapipe, _native_stderr_silenced, find_faces, mesh_triangles
from facesfm.training.landmarks import detect, load_landmark_net
from facesfm.weights import shipped_landmark_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = ("landmark hull", "face-mesh", "selfie", "hull & selfie", "hull & face-mesh")


def mesh_mask(mesh: np.ndarray, tris: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: the face-mesh's triangles (pixel coordinates u, v) filled."""
    im = Image.new("1", (width, height), 0)
    d = ImageDraw.Draw(im)
    for t in tris:
        d.polygon([(float(mesh[i, 0]) + 0.5, float(mesh[i, 1]) + 0.5) for i in t], fill=1)
    return np.asarray(im, dtype=bool)


def selfie_masks(images: np.ndarray) -> np.ndarray:
    """(F, H, W) bool: MediaPipe's selfie segmentation at 0.5."""
    seg = _mediapipe("selfie_segmentation")
    out = np.zeros(images.shape[:3], dtype=bool)
    with _native_stderr_silenced(), seg.SelfieSegmentation(model_selection=0) as s:
        for f, im in enumerate(images):
            out[f] = s.process(np.ascontiguousarray(im)).segmentation_mask > 0.5
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--appearance", default="realistic", choices=["varied", "realistic"])
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--every", type=int, default=3, help="Use every n-th frame.")
    ap.add_argument("--ict-dir", default=None)
    ap.add_argument("--landmark-checkpoint", type=Path, default=None,
                    help="Detector whose landmarks make the hull [default: the shipped ICT one].")
    ap.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    spec = HeldOut("ict", 3500, args.subjects, 61, appearance=args.appearance)
    data = args.data
    if data is None or not (data / "dataset.json").is_file():
        data = data or Path(tempfile.mkdtemp()) / "data"
        render_held_out(spec, data, ict_dir=args.ict_dir, workers=2, progress=True)
    ckpt = args.landmark_checkpoint or shipped_landmark_checkpoint("ict")
    net, ncfg = load_landmark_net(ckpt)
    tris = mesh_triangles()
    seqs = sorted(p.parent for p in Path(data).glob("*/sequence.json"))[:args.subjects]
    sums = {c: {"bg": 0, "off_face": 0, "covered": 0, "pixels": 0} for c in CANDIDATES}
    face_pixels, frames, no_face, seconds = 0, 0, 0, {"face-mesh": 0.0, "selfie": 0.0}
    for path in seqs:
        seq = load_sequence(path)
        idx = np.arange(0, len(seq), args.every)
        images = np.stack([seq.image(i) for i in idx])
        H, W = images.shape[1:3]
        with torch.no_grad():
            out = detect(net, ncfg, torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255)
        vis = (out.visibility_logits > 0).numpy()
        hull = hull_masks(out.uv.double().numpy(), vis.astype(float), H, W)
        t0 = time.perf_counter()
        track = find_faces(images)
        fm = np.stack([mesh_mask(m, tris, H, W) if ok else np.zeros((H, W), bool)
                       for m, ok in zip(track.mesh, track.found)])
        seconds["face-mesh"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        sel = selfie_masks(images)
        seconds["selfie"] += time.perf_counter() - t0
        masks = {"landmark hull": hull, "face-mesh": fm, "selfie": sel,
                 "hull & selfie": hull & sel, "hull & face-mesh": hull & fm}
        for k, i in enumerate(idx):
            truth = seq.mask(i)
            bg = seq.depth(i) <= 0
            face_pixels += int(truth.sum())
            for c, m in masks.items():
                s = sums[c]
                s["pixels"] += int(m[k].sum())
                s["bg"] += int((m[k] & bg).sum())
                s["off_face"] += int((m[k] & ~truth).sum())
                s["covered"] += int((m[k] & truth).sum())
        frames += len(idx)
        no_face += int((~track.found).sum())
        print(f"{path.name}: {len(idx)} frames, face-mesh found in {int(track.found.sum())}",
              flush=True)
    rows = {c: {"background_share": s["bg"] / max(s["pixels"], 1),
                "off_face_share": s["off_face"] / max(s["pixels"], 1),
                "face_covered": s["covered"] / max(face_pixels, 1)} for c, s in sums.items()}
    ms = {k: 1000 * v / frames for k, v in seconds.items()}
    lines = [
        "# Head masks against the rendered truth (bench/masks.py)",
        "",
        (f"{len(seqs)} ICT faces (seed {spec.seed}, appearance preset `{args.appearance}`: "
         f"photographs behind every face), one frame in {args.every} of 61 over yaw -60..60, "
         f"{frames} frames; landmark hulls from the detector `{ckpt.name}`; FaceMesh found no "
         f"face in {no_face}. Pixel shares summed over "
         "frames. `background`: share of the mask's pixels with no head behind them; `off the "
         "face region`: share outside the render's face-region mask (background, hair line, "
         "ears, neck); `face covered`: share of the face region inside the mask."),
        "",
        "| mask | background | off the face region | face covered |",
        "|---|---|---|---|",
    ]
    for c, r in rows.items():
        lines.append(f"| {c} | {r['background_share']:.3f} | {r['off_face_share']:.3f} "
                     f"| {r['face_covered']:.3f} |")
    lines += ["", (f"Cost per frame: FaceMesh and rasterising {ms['face-mesh']:.0f} ms, selfie "
                   f"segmentation {ms['selfie']:.0f} ms (1 thread).")]
    md = "\n".join(lines) + "\n"
    write_results(RESULTS, "masks" + (f"_{args.tag}" if args.tag else ""),
                  {"meta": run_meta(), "protocol": spec.to_dict(), "every": args.every,
                   "detector": str(ckpt.name),
                   "frames": frames, "no_face_frames": no_face, "rows": rows,
                   "ms_per_frame": ms}, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
