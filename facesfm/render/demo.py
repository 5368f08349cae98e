"""``facesfm demo`` (what ``make demo`` runs): render one built-in face sequence and summarise.

Needs no shared data: the face comes from :class:`facesfm.faces.builtin.BuiltinFaceModel`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facesfm.render.config import RenderConfig

__all__ = ["run_demo"]


def run_demo(out: str | Path = "out/demo", seed: int = 0, overwrite: bool = True,
             echo=print):
    """Render a 61-frame 384x384 yaw sweep (-60..+60 degrees every 2) of the built-in face
    with seed ``seed`` into ``out`` and print frames, time, fps, visible landmarks per frame
    (min/mean/max) and where the files are. Returns the SequenceResult."""
    from facesfm.faces.builtin import BuiltinFaceModel
    from facesfm.render.writer import render_sequence

    out = Path(out)
    t0 = time.perf_counter()
    mesh, coeffs = BuiltinFaceModel().sample(seed)
    t_face = time.perf_counter() - t0
    cfg = RenderConfig()
    res = render_sequence(mesh, out, cfg, seed=seed, overwrite=overwrite,
                          face_info={"source": "builtin", "name": mesh.name, "seed": seed,
                                     "coeffs": coeffs})
    vis = res.visible_per_frame
    echo(f"facesfm demo: built-in face (seed {seed}), {len(mesh.vertices)} vertices, "
         f"made in {t_face:.1f} s")
    echo(f"rendered {res.frames} frames {cfg.width}x{cfg.height} (yaw "
         f"{cfg.trajectory.yaw_min:+.0f}..{cfg.trajectory.yaw_max:+.0f} deg) with all ground "
         f"truth in {res.seconds:.1f} s ({res.frames / res.seconds:.1f} frames/s)")
    echo(f"visible landmarks per frame (of {cfg.landmarks}): min {vis.min()}, "
         f"mean {np.mean(vis):.1f}, max {vis.max()}")
    from facesfm.render.preview import contact_sheet

    preview = contact_sheet(out, out / "preview.png", n_frames=5)
    echo(f"files: {out}/sequence.json, rgb/, depth/, mask/, landmarks.npz, mesh.ply, colmap/")
    echo(f"preview (5 views, visible landmarks coloured by ID): {preview}")
    return res
