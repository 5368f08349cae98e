"""Export a sequence's ground truth as a COLMAP text model (cameras, images, points3D).

COLMAP conventions differ from facesfm's in one place: COLMAP puts the centre of the
top-left pixel at (0.5, 0.5), facesfm (OpenCV) at (0, 0). So the principal point and every
2-D point are shifted by +0.5 px on export. Poses are the same: COLMAP's image pose is
``cam_from_world`` (qw qx qy qz tx ty tz), i.e. our ``cam_T_world``.

Written files (one shared PINHOLE camera, CAMERA_ID 1):

* ``cameras.txt``:  ``1 PINHOLE W H fx fy cx+0.5 cy+0.5``
* ``images.txt``:   per frame ``IMAGE_ID QW QX QY QZ TX TY TZ 1 NAME`` (IMAGE_ID = frame
  position + 1, NAME = the file name in ``rgb/``), then its visible landmarks as
  ``X Y POINT3D_ID`` with POINT3D_ID = landmark ID + 1.
* ``points3D.txt``: every landmark visible in at least one frame: ``POINT3D_ID X Y Z R G B
  0 TRACK[]`` with TRACK = (IMAGE_ID, POINT2D_IDX) pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["rotation_to_quaternion", "write_colmap_text"]


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) unit quaternion (qw, qx, qy, qz) with qw >= 0."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
    q = np.array([w, x, y, z])
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

    tracks: list[list[str]] = [[] for _ in range(L)]
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
        lines.append(f"{i + 1} {vals} 1 {image_names[i]}")
        idx = np.flatnonzero(visible[i])
        pts = []
        for k, j in enumerate(idx):
            u, v = uv[i, j] + 0.5
            pts.append(f"{float(u)!r} {float(v)!r} {int(landmark_ids[j]) + 1}")
            tracks[j].append(f"{i + 1} {k}")
        lines.append(" ".join(pts))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")

    seen = [j for j in range(L) if tracks[j]]
    plines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(seen)}",
    ]
    for j in seen:
        x, y, z = (repr(float(a)) for a in xyz[j])
        r, g, b = (int(c) for c in colors[j])
        plines.append(f"{int(landmark_ids[j]) + 1} {x} {y} {z} {r} {g} {b} 0 {' '.join(tracks[j])}")
    (folder / "points3D.txt").write_text("\n".join(plines) + "\n")
