"""A contact sheet of a sequence: a few frames with their visible landmarks drawn on top.

Landmark colour encodes the landmark ID (a hue wheel over IDs), so the same colour marks the
same face point in every view: a quick visual check of ID consistency across yaw.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facesfm.data.format import load_sequence
from facesfm.io import atomic_path

__all__ = ["contact_sheet"]


def _id_colours(n: int) -> np.ndarray:
    golden = 0.61803398875
    return np.array(
        [colorsys.hsv_to_rgb((k * golden) % 1.0, 0.85, 1.0) for k in range(n)]
    ) * 255


def contact_sheet(seq_path: str | Path, out_png: str | Path, n_frames: int = 5,
                  tile: int = 256, landmarks: int | None = None) -> Path:
    """Write ``n_frames`` evenly spaced frames of a sequence side by side, each with its
    visible landmarks (IDs < ``landmarks``) as dots; returns the PNG path."""
    seq = load_sequence(seq_path)
    F = len(seq)
    idx = np.unique(np.linspace(0, F - 1, min(n_frames, F)).round().astype(int))
    L = seq.uv.shape[1] if landmarks is None else min(landmarks, seq.uv.shape[1])
    colours = _id_colours(L).astype(np.uint8)
    sheet = Image.new("RGB", (tile * len(idx), tile), (0, 0, 0))
    for j, i in enumerate(idx):
        img = Image.fromarray(seq.image(int(i)))
        s = tile / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR)
        draw = ImageDraw.Draw(img)
        vis = np.flatnonzero(seq.visible[i, :L])
        # pixel centres at integers in our convention, at +0.5 in PIL's
        uv = (seq.uv[i, vis] + 0.5) * s
        r = max(1.0, tile / 256)
        for (u, v), k in zip(uv, vis):
            draw.ellipse((u - r, v - r, u + r, v + r), fill=tuple(int(c) for c in colours[k]))
        sheet.paste(img, (tile * j, 0))
    with atomic_path(out_png) as tmp:
        sheet.save(tmp)
    return Path(out_png)
