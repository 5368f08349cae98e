"""Synthetic skin albedo: a deterministic, per-seed texture that a photometric loss can use.

Appearance is a function of the 3D surface point (mm, face looking down +z) and of the 68
semantic landmarks, so any mesh with landmarks gets the same kind of skin:

* identity level: a skin tone from a light-to-dark palette, redness, hair and iris colours;
* low frequency: blotches (3D value noise, 10-30 mm), redness on the cheeks and nose,
  darker rings round the eyes;
* regions from distances to the landmark polylines: eyebrows (17-21, 22-26) with hair-like
  streaks, eyes (36-41, 42-47) with a lash line, sclera and iris, lips (48-59 outer,
  60-67 inner) redder and darker with a darker mouth line;
* high frequency: freckles and moles (sparse 3D spots), pores and fine grain.

Smooth fields are evaluated per vertex and interpolated; sharp ones per texel, only inside the
bounding boxes of their landmarks, which keeps a 1024^2 texture of a 26k-vertex mesh near a
second on one CPU core. :func:`texel_positions` rasterises the mesh in UV space (vectorised
numpy, bucketed by triangle size) and is usable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["SkinParams", "skin_params", "synthesize_albedo", "texel_positions", "vertex_albedo"]

# sRGB skin tones from light to dark (interpolated by the identity's tone in [0, 1]).
_TONES = np.array(
    [
        [0.94, 0.80, 0.70],
        [0.89, 0.70, 0.58],
        [0.80, 0.59, 0.46],
        [0.66, 0.46, 0.33],
        [0.47, 0.32, 0.22],
        [0.33, 0.22, 0.15],
    ]
)
_HAIR = np.array(
    [
        [0.10, 0.07, 0.05],  # black-brown
        [0.20, 0.13, 0.08],  # dark brown
        [0.33, 0.22, 0.13],  # brown
        [0.45, 0.33, 0.20],  # light brown
        [0.42, 0.20, 0.10],  # auburn
    ]
)
_IRIS = np.array(
    [
        [0.30, 0.18, 0.09],  # brown
        [0.18, 0.11, 0.06],  # dark brown
        [0.30, 0.42, 0.55],  # blue
        [0.32, 0.40, 0.25],  # green
        [0.42, 0.33, 0.17],  # hazel
    ]
)

_RIGHT_BROW, _LEFT_BROW = np.arange(17, 22), np.arange(22, 27)
_RIGHT_EYE, _LEFT_EYE = np.arange(36, 42), np.arange(42, 48)
_OUTER_LIP, _INNER_LIP = np.arange(48, 60), np.arange(60, 68)


@dataclass(frozen=True)
class SkinParams:
    """Identity-level appearance drawn from a seed (all colours sRGB in [0, 1])."""

    skin: np.ndarray  # (3,)
    redness: float
    blotch: float
    freckles: float  # spot density in [0, 1]
    hair: np.ndarray  # (3,) brow colour
    brow_density: float
    lip: np.ndarray  # (3,) multiplicative lip tint
    iris: np.ndarray  # (3,)
    noise_seed: int


def skin_params(seed: int) -> SkinParams:
    """The appearance of identity ``seed`` (deterministic)."""
    rng = np.random.default_rng([int(seed), 0x5C1A])
    t = rng.uniform(0.0, 1.0) * (len(_TONES) - 1)
    i = min(int(t), len(_TONES) - 2)
    skin = _TONES[i] * (1 - (t - i)) + _TONES[i + 1] * (t - i)
    skin = skin * (1 + rng.normal(0, 0.03, 3))  # hue jitter
    lip = np.array([0.86, 0.62, 0.64]) * (1 + rng.normal(0, 0.04, 3))
    # brow hair is always clearly darker than the skin it grows on
    hair = np.minimum(_HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.15), 0.45 * skin)
    return SkinParams(
        skin=np.clip(skin, 0.05, 1.0),
        redness=float(rng.uniform(0.3, 1.0)),
        blotch=float(rng.uniform(0.6, 1.4)),
        freckles=float(rng.uniform(0.0, 1.0) ** 2),
        hair=hair,
        brow_density=float(rng.uniform(0.65, 0.95)),
        lip=np.clip(lip, 0.3, 1.0),
        iris=_IRIS[rng.integers(len(_IRIS))],
        noise_seed=int(rng.integers(1, 2**31 - 1)),
    )


# --------------------------------------------------------------------------------------
# noise


def _hash(ix, iy, iz, seed: int) -> np.ndarray:
    """Integer lattice hash -> uniform floats in [0, 1)."""
    h = (
        ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        ^ iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        ^ iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
        ^ np.uint64(seed) * np.uint64(0xD6E8FEB86659FD93)
    )
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _value_noise(p: np.ndarray, cell, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [-1, 1] at points (N, 3) mm; ``cell`` mm (scalar or (3,))."""
    q = p / np.asarray(cell, np.float64)
    i = np.floor(q)
    f = q - i
    f = f * f * (3 - 2 * f)
    i = i.astype(np.int64)
    out = np.zeros(len(p))
    with np.errstate(over="ignore"):
        for dx in (0, 1):
            wx = f[:, 0] if dx else 1 - f[:, 0]
            for dy in (0, 1):
                wy = f[:, 1] if dy else 1 - f[:, 1]
                for dz in (0, 1):
                    wz = f[:, 2] if dz else 1 - f[:, 2]
                    h = _hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
                    out += wx * wy * wz * h
    return 2 * out - 1


def _spots(p: np.ndarray, cell: float, density: float, r_lo: float, r_hi: float, seed: int):
    """Sparse round spots: at most one per 3D cell, kept inside its cell. Returns (N,) in
    [0, 1] (1 at a spot centre, 0 away from spots)."""
    q = p / cell
    i = np.floor(q).astype(np.int64)
    with np.errstate(over="ignore"):
        h = (_hash(i[:, 0], i[:, 1], i[:, 2], seed) * 2.0**53).astype(np.uint64)
    # five 10-bit uniforms from one 53-bit hash: centre (3), radius, presence
    u = [((h >> np.uint64(10 * k)) & np.uint64(1023)).astype(np.float64) / 1024.0 for k in range(5)]
    margin = r_hi / cell
    centre = i + margin + (1 - 2 * margin) * np.stack(u[:3], 1)
    radius = (r_lo + (r_hi - r_lo) * u[3]) / cell
    d = np.linalg.norm(q - centre, axis=1) / radius
    s = np.sqrt(np.clip(1.0 - d, 0.0, None))
    return np.where(u[4] < density, s, 0.0)


# --------------------------------------------------------------------------------------
# landmark geometry


def _polyline_dist(p: np.ndarray, poly: np.ndarray, closed: bool) -> np.ndarray:
    """Euclidean distance (N,) from points (N, 3) to a 3D polyline (M, 3)."""
    a = poly if closed else poly[:-1]
    b = np.roll(poly, -1, axis=0) if closed else poly[1:]
    best = np.full(len(p), np.inf)
    for a_k, b_k in zip(a, b):
        ab = b_k - a_k
        ap = p - a_k
        t = np.clip(ap @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        d = ap - t[:, None] * ab
        np.minimum(best, np.einsum("ij,ij->i", d, d), out=best)
    return np.sqrt(best)


def _inside_xy(p: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Crossing-number test of points' (x, y) in the polygon's (x, y) (both (., 3))."""
    x, y = p[:, 0:1], p[:, 1:2]
    ax, ay = poly[:, 0], poly[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    cond = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = ax + (y - ay) * (bx - ax) / (by - ay)
    return (cond & (x < xc)).sum(1) % 2 == 1


def _box(p: np.ndarray, pts: np.ndarray, margin: float) -> np.ndarray:
    """Indices of points within the landmarks' bounding box grown by ``margin`` mm."""
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    m = (p[:, 0] >= lo[0]) & (p[:, 0] <= hi[0]) & (p[:, 1] >= lo[1]) & (p[:, 1] <= hi[1])
    m &= (p[:, 2] >= lo[2]) & (p[:, 2] <= hi[2])
    return np.flatnonzero(m)


def _smoothstep(x, a, b):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# --------------------------------------------------------------------------------------
# colour


def _smooth_color(p: np.ndarray, lm: np.ndarray | None, sp: SkinParams) -> np.ndarray:
    """Low-frequency skin colour (N, 3) at points (N, 3): tone, blotches, redness, eye rings."""
    s = sp.noise_seed
    col = np.tile(sp.skin, (len(p), 1))
    b = 0.6 * _value_noise(p, 22.0, s) + 0.4 * _value_noise(p, 9.0, s + 1)
    col *= 1 + 0.06 * sp.blotch * b[:, None]
    red = 0.5 + 0.5 * _value_noise(p, 14.0, s + 2)
    redness = 0.25 * sp.blotch * red**2
    if lm is not None:
        eye_r, eye_l = lm[_RIGHT_EYE].mean(0), lm[_LEFT_EYE].mean(0)
        cheek_r = (2 * eye_r + lm[48] + lm[2]) / 4
        cheek_l = (2 * eye_l + lm[54] + lm[14]) / 4
        for c, w, sig in ((cheek_r, 1.0, 16.0), (cheek_l, 1.0, 16.0), (lm[30], 0.8, 10.0)):
            redness = redness + w * np.exp(-0.5 * ((p - c) ** 2).sum(1) / sig**2)
        # darker, slightly cooler skin round the eyes
        for e in (eye_r, eye_l):
            ring = np.exp(-0.5 * ((p - e - [0, -3.0, 0]) ** 2).sum(1) / 11.0**2)
            col *= 1 - ring[:, None] * np.array([0.13, 0.15, 0.11])
    redness = sp.redness * np.clip(redness, 0, 1.3)
    col *= 1 + redness[:, None] * np.array([0.03, -0.09, -0.07])
    return col


def _detail(p: np.ndarray, col: np.ndarray, lm: np.ndarray | None, sp: SkinParams) -> np.ndarray:
    """Sharp features on top of the smooth colour (N, 3), returned as a new array."""
    out = col.copy()
    s = sp.noise_seed
    face = np.arange(len(p)) if lm is None else _box(p, np.asarray(lm, np.float64), 30.0)
    # everything below happens inside the face box: work on that subset only
    p, col = p[face], out[face]
    if len(face):
        q = p
        fr = _spots(q, 5.0, 0.5 * sp.freckles, 0.35, 1.0, s + 10)
        mole = _spots(q, 19.0, 0.35, 0.8, 1.7, s + 20)
        col *= 1 - 0.22 * fr[:, None] * np.array([0.8, 1.0, 1.2])
        col = col * (1 - mole[:, None]) + mole[:, None] * col * np.array([0.45, 0.36, 0.32])
    if lm is None or not len(face):
        out[face] = col
        return out
    lm = np.asarray(lm, np.float64)
    # eyebrows: a band under each brow polyline, with hair-like streaks along it
    for brow in (_RIGHT_BROW, _LEFT_BROW):
        line = lm[brow] + np.array([0.0, -2.0, 0.0])
        idx = _box(p, line, 8.0)
        if not len(idx):
            continue
        q = p[idx]
        d = _polyline_dist(q, line, closed=False)
        t = np.clip((q[:, 0] - line[0, 0]) / (line[-1, 0] - line[0, 0]), 0, 1)
        inner = t if brow[0] == 22 else 1 - t  # brows are thicker towards the nose
        half = 1.8 + 3.0 * inner**0.7  # a tapering tail
        band = 1 - _smoothstep(d, 0.5 * half, half)
        hair = 0.5 + 0.5 * _value_noise(q, np.array([1.6, 0.2, 0.2]), s + 30)
        a = sp.brow_density * band * (0.4 + 0.6 * hair)
        col[idx] = col[idx] * (1 - a[:, None]) + a[:, None] * sp.hair
    # eyes: sclera and iris inside the lid polygon, lash line on the rim
    for eye in (_RIGHT_EYE, _LEFT_EYE):
        poly = lm[eye]
        idx = _box(p, poly, 6.0)
        if not len(idx):
            continue
        q = p[idx]
        near = np.abs(q[:, 2] - poly[:, 2].mean()) < 15.0
        d = _polyline_dist(q, poly, closed=True)
        inside = _inside_xy(q, poly) & near
        centre = poly.mean(0)
        width = np.linalg.norm(poly[3] - poly[0])
        rr = np.hypot(q[:, 0] - centre[0], q[:, 1] - centre[1]) / width
        iris = sp.iris * (0.75 + 0.5 * rr[:, None] / 0.19)
        iris *= 1 - 0.45 * np.exp(-0.5 * ((rr[:, None] - 0.19) / 0.012) ** 2)  # limbal ring
        inner_col = np.where((rr < 0.19)[:, None], iris, np.array([0.86, 0.82, 0.80]))
        inner_col[rr < 0.075] = 0.04  # pupil
        c = col[idx]
        c[inside] = inner_col[inside]
        upper = q[:, 1] > centre[1]
        lash = np.exp(-0.5 * (d / np.where(upper, 0.9, 0.5)) ** 2) * near
        lash *= np.where(upper, 0.85, 0.5)
        c *= 1 - lash[:, None]
        col[idx] = c
    # lips: redder/darker inside the outer contour, soft 1 mm edge, darker mouth line
    outer, inner = lm[_OUTER_LIP], lm[_INNER_LIP]  # inner: 60, 61-63 upper, 64, 65-67 lower
    idx = _box(p, outer, 4.0)
    if len(idx):
        q = p[idx]
        near = np.abs(q[:, 2] - outer[:, 2].mean()) < 25.0
        d = _polyline_dist(q, outer, closed=True)
        ins = _inside_xy(q, outer) & near
        a = np.where(
            ins, 0.5 + 0.5 * _smoothstep(d, 0.0, 1.2), 0.5 - 0.5 * _smoothstep(d, 0.0, 1.2)
        )
        a = a * near
        lines = _value_noise(q, np.array([0.3, 2.5, 0.6]), s + 40)  # vertical lip lines
        tint = sp.lip * (1 + 0.05 * lines[:, None])
        c = col[idx]
        c = c * (1 - a[:, None]) + a[:, None] * c * tint
        mid = np.stack(
            [
                inner[0],
                (inner[1] + inner[7]) / 2,
                (inner[2] + inner[6]) / 2,
                (inner[3] + inner[5]) / 2,
                inner[4],
            ]
        )
        dm = _polyline_dist(q, mid, closed=False)
        c *= 1 - (0.55 * np.exp(-0.5 * (dm / 0.7) ** 2) * near)[:, None]
        col[idx] = c
    # nostrils: darker under the nose, beside the columella
    for k in ((31, 32), (34, 35)):
        c0 = lm[list(k)].mean(0) + np.array([0.0, 1.0, 0.0])
        idx = _box(p, c0[None], 6.0)
        if len(idx):
            g = np.exp(-0.5 * ((p[idx] - c0) ** 2).sum(1) / 2.5**2)
            col[idx] *= 1 - 0.5 * g[:, None]
    out[face] = col
    return out


def _check(vertices, lm68):
    v = np.asarray(vertices, np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    if lm68 is not None:
        lm68 = np.asarray(lm68, np.float64)
        if lm68.shape != (68, 3):
            raise ValueError(f"landmarks68_xyz must be (68, 3) or None, got {lm68.shape}")
    return v, lm68


def vertex_albedo(
    vertices: np.ndarray, landmarks68_xyz: np.ndarray | None, seed: int
) -> np.ndarray:
    """Per-vertex skin colour (V, 3) float32 in [0, 1] for meshes without texture coordinates.

    vertices: (V, 3) mm in the world frame (face looking down +z); landmarks68_xyz: (68, 3)
    mm or None (then skin tone, blotches and spots only). Same appearance as
    :func:`synthesize_albedo`, sampled at the vertices (so without pores).
    """
    v, lm = _check(vertices, landmarks68_xyz)
    sp = skin_params(seed)
    col = _detail(v, _smooth_color(v, lm, sp), lm, sp)
    return np.clip(col, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------
# rasterisation in UV space


def texel_positions(
    vertices: np.ndarray, faces: np.ndarray, face_uv: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise a mesh into its own texture space.

    vertices (V, 3), faces (T, 3), face_uv (T, 3, 2) in [0, 1] with v up; texel (row r,
    col c) has its centre at uv = ((c + 0.5) / size, 1 - (r + 0.5) / size).
    Returns (tri (size, size) int32 triangle id or -1, bary (size, size, 3) float32,
    pos (size, size, 3) float32 3D point of each covered texel, zeros elsewhere).
    """
    faces = np.asarray(faces, np.int64)
    uv = np.asarray(face_uv, np.float64)
    if uv.shape != (len(faces), 3, 2):
        raise ValueError(f"face_uv must be ({len(faces)}, 3, 2), got {uv.shape}")
    n = int(size)
    px = uv[..., 0] * n - 0.5
    py = (1.0 - uv[..., 1]) * n - 0.5
    x0 = np.clip(np.ceil(px.min(1)), 0, n - 1).astype(np.int64)
    x1 = np.clip(np.floor(px.max(1)), 0, n - 1).astype(np.int64)
    y0 = np.clip(np.ceil(py.min(1)), 0, n - 1).astype(np.int64)
    y1 = np.clip(np.floor(py.max(1)), 0, n - 1).astype(np.int64)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    # twice the signed area; degenerate triangles cover nothing
    area = (px[:, 1] - px[:, 0]) * (py[:, 2] - py[:, 0]) - (px[:, 2] - px[:, 0]) * (
        py[:, 1] - py[:, 0]
    )
    ok = (bw > 0) & (bh > 0) & (np.abs(area) > 1e-12)
    tri_img = np.full(n * n, -1, np.int32)
    bary_img = np.zeros((n * n, 3), np.float32)
    # scanlines: one (triangle, texel row) pair per row of each triangle's bounding box ...
    t_ok = np.flatnonzero(ok)
    rows = bh[t_ok]
    t_p = np.repeat(t_ok, rows)
    yy = y0[t_p] + np.arange(len(t_p)) - np.repeat(np.cumsum(rows) - rows, rows)
    # ... and the row's x-extent inside the triangle, from its crossings with the 3 edges
    xl = np.full(len(t_p), np.inf)
    xr = np.full(len(t_p), -np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        xa, ya, xb, yb = px[t_p, i], py[t_p, i], px[t_p, j], py[t_p, j]
        lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
        cross = (yy >= lo - 1e-9) & (yy <= hi + 1e-9)
        dy = yb - ya
        flat_edge = np.abs(dy) < 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.where(flat_edge, xa, xa + (yy - ya) * (xb - xa) / np.where(flat_edge, 1, dy))
        xl = np.where(cross, np.minimum(xl, np.where(flat_edge, np.minimum(xa, xb), xi)), xl)
        xr = np.where(cross, np.maximum(xr, np.where(flat_edge, np.maximum(xa, xb), xi)), xr)
    c0 = np.clip(np.ceil(xl - 1e-6), 0, n - 1)
    c1 = np.clip(np.floor(xr + 1e-6), 0, n - 1)
    has = np.isfinite(xl) & np.isfinite(xr) & (c1 >= c0)
    t_p, yy, c0 = t_p[has], yy[has], c0[has].astype(np.int64)
    cnt = c1[has].astype(np.int64) - c0 + 1
    # per-triangle constants of the barycentric coordinates, float32 for cheap gathers
    f32 = np.float32
    ax, ay = px[:, 0].astype(f32), py[:, 0].astype(f32)
    ex1, ey1 = (px[:, 1] - px[:, 0]).astype(f32), (py[:, 1] - py[:, 0]).astype(f32)
    ex2, ey2 = (px[:, 2] - px[:, 0]).astype(f32), (py[:, 2] - py[:, 0]).astype(f32)
    with np.errstate(divide="ignore"):
        inv = (1.0 / area).astype(f32)
    # every texel of every span, as one ragged array, in chunks of ~4M candidates
    ends = np.cumsum(cnt)
    eps = 1e-6
    lo_p = 0
    while lo_p < len(t_p):
        hi_p = max(
            int(np.searchsorted(ends, ends[lo_p] - cnt[lo_p] + 4_000_000, "right")), lo_p + 1
        )
        cc = cnt[lo_p:hi_p]
        rep = np.repeat(np.arange(lo_p, hi_p), cc)
        k = np.arange(int(cc.sum())) - np.repeat(np.cumsum(cc) - cc, cc)
        t = t_p[rep]
        cx = c0[rep] + k
        cy = yy[rep]
        dx = cx.astype(np.float32) - ax[t]
        dy = cy.astype(np.float32) - ay[t]
        w1 = (dx * ey2[t] - ex2[t] * dy) * inv[t]
        w2 = (ex1[t] * dy - dx * ey1[t]) * inv[t]
        w0 = 1.0 - w1 - w2
        inside = np.flatnonzero((w0 >= -eps) & (w1 >= -eps) & (w2 >= -eps))
        flat = cy[inside] * n + cx[inside]
        tri_img[flat] = t[inside]
        bary_img[flat, 0] = w0[inside]
        bary_img[flat, 1] = w1[inside]
        bary_img[flat, 2] = w2[inside]
        lo_p = hi_p
    v = np.asarray(vertices, np.float64)
    pos = np.zeros((n * n, 3), np.float32)
    m = tri_img >= 0
    f = faces[tri_img[m]]
    b = bary_img[m].astype(np.float64)
    pos[m] = np.einsum("nk,nkd->nd", b, v[f])
    return tri_img.reshape(n, n), bary_img.reshape(n, n, 3), pos.reshape(n, n, 3)


def synthesize_albedo(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_uv: np.ndarray,
    landmarks68_xyz: np.ndarray | None,
    seed: int,
    size: int = 1024,
) -> np.ndarray:
    """A synthetic skin texture (size, size, 3) uint8 for a mesh with texture coordinates.

    vertices: (V, 3) mm, world frame (face looking down +z); faces: (T, 3); face_uv:
    (T, 3, 2) in [0, 1], v up (row 0 of the image is v = 1); landmarks68_xyz: (68, 3) mm in
    Multi-PIE order, or None. Deterministic in ``seed``. Texels outside every triangle take
    the colour of the nearest covered texel, so bilinear lookups at seams do not bleed.
    """
    v, lm = _check(vertices, landmarks68_xyz)
    faces = np.asarray(faces, np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (T, 3), got {faces.shape}")
    if size < 8:
        raise ValueError(f"albedo size must be >= 8, got {size}")
    sp = skin_params(seed)
    tri, bary, pos = texel_positions(v, faces, face_uv, size)
    m = tri.ravel() >= 0
    if not m.any():
        raise ValueError("face_uv covers no texel of the albedo texture")
    vcol = _smooth_color(v, lm, sp)
    f = faces[tri.ravel()[m]]
    b = bary.reshape(-1, 3)[m].astype(np.float64)
    col = np.einsum("nk,nkd->nd", b, vcol[f])
    p = pos.reshape(-1, 3)[m].astype(np.float64)
    col = _detail(p, col, lm, sp)
    img = np.zeros((size * size, 3))
    img[m] = col
    # pores and fine grain in texture space (scale-free, cheap)
    rng = np.random.default_rng([int(seed), 0x9023])
    fine = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.7)
    fine /= fine.std() + 1e-12
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size)), 2.0)
    grain /= grain.std() + 1e-12
    pores = np.clip(-fine - 1.6, 0.0, None)  # sparse dark dots
    shade = 1 + 0.025 * fine + 0.012 * grain - 0.1 * pores
    img = img.reshape(size, size, 3) * shade[..., None]
    # fill texels outside the triangles with the nearest covered colour
    idx = ndimage.distance_transform_edt((tri < 0), return_distances=False, return_indices=True)
    img = img[idx[0], idx[1]]
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
