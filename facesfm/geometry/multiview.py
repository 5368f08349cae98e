"""Multi-view geometry on depth maps and pixel observations (numpy, float64, mm).

Frames: depth maps are camera-frame z in mm at pixel centres (OpenCV, pixel (r, c) at
uv = (c, r)); uv arrays are (F, N, 2) OpenCV pixels of N points in F frames, with a (F, N)
weight per observation (0 = not observed).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

__all__ = ["depth_to_points", "hull_masks", "sample_depth"]


def sample_depth(depth: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear depth at sub-pixel positions.

    depth: (F, H, W) mm, 0 = no depth; uv: (F, N, 2) OpenCV pixels (NaN allowed).
    Returns (z (F, N) mm, valid (F, N) bool); valid needs all four neighbours > 0 (no
    blending with the background across a silhouette). Invalid entries have z = 0.
    """
    depth = np.asarray(depth)
    uv = np.asarray(uv, dtype=np.float64)
    if depth.ndim != 3 or uv.ndim != 3 or uv.shape[-1] != 2 or uv.shape[0] != depth.shape[0]:
        raise ValueError(f"sample_depth: depth (F, H, W) and uv (F, N, 2) expected, got "
                         f"{depth.shape} and {uv.shape}")
    F, H, W = depth.shape
    u, v = uv[..., 0], uv[..., 1]
    ok = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (v >= 0) & (u <= W - 1) & (v <= H - 1)
    u = np.where(ok, u, 0.0)
    v = np.where(ok, v, 0.0)
    c0 = np.clip(np.floor(u).astype(np.int64), 0, max(W - 2, 0))
    r0 = np.clip(np.floor(v).astype(np.int64), 0, max(H - 2, 0))
    c1, r1 = np.minimum(c0 + 1, W - 1), np.minimum(r0 + 1, H - 1)
    a, b = u - c0, v - r0
    f = np.arange(F)[:, None]
    d00, d01 = depth[f, r0, c0], depth[f, r0, c1]
    d10, d11 = depth[f, r1, c0], depth[f, r1, c1]
    z = (1 - b) * ((1 - a) * d00 + a * d01) + b * ((1 - a) * d10 + a * d11)
    valid = ok & (d00 > 0) & (d01 > 0) & (d10 > 0) & (d11 > 0)
    return np.where(valid, z, 0.0), valid


def depth_to_points(depth: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None,
                    stride: int = 1, normals: bool = True
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Camera-frame points of one depth map and their normals.

    depth: (H, W) mm (0 = none); K: (3, 3); mask: (H, W) bool or None (depth > 0).
    Returns (X (P, 3) camera mm, n (P, 3) unit normals facing the camera, or None when
    ``normals`` is False, rc (P, 2) int (row, col) of each point). Normals come from central
    differences of the back-projected map (one-sided at holes); pixels without a usable
    neighbour pair get the ray direction. The work is done on the selected pixels' bounding
    box and a 1-pixel margin (the neighbours a normal reads), not on the whole frame.
    """
    depth = np.asarray(depth, dtype=np.float64)
    H, W = depth.shape
    have_all = depth > 0
    sel = have_all if mask is None else (have_all & np.asarray(mask, dtype=bool))
    if stride > 1:
        sub = np.zeros_like(sel)
        sub[::stride, ::stride] = True
        sel = sel & sub
    rows, cols = np.nonzero(sel.any(1))[0], np.nonzero(sel.any(0))[0]
    if len(rows) == 0:
        return np.zeros((0, 3)), (np.zeros((0, 3)) if normals else None), np.zeros((0, 2), int)
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, H)
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, W)
    d = depth[r0:r1, c0:c1]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    c = np.arange(c0, c1, dtype=np.float64)
    r = np.arange(r0, r1, dtype=np.float64)
    X = np.empty(d.shape + (3,))
    X[..., 0] = (c[None, :] - cx) / fx * d
    X[..., 1] = (r[:, None] - cy) / fy * d
    X[..., 2] = d
    rr, cc = np.nonzero(sel[r0:r1, c0:c1])
    rc = np.stack([rr + r0, cc + c0], 1)
    if not normals:
        return X[rr, cc], None, rc
    have = have_all[r0:r1, c0:c1]
    h, w = d.shape

    def diff(axis):
        fwd = np.roll(X, -1, axis) - X
        bwd = X - np.roll(X, 1, axis)
        hf = np.roll(have, -1, axis)
        hb = np.roll(have, 1, axis)
        n = h if axis == 0 else w
        # the crop's edges are the frame's edges, or margin pixels no selected point reads
        if axis == 0:
            hf[n - 1, :] = False
            hb[0, :] = False
        else:
            hf[:, n - 1] = False
            hb[:, 0] = False
        dd = np.where((hf & hb)[..., None], 0.5 * (fwd + bwd),
                      np.where(hf[..., None], fwd, np.where(hb[..., None], bwd, 0.0)))
        return dd, hf | hb

    du, okc = diff(1)
    dv, okr = diff(0)
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    good = (okc & okr)[..., None] & (norm > 1e-12)
    ray = X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)
    n = np.where(good, n / np.maximum(norm, 1e-300), -ray)
    flip = np.sum(n * X, axis=-1) > 0  # face the camera (at the origin)
    n[flip] *= -1
    return X[rr, cc], n[rr, cc], rc


def hull_masks(uv: np.ndarray, weight: np.ndarray, height: int, width: int) -> np.ndarray:
    """(F, H, W) bool: pixel centres inside the convex hull of each frame's observed
    landmarks, its edges included (the face region for a network depth map, which has no
    mask of its own). Frames with fewer than 3 observed points, or all on a line, are empty.

    Each hull is tested edge by edge (a half-plane per edge) over its bounding box only."""
    out = np.zeros((len(uv), height, width), dtype=bool)
    for f in range(len(uv)):
        p = np.asarray(uv[f], dtype=np.float64)[np.asarray(weight[f]) > 0]
        if len(p) < 3:
            continue
        try:
            hull = p[ConvexHull(p).vertices]  # counter-clockwise in (u, v)
        except QhullError:
            continue
        c0, r0 = np.maximum(np.ceil(hull.min(0)), 0).astype(int)
        c1, r1 = np.minimum(np.floor(hull.max(0)), [width - 1, height - 1]).astype(int)
        if c1 < c0 or r1 < r0:
            continue
        vv, uu = np.mgrid[r0:r1 + 1, c0:c1 + 1].astype(np.float64)
        inside = np.ones(uu.shape, dtype=bool)
        for a, b in zip(hull, np.roll(hull, -1, axis=0)):
            # left of (or on) the directed edge a -> b, with a tolerance for rounding
            cross = (b[0] - a[0]) * (vv - a[1]) - (b[1] - a[1]) * (uu - a[0])
            inside &= cross >= -1e-9 * np.hypot(*(b - a))
        out[f, r0:r1 + 1, c0:c1 + 1] = inside
    return out
