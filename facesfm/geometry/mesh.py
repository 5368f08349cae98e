"""Triangle-mesh quantities shared by the face models, the renderer and evaluation."""

from __future__ import annotations

import numpy as np

__all__ = ["outward_sign", "vertex_normals"]


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
