"""Captures made from our renders, for testing the front end as a user's input: the rendered
head (where its depth map is > 0) pasted at an offset into a larger frame of another size over
a photograph, written as a plain image folder without sequence.json. The ground truth stays
known: poses are the sequence's, K moves by the offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.io import atomic_dir

__all__ = ["Composite", "composite_capture"]


@dataclass(frozen=True)
class Composite:
    """What :func:`composite_capture` wrote: the folder, the frames' K (3, 3) in their pixels
    (the sequence's K moved by the offset) and the sequence's cam_T_world (F, 4, 4)."""

    path: Path
    K: np.ndarray
    cam_T_world: np.ndarray
    names: tuple[str, ...]


def _fit(background: np.ndarray, width: int, height: int) -> np.ndarray:
    """``background`` (h, w, 3) uint8 scaled to cover width x height and centre-cropped."""
    h, w = background.shape[:2]
    s = max(width / w, height / h)
    im = Image.fromarray(np.ascontiguousarray(background[..., :3])).resize(
        (max(width, round(w * s)), max(height, round(h * s))), Image.Resampling.BILINEAR)
    a = np.asarray(im)
    y, x = (a.shape[0] - height) // 2, (a.shape[1] - width) // 2
    return a[y:y + height, x:x + width]


def composite_capture(sequence: str | Path, out: str | Path, width: int, height: int,
                      offset: tuple[int, int], background: np.ndarray | None = None,
                      head_only: bool = True, suffix: str = ".png", quality: int = 92,
                      overwrite: bool = False) -> Composite:
    """Write the frames of the sequence folder ``sequence`` into the image folder ``out``,
    each pasted at ``offset`` (x, y: the render's top-left pixel) into a ``width`` x
    ``height`` frame over ``background`` (an RGB photograph, scaled to cover; None: black).
    ``head_only``: paste the head's pixels only (depth > 0), else the whole render. Files are
    ``img_000.png`` ... (``suffix`` ".jpg": JPEG at ``quality``)."""
    seq = load_sequence(sequence)
    x, y = (int(v) for v in offset)
    if not (0 <= x and 0 <= y and x + seq.width <= width and y + seq.height <= height):
        raise InputError(f"a {seq.width}x{seq.height} render at offset {offset} does not fit "
                         f"in {width}x{height}")
    bg = (np.zeros((height, width, 3), np.uint8) if background is None
          else _fit(np.asarray(background), width, height))
    names = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for i in range(len(seq)):
            frame = bg.copy()
            sub = frame[y:y + seq.height, x:x + seq.width]
            im = seq.image(i)
            if head_only:
                m = seq.depth(i) > 0
                sub[m] = im[m]
            else:
                sub[:] = im
            name = f"img_{i:03d}{suffix}"
            kw = {"quality": quality} if suffix in (".jpg", ".jpeg") else {}
            Image.fromarray(frame).save(tmp / name, **kw)
            names.append(name)
    K = np.asarray(seq.K, dtype=np.float64).copy()
    K[0, 2] += x
    K[1, 2] += y
    return Composite(Path(out), K, np.asarray(seq.cam_T_world).copy(), tuple(names))
