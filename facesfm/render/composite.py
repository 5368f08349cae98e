"""Captures made from our renders, for testing the front end as a user's input: the rendered
head (where its depth map is > 0) pasted at an offset into a larger frame of another size over
a photograph, written as a plain image folder without sequence.json. The ground truth stays
known: poses are the sequence's, K moves by the offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.geometry.warp import sample_image
from facesfm.io import atomic_dir

__all__ = ["Composite", "composite_capture", "panned_capture"]


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


def _rotation(pan_deg: float, tilt_deg: float) -> np.ndarray:
    """The camera turned by ``pan_deg`` about its y axis (positive: to its right, so the scene
    moves left in the image) and then ``tilt_deg`` about its x axis (positive: down)."""
    a, b = np.radians(pan_deg), np.radians(tilt_deg)
    Ry = np.array([[np.cos(a), 0.0, -np.sin(a)], [0.0, 1.0, 0.0], [np.sin(a), 0.0, np.cos(a)]])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), np.sin(b)], [0.0, -np.sin(b), np.cos(b)]])
    return Rx @ Ry


def panned_capture(sequence: str | Path, out: str | Path, width: int, height: int,
                   pan_deg, tilt_deg=None, background: np.ndarray | None = None,
                   suffix: str = ".png", overwrite: bool = False) -> Composite:
    """Write the frames of ``sequence`` as a camera with the same focal length would have
    seen them turned by ``pan_deg[i]`` / ``tilt_deg[i]`` degrees about its own centre (F,
    each; see :func:`_rotation`), in a ``width`` x ``height`` frame with the principal point
    at its centre: the head wanders across the frame as in a hand-held capture, and one K
    still holds for every frame. Each frame is the render resampled through the rotation's
    homography (bilinear, :func:`facesfm.geometry.warp.sample_image`), its head's pixels (depth > 0) pasted over ``background``; the
    true poses are the sequence's turned by the same rotations."""
    seq = load_sequence(sequence)
    F = len(seq)
    pan = np.broadcast_to(np.asarray(pan_deg, dtype=np.float64), (F,))
    tilt = np.broadcast_to(np.asarray(0.0 if tilt_deg is None else tilt_deg, np.float64), (F,))
    Kr = np.asarray(seq.K, dtype=np.float64)
    Ko = Kr.copy()
    Ko[0, 2], Ko[1, 2] = (width - 1) / 2, (height - 1) / 2
    bg = (np.zeros((height, width, 3), np.uint8) if background is None
          else _fit(np.asarray(background), width, height))
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(Ko).T  # (H, W, 3)
    poses = np.asarray(seq.cam_T_world, dtype=np.float64).copy()
    names = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for i in range(F):
            R = _rotation(pan[i], tilt[i])
            d = rays @ R  # = (R^T d_out) per pixel: the ray in the render's camera
            front = d[..., 2] > 1e-6
            z = np.where(front, d[..., 2], 1.0)
            ur = Kr[0, 0] * d[..., 0] / z + Kr[0, 2]
            vr = Kr[1, 1] * d[..., 1] / z + Kr[1, 2]
            src = np.concatenate([seq.image(i), (seq.depth(i) > 0)[..., None]], -1)
            seen = sample_image(
                torch.as_tensor(src, dtype=torch.float64).permute(2, 0, 1)[None],
                torch.as_tensor(np.stack([ur, vr], -1))[None])[0].permute(1, 2, 0).numpy()
            col, cov = seen[..., :3], np.where(front, seen[..., 3], 0.0)[..., None]
            frame = cov * col + (1 - cov) * bg
            name = f"img_{i:03d}{suffix}"
            Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8)).save(tmp / name)
            names.append(name)
            T = np.eye(4)
            T[:3, :3] = R
            poses[i] = T @ poses[i]
    return Composite(Path(out), Ko, poses, tuple(names))

