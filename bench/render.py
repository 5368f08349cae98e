"""Benchmark: render a 61-frame 384x384 sequence with ALL ground truth written, end to end.

Target (the project's): 61 frames in under 10 s on 2 CPU cores. Prints the time per
sequence, frames per second and the ratio to the target (> 1 = faster than the target),
plus a breakdown (GL draw, visibility, PNG encoding) and the cost of the appearance
randomisation (the same sequence with a photograph and a randomised camera, interleaved), for
the built-in face and, when ../shared/ict-facekit exists, for an ICT-FaceKit face. Writes bench/results/render.json and
bench/results/render.md.

    PYOPENGL_PLATFORM=osmesa .venv/bin/python bench/render.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np
from common import commit

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 10.0  # 61 frames in < 10 s on 2 cores


def _gl_renderer() -> str:
    from OpenGL.GL import GL_RENDERER, glGetString

    from facesfm.geometry.camera import intrinsics
    from facesfm.render.renderer import FaceRenderer

    r = FaceRenderer(8, 8, intrinsics(10.0, 8, 8))
    r._r._platform.make_current()
    name = glGetString(GL_RENDERER)
    r.close()
    return name.decode() if isinstance(name, bytes) else str(name)


def bench_face(label: str, model, repeats: int, tmp: Path) -> dict:
    from facesfm.data.format import write_png
    from facesfm.geometry.camera import intrinsics
    from facesfm.render.config import (
        AppearanceConfig,
        CameraEffectsConfig,
        PhotoBackgroundConfig,
        RenderConfig,
    )
    from facesfm.render.lights import sample_lighting
    from facesfm.render.renderer import FaceRenderer
    from facesfm.render.trajectory import make_trajectory
    from facesfm.render.visibility import landmark_visibility, vertex_normals
    from facesfm.render.writer import render_sequence

    t = time.perf_counter()
    mesh, _ = model.sample(0)
    t_face = time.perf_counter() - t
    cfg = RenderConfig()
    # the same sequence with every appearance effect on (a photograph behind the head and a
    # randomised camera on each sequence), interleaved with the plain runs
    varied = RenderConfig(appearance=AppearanceConfig(PhotoBackgroundConfig(probability=1.0),
                                                      CameraEffectsConfig(probability=1.0)))
    runs, runs_varied = [], []
    for k in range(repeats):
        res = render_sequence(mesh, tmp / f"{label}_{k}", cfg, seed=k)
        runs.append(res.seconds)
        res = render_sequence(mesh, tmp / f"{label}_varied_{k}", varied, seed=k)
        runs_varied.append(res.seconds)
    size = sum(p.stat().st_size for p in (tmp / f"{label}_0").rglob("*") if p.is_file())

    # breakdown on the same frames, one stage at a time
    K = intrinsics(cfg.focal, cfg.width, cfg.height)
    traj = make_trajectory(cfg.trajectory, 0, 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0)))
    with FaceRenderer(cfg.width, cfg.height, K) as r:
        t = time.perf_counter()
        r.set_mesh(mesh, sample_lighting(cfg.lighting, np.random.default_rng(0)))
        t_upload = time.perf_counter() - t
        t = time.perf_counter()
        frames = [r.render(T) for T in traj.cam_T_world]
        t_draw = time.perf_counter() - t
    n = vertex_normals(mesh.vertices, mesh.faces)[mesh.landmark_vertices]
    xyz = mesh.vertices[mesh.landmark_vertices]
    t = time.perf_counter()
    for T, fr in zip(traj.cam_T_world, frames):
        landmark_visibility(xyz, n, K, T, fr.depth)
    t_vis = time.perf_counter() - t
    t = time.perf_counter()
    for fr in frames:
        write_png(tmp / "x.png", fr.rgb, cfg.png_compress_level)
        write_png(tmp / "m.png", fr.mask.astype(np.uint8) * 255, cfg.png_compress_level)
    t_png = time.perf_counter() - t

    best, med = min(runs), float(np.median(runs))
    return {
        "face": label,
        "vertices": len(mesh.vertices),
        "triangles": len(mesh.faces),
        "textured": mesh.texture is not None,
        "frames": len(traj),
        "face_sample_s": round(t_face, 3),
        "sequence_s_runs": [round(x, 3) for x in runs],
        "sequence_s_best": round(best, 3),
        "sequence_s_median": round(med, 3),
        "fps_median": round(len(traj) / med, 2),
        "ratio_to_target": round(TARGET_S / med, 2),
        "appearance_s_runs": [round(x, 3) for x in runs_varied],
        "appearance_s_median": round(float(np.median(runs_varied)), 3),
        "appearance_over_plain": round(float(np.median(runs_varied)) / med, 2),
        "breakdown_s": {
            "mesh_upload": round(t_upload, 3),
            "gl_draw_and_read_61": round(t_draw, 3),
            "visibility_61": round(t_vis, 3),
            "png_encode_61_rgb_and_mask": round(t_png, 3),
        },
        "bytes_on_disk": size,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)

    from facesfm.errors import FacesfmError
    from facesfm.faces.builtin import BuiltinFaceModel

    models = [("builtin", BuiltinFaceModel())]
    try:
        from facesfm.faces.ict import ICTFaceModel
        from facesfm.paths import find_ict_dir

        models.append(("ict", ICTFaceModel(find_ict_dir())))
    except FacesfmError as e:  # no shared data: builtin only
        print(f"(ICT-FaceKit skipped: {e})")

    tmp = Path(tempfile.mkdtemp(prefix="facesfm-bench-"))
    try:
        results = [bench_face(label, m, args.repeats, tmp) for label, m in models]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "gl_platform": os.environ.get("PYOPENGL_PLATFORM"),
        "gl_renderer": _gl_renderer(),
        "target": "61 frames 384x384 with all ground truth in < 10 s on 2 cores",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from facesfm.io import atomic_path, write_json

    write_json(out / "render.json", {**info, "results": results})
    lines = [
        "# Rendering benchmark",
        "",
        (f"{info['date']}, commit {info['commit']}, {info['cpus']} CPUs ({info['machine']}), "
         f"load average {info['load_average_1m']}, GL: {info['gl_renderer']} "
         f"({info['gl_platform']})."),
        "",
        ("One 61-frame 384x384 sequence (yaw -60..+60 every 2 degrees) written with all ground "
         "truth (PNG images and masks, depth .npy, landmarks.npz, mesh.ply, COLMAP text). "
         f"Target: < {TARGET_S:.0f} s per sequence; ratio = target / measured (> 1 is faster). "
         "With appearance: the same sequence with a photograph behind the head and a "
         "randomised camera (every effect; `--vary-appearance` puts them on 70% and 80% of "
         "the sequences), its runs interleaved with the plain ones; x plain = its median over "
         "the plain median."),
        "",
        ("| face | vertices | triangles | s / sequence (median) | frames/s | ratio to target "
         "| GL draw (61) | visibility (61) | PNG (61) | MB on disk | s with appearance "
         "| x plain |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        b = r["breakdown_s"]
        lines.append(
            f"| {r['face']} | {r['vertices']} | {r['triangles']} | {r['sequence_s_median']:.2f} "
            f"| {r['fps_median']:.1f} | {r['ratio_to_target']:.2f}x "
            f"| {b['gl_draw_and_read_61']:.2f} s | {b['visibility_61']:.2f} s "
            f"| {b['png_encode_61_rgb_and_mask']:.2f} s | {r['bytes_on_disk'] / 1e6:.1f} "
            f"| {r['appearance_s_median']:.2f} | {r['appearance_over_plain']:.2f} |"
        )
    with atomic_path(out / "render.md") as tmpf:
        tmpf.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    for r in results:
        print(f"{r['face']}: {r['frames']} frames in {r['sequence_s_median']:.2f} s "
              f"= {r['fps_median']:.1f} frames/s; target {TARGET_S:.0f} s -> "
              f"{r['ratio_to_target']:.2f}x {'(meets)' if r['ratio_to_target'] >= 1 else '(MISSES)'}")
    print(f"results: {out / 'render.json'}, {out / 'render.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
