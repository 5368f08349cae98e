"""Export a sequence's ground truth as a COLMAP text model (cameras, images, points3D).

COLMAP conventions differ from facesfm's in one place: COLMAP puts the centre of the
top-left pixel at (0.5, 0.5), facesfm (OpenCV) at (0, 0). So the principal point and every
2-D point are shifted by +0.5 px on export. Poses are the same: COLMAP's image pose is
``cam_from_world`` (qw qx qy qz tx ty tz), i.e. our ``cam_T_world``.

Written files (one shared PINHOLE camera, CAMERA_ID 1):

* ``cameras.txt``:  ``1 PINHOLE W H fx fy cx+0.5 cy+0.5``
* ``images.txt``:   per frame ``IMAGE_ID QW QX QY QZ TX TY TZ 1 NAME`` (IMAGE_ID = frame
  position + 1, NAME = the file name in ``rgb/``; COLMAP splits the line at white space, so
  a name's white space is written as ``_``: :func:`colmap_name`), then its visible landmarks as
  ``X Y POINT3D_ID`` with POINT3D_ID = landmark ID + 1.
* ``points3D.txt``: every landmark visible in at least one frame: ``POINT3D_ID X Y Z R G B
  0 TRACK[]`` with TRACK = (IMAGE_ID, POINT2D_IDX) pairs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from facesfm.errors import InputError

__all__ = ["colmap_name", "read_colmap_points", "rotation_to_quaternion", "write_colmap_text"]


def colmap_name(name: str) -> str:
    """``name`` as COLMAP's text format can hold it: each white-space character as ``_``
    (COLMAP reads a line's fields up to the next space, so "img 1.png" would come back as
    "img")."""
    return re.sub(r"\s", "_", name)


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) unit quaternion (qw, qx, qy, qz) with qw >= 0.

    Shepperd's method: divide by the largest of the four squared components, so the result
    is accurate for every rotation (including 180 degrees).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation_to_quaternion: expected (3, 3), got {R.shape}")
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    # 4 * squares of (w, x, y, z)
    sq = np.array([1 + tr, 1 + R[0, 0] - R[1, 1] - R[2, 2], 1 - R[0, 0] + R[1, 1] - R[2, 2],
                   1 - R[0, 0] - R[1, 1] + R[2, 2]])
    k = int(np.argmax(sq))
    s = 2.0 * np.sqrt(max(sq[k], 1e-300))  # = 4 * |q_k|
    if k == 0:
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif k == 1:
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif k == 2:
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def write_colmap_text(
    folder: str | Path,
    K: np.ndarray,
    width: int,
    height: int,
    cam_T_world: np.ndarray,
    image_names: list[str],
    landmark_ids: np.ndarray,
    xyz: np.ndarray,
    uv: np.ndarray,
    visible: np.ndarray,
    colors: np.ndarray | None = None,
) -> None:
    """Write cameras.txt, images.txt and points3D.txt into ``folder``.

    K: (3, 3) OpenCV intrinsics; cam_T_world: (F, 4, 4); image_names: F names;
    landmark_ids: (L,) int; xyz: (L, 3) world mm; uv: (F, L, 2) OpenCV pixels;
    visible: (F, L) bool; colors: (L, 3) uint8 or None (grey).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    F, L = visible.shape
    if cam_T_world.shape != (F, 4, 4) or uv.shape != (F, L, 2) or xyz.shape != (L, 3):
        raise ValueError("write_colmap_text: inconsistent shapes "
                         f"{cam_T_world.shape}, {uv.shape}, {xyz.shape}, {visible.shape}")
    if len(image_names) != F or len(landmark_ids) != L:
        raise ValueError("write_colmap_text: image_names/landmark_ids do not match F/L")
    if colors is None:
        colors = np.full((L, 3), 128, dtype=np.uint8)

    fx, fy = float(K[0, 0]), float(K[1, 1])
    cx, cy = float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5
    (folder / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "# Number of cameras: 1\n"
        f"1 PINHOLE {int(width)} {int(height)} {fx!r} {fy!r} {cx!r} {cy!r}\n"
    )

    # POINT2D_IDX of landmark j in image i: its rank among the image's visible landmarks
    rank = np.cumsum(visible, axis=1) - 1
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {F}",
    ]
    for i in range(F):
        q = rotation_to_quaternion(cam_T_world[i, :3, :3])
        t = cam_T_world[i, :3, 3]
        vals = " ".join(repr(float(a)) for a in (*q, *t))
        lines.append(f"{i + 1} {vals} 1 {colmap_name(image_names[i])}")
        idx = np.flatnonzero(visible[i])
        if len(idx) == 0:  # a frame that sees no landmark: an empty POINTS2D line
            lines.append("")
            continue
        rows = np.empty((len(idx), 3), dtype=object)
        rows[:, :2] = (uv[i, idx] + 0.5).tolist()  # Python floats: %r is their shortest repr
        rows[:, 2] = (np.asarray(landmark_ids)[idx] + 1).tolist()
        lines.append(" ".join(["%r %r %d"] * len(idx)) % tuple(rows.ravel()))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")

    seen = np.flatnonzero(visible.any(axis=0))
    plines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(seen)}",
    ]
    for j in seen:
        x, y, z = (repr(float(a)) for a in xyz[j])
        r, g, b = (int(c) for c in colors[j])
        imgs = np.flatnonzero(visible[:, j])
        track = " ".join(f"{i + 1} {k}" for i, k in zip(imgs.tolist(), rank[imgs, j].tolist()))
        plines.append(f"{int(landmark_ids[j]) + 1} {x} {y} {z} {r} {g} {b} 0 {track}")
    (folder / "points3D.txt").write_text("\n".join(plines) + "\n")


def read_colmap_points(folder) -> dict[int, np.ndarray]:
    """The landmark points of a COLMAP text model written by :func:`write_colmap_text`:
    {landmark ID (POINT3D_ID - 1): (3,) xyz}; InputError when points3D.txt is missing or
    malformed."""
    path = Path(folder) / "points3D.txt"
    if not path.is_file():
        raise InputError(f"{path}: not found")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        try:
            out[int(f[0]) - 1] = np.array([float(v) for v in f[1:4]])
        except (ValueError, IndexError):
            raise InputError(f"{path}, line {n}: not a COLMAP point line") from None
    return out
