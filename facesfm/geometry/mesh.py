"""Triangle-mesh quantities shared by the face models, the renderer and evaluation."""

from __future__ import annotations

import numpy as np

__all__ = ["outward_sign", "patch_normals", "vertex_normals"]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals.

    vertices: (V, 3) float; faces: (T, 3) int, counter-clockwise seen from outside.
    Returns (V, 3) float64; a vertex in no triangle (or only degenerate ones) gets (0, 0, 0).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"vertex_normals: expected (V,3) and (T,3), got {v.shape}, {f.shape}")
    # The cross product's length is twice the area, so summing it weights by area.
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        n[:, 0] += np.bincount(f[:, k], weights=fn[:, 0], minlength=len(v))
        n[:, 1] += np.bincount(f[:, k], weights=fn[:, 1], minlength=len(v))
        n[:, 2] += np.bincount(f[:, k], weights=fn[:, 2], minlength=len(v))
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def outward_sign(vertices: np.ndarray, normals: np.ndarray) -> float:
    """+1 if the normals point away from the mesh centre on average, else -1.

    Used to orient meshes whose triangles are wound clockwise (a user's scan).
    """
    c = 0.5 * (vertices.min(0) + vertices.max(0))
    return 1.0 if float(np.sum(normals * (vertices - c))) >= 0 else -1.0


def patch_normals(
    vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, radius: float
) -> np.ndarray:
    """Unit normals of the surface patch around each point: the area-weighted mean normal of
    every triangle whose centroid lies within ``radius`` (Euclidean, mesh units) of it.

    A vertex normal is the orientation of the few triangles at one vertex; on a seam (closed
    lips, where the inner-lip vertices have normals pointing into the mouth) it says little
    about which way the surface an image shows faces. Averaging over a ball gathers both sides
    of the seam. A point whose ball holds no triangle centroid gets the normal of the nearest
    triangle; a ball whose normals cancel exactly gets (0, 0, 0).

    vertices: (V, 3); faces: (T, 3) int, wound as for :func:`vertex_normals` (the result has
    the same orientation); points: (P, 3); radius > 0.
    Returns (P, 3) float64.
    """
    from scipy.spatial import cKDTree

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"patch_normals: points must be (P, 3), got {p.shape}")
    if not radius > 0:
        raise ValueError(f"patch_normals: radius must be > 0, got {radius}")
    tri = v[f]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # 2 x area x unit normal
    tree = cKDTree(tri.mean(axis=1))
    out = np.zeros_like(p)
    for i, idx in enumerate(tree.query_ball_point(p, r=radius)):
        out[i] = fn[idx].sum(axis=0) if idx else fn[tree.query(p[i])[1]]
    length = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, length, out=np.zeros_like(out), where=length > 0)
