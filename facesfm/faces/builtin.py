"""A built-in parametric head that needs no data files: the offline default face model.

The head is a closed triangle mesh on a fixed (longitude, latitude) grid around the +y axis,
so vertex k is the same anatomical point for every identity:

1. a base skull + jaw + neck, the smooth union of ellipsoids and a capped cylinder, found
   along each grid ray from the origin (the head is star-shaped about the origin);
2. facial relief (nose with bridge, tip and alae; eye sockets with eyeballs and lids; brow
   ridge; cheekbones; lips with a closed mouth line and corners; chin; nasolabial folds; ears)
   added as a radial height field of the base point, with amplitudes from the identity;
3. an identity (and optional expression) warp: smooth, local affine changes (face and jaw
   width, nose width and length, eye spacing, mouth width, ...) that move features *with*
   the grid, so landmark vertex ids stay anatomically right for every identity.

World frame: millimetres, +y up, the face looks down +z, head centre at the origin.
Texture coordinates are the grid's own (longitude, latitude); the seam runs down the back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facesfm.faces.albedo import synthesize_albedo, vertex_albedo
from facesfm.faces.landmarks import dense_landmarks
from facesfm.faces.types import FaceMesh
from facesfm.geometry.mesh import vertex_normals

__all__ = ["EXPRESSION_NAMES", "IDENTITY_NAMES", "N_EXPRESSION", "N_IDENTITY", "BuiltinFaceModel"]

#: Identity coefficients, each drawn from N(0, 1) and clipped to +-2.5 (see ``_identity``).
IDENTITY_NAMES = (
    # relief amplitudes
    "nose_protrusion",
    "nose_bridge",
    "brow_ridge",
    "cheekbones",
    "upper_lip",
    "lower_lip",
    "chin_prominence",
    "eye_depth",
    "ear_protrusion",
    "cheek_fullness",
    "alae",
    "forehead",
    "nasolabial",
    "neck_width",
    # warps (sizes and positions)
    "head_width",
    "head_height",
    "head_depth",
    "face_width",
    "jaw_width",
    "lower_face_length",
    "nose_width",
    "nose_length",
    "eye_spacing",
    "eye_size",
    "mouth_width",
    "mouth_height",
    "brow_height",
    "ear_size",
    "ear_height",
    "chin_height",
)
N_IDENTITY = len(IDENTITY_NAMES)
#: Expression coefficients in [0, 1]: mild, lips stay closed.
EXPRESSION_NAMES = ("smile", "brow_raise", "lip_press")
N_EXPRESSION = len(EXPRESSION_NAMES)

_W_CLIP = 2.5


@dataclass(frozen=True)
class _Params:
    """Per-identity shape parameters (neutral = all ones / zeros)."""

    amp: dict
    warp: dict
    expr: dict


def _identity(w_id: np.ndarray, w_ex: np.ndarray) -> _Params:
    w = dict(zip(IDENTITY_NAMES, np.clip(w_id, -_W_CLIP, _W_CLIP).tolist()))
    amp = {
        "nose_protrusion": 1 + 0.10 * w["nose_protrusion"],
        "nose_bridge": 1 + 0.20 * w["nose_bridge"],
        "brow_ridge": 1 + 0.25 * w["brow_ridge"],
        "cheekbones": 1 + 0.25 * w["cheekbones"],
        "upper_lip": 1 + 0.18 * w["upper_lip"],
        "lower_lip": 1 + 0.18 * w["lower_lip"],
        "chin_prominence": 1 + 0.25 * w["chin_prominence"],
        "eye_depth": 1 + 0.12 * w["eye_depth"],
        "ear_protrusion": 1 + 0.15 * w["ear_protrusion"],
        "cheek_fullness": 1 + 0.35 * w["cheek_fullness"],
        "alae": 1 + 0.18 * w["alae"],
        "forehead": 1 + 0.35 * w["forehead"],
        "nasolabial": 1 + 0.3 * w["nasolabial"],
        "neck_width": 1 + 0.05 * w["neck_width"],
    }
    warp = {
        "head_width": 1 + 0.035 * w["head_width"],
        "head_height": 1 + 0.03 * w["head_height"],
        "head_depth": 1 + 0.03 * w["head_depth"],
        "face_width": 1 + 0.035 * w["face_width"],
        "jaw_width": 1 + 0.05 * w["jaw_width"],
        "lower_face_length": 1 + 0.045 * w["lower_face_length"],
        "nose_width": 1 + 0.08 * w["nose_width"],
        "nose_length": 1 + 0.07 * w["nose_length"],
        "eye_spacing": 1.0 * w["eye_spacing"],
        "eye_size": 1 + 0.05 * w["eye_size"],
        "mouth_width": 1 + 0.05 * w["mouth_width"],
        "mouth_height": 1.5 * w["mouth_height"],
        "brow_height": 1.5 * w["brow_height"],
        "ear_size": 1 + 0.06 * w["ear_size"],
        "ear_height": 2.0 * w["ear_height"],
        "chin_height": 2.0 * w["chin_height"],
    }
    e = dict(zip(EXPRESSION_NAMES, np.clip(w_ex, 0.0, 1.0).tolist()))
    return _Params(amp=amp, warp=warp, expr=e)


# --------------------------------------------------------------------------------------
# small smooth building blocks (numpy, vectorised over points)


def _g(d, s):
    """Gaussian falloff exp(-d^2 / 2 s^2)."""
    return np.exp(-0.5 * (d / s) ** 2)


def _gp(x, c, s):
    """A mirrored pair of Gaussians at +-c: smooth across the midline, unlike g(|x| - c)."""
    return _g(x - c, s) + _g(x + c, s)


def _sstep(x, a, b):
    """Smoothstep from 0 at a to 1 at b."""
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _ellipsoid_sdf(p, c, r):
    """Approximate signed distance (mm) to an axis-aligned ellipsoid (good near the surface)."""
    q = (p - c) / r
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / r, axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _smin(a, b, k):
    """Polynomial smooth minimum (smooth union of two distance fields), blend width k mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _seg_dist(px, py, ax, ay, bx, by):
    """2D distance from points to the segment a-b."""
    vx, vy = bx - ax, by - ay
    t = np.clip(((px - ax) * vx + (py - ay) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(px - ax - t * vx, py - ay - t * vy)


# --------------------------------------------------------------------------------------
# the template: base head, then relief


def _base_sdf(p: np.ndarray, amp: dict) -> np.ndarray:
    """Signed distance-like field of skull + jaw + neck (negative inside), p (N, 3) mm."""
    cranium = _ellipsoid_sdf(p, np.array([0.0, 22.0, -10.0]), np.array([76.0, 98.0, 100.0]))
    jaw = _ellipsoid_sdf(p, np.array([0.0, -50.0, 8.0]), np.array([60.0, 60.0, 74.0]))
    nw = amp["neck_width"]
    qx, qz = p[:, 0] / (52.0 * nw), (p[:, 2] + 22.0) / (56.0 * nw)
    k0 = np.hypot(qx, qz)
    k1 = np.hypot(qx / (52.0 * nw), qz / (56.0 * nw))
    neck = k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)
    neck = -_smin(-neck, -(p[:, 1] + 40.0), 20.0)  # soft top inside the head, no crease
    neck = np.maximum(neck, -175.0 - p[:, 1])
    chin = _ellipsoid_sdf(p, np.array([0.0, -86.0, 50.0]), np.array([24.0, 21.0, 30.0]))
    head = _smin(_smin(cranium, jaw, 30.0), chin, 14.0)
    return _smin(head, neck, 22.0)


def _radial_root(dirs: np.ndarray, sdf, r_max: float = 400.0, iters: int = 48) -> np.ndarray:
    """Distance along unit rays from the origin to the zero set of ``sdf`` (bisection)."""
    lo = np.full(len(dirs), 1.0)
    hi = np.full(len(dirs), r_max)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = sdf(dirs * mid[:, None]) < 0
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    return 0.5 * (lo + hi)


def _relief(p0: np.ndarray, amp: dict, expr: dict) -> np.ndarray:
    """Radial height (mm) of the facial features and ears at base points p0 (N, 3)."""
    x, y, z = p0[:, 0], p0[:, 1], p0[:, 2]
    ax = np.abs(x)
    h = np.zeros(len(p0))

    # --- nose: dorsum from nasion (y=14) to tip (y=-25), then columella to subnasale
    t = np.clip((14.0 - y) / 39.0, 0.0, 1.0)
    prof = 0.12 + 0.88 * t**1.35
    prof = np.where(y < -25.0, np.exp(-0.5 * ((y + 25.0) / 5.0) ** 2), prof)
    prof = prof * (1 - _sstep(y, 14.0, 26.0))
    sx = 5.0 + 4.0 * t**2
    cross = np.exp(-(np.abs(x / sx) ** 2.2))
    bridge = amp["nose_bridge"] * np.clip(1.0 - t, 0, 1) ** 2
    h += amp["nose_protrusion"] * (21.0 + 3.0 * bridge) * prof * cross
    h += 3.0 * amp["nose_protrusion"] * _g(x, 6.5) * _g(y + 23.0, 5.0)  # rounded tip
    h += 8.0 * amp["alae"] * _gp(x, 13.5, 5.0) * _g(y + 29.0, 5.0)
    h -= 3.0 * _gp(x, 6.5, 2.8) * _g(y + 35.5, 1.8)  # nostrils
    h -= 1.5 * _g(ax - 19.5, 1.5) * _g(y + 28.0, 5.0)  # alar crease

    # --- eyes: socket bowl, eyeball, lids with an almond opening, lid crease
    ex, ey = ax - 31.0, y - 3.0
    h -= 13.0 * amp["eye_depth"] * _gp(x, 31.0, 16.0) * _g(ey + 1.0, 12.0)
    h += 6.5 * _g(ex, 8.5) * _g(ey, 6.0)  # eyeball under the lids
    h += 1.0 * _g(ex, 3.5) * _g(ey - 0.5, 3.5)  # cornea
    tt = np.clip(np.abs(ex) / 15.0, 0.0, 1.0)
    hu = 5.2 * (1.0 - tt**2) ** 0.8 + 0.3
    hl = 3.8 * (1.0 - tt**2) ** 0.8 + 0.3
    # lid margins stand ~1.5 mm proud of the eyeball in the almond-shaped opening
    inside = 1.0 / (1.0 + np.exp(np.clip(-3.0 * np.minimum(hu - ey, ey + hl), -50, 50)))
    h -= 1.2 * inside * _g(ex, 9.0)
    h += 1.3 * _g(ey - hu - 0.8, 1.3) * _g(ex, 9.0)  # upper lid margin
    h += 0.7 * _g(ey + hl + 0.8, 1.3) * _g(ex, 9.0)  # lower lid margin
    h -= 1.4 * _g(ey - (hu + 3.5), 1.4) * _g(ex, 10.0)  # upper lid crease

    # --- brows, forehead, temples, cheekbones, cheeks
    h += 4.5 * amp["brow_ridge"] * _gp(x, 27.0, 17.0) * _g(y - 19.0, 6.0)
    h += 2.0 * amp["brow_ridge"] * _g(x, 9.0) * _g(y - 19.0, 6.0)  # glabella
    h += 2.5 * amp["forehead"] * _gp(x, 22.0, 18.0) * _g(y - 55.0, 14.0)
    h -= 3.0 * _g(ax - 62.0, 10.0) * _g(y - 25.0, 14.0)  # temples
    h += 6.0 * amp["cheekbones"] * _g(ax - 47.0, 13.0) * _g(y + 14.0, 8.5)
    h += 3.5 * amp["cheekbones"] * _gp(x, 31.0, 10.0) * _g(y + 20.0, 7.0)  # malar
    h += (
        (4.0 * amp["cheek_fullness"] + 2.0 * expr["smile"])
        * _gp(x, 35.0, 12.0)
        * _g(y + 40.0, 13.0)
    )
    # nasolabial fold: a crease from beside the alae to outside the mouth corners
    d_nl = _seg_dist(ax, y, 19.5, -31.0, 30.0, -62.0)
    h -= (2.0 * amp["nasolabial"] + 1.5 * expr["smile"]) * _g(d_nl, 2.2)

    # --- mouth: muzzle, lips, closed mouth line, corners, philtrum, chin
    h += 3.5 * _g(x, 26.0) * _g(y + 56.0, 15.0)
    ym = -61.0
    h += 3.6 * amp["upper_lip"] * np.exp(-(np.abs(x / 23.0) ** 4)) * _g(y - ym - 5.0, 3.2)
    h += 4.2 * amp["lower_lip"] * np.exp(-(np.abs(x / 20.0) ** 4)) * _g(y - ym + 6.0, 3.8)
    h -= (3.2 + 1.0 * expr["lip_press"]) * np.exp(-(np.abs(x / 25.5) ** 6)) * _g(y - ym, 0.9)
    h -= 2.5 * _g(ax - 25.5, 2.8) * _g(y - ym, 3.0)  # mouth corners
    h -= 1.1 * _g(x, 2.4) * _g(y + 45.0, 4.5)  # philtrum groove
    h += 0.7 * _gp(x, 5.0, 1.8) * _g(y + 45.0, 4.5)  # philtrum ridges
    h -= 2.8 * _g(x, 20.0) * _g(y + 81.0, 3.8)  # mentolabial sulcus
    h += 3.0 * amp["chin_prominence"] * _g(x, 13.0) * _g(y + 94.0, 8.0)

    face = h * _sstep(z, 10.0, 45.0)

    # --- ears: a raised lobe on each side, tilted back, with a concha and a helix rim
    a0, b0 = z + 8.0, y + 5.0
    ca, sa = np.cos(np.deg2rad(15.0)), np.sin(np.deg2rad(15.0))
    ea, eb = ca * a0 + sa * b0, -sa * a0 + ca * b0
    q = np.hypot(ea / 16.0, eb / 30.0)
    plate = 1.0 / (1.0 + q**8)  # steep but resolvable by the ~2.5 mm grid
    ear = amp["ear_protrusion"] * (14.0 - 5.0 * np.clip(ea / 16.0, -1, 1)) * plate
    ear -= 8.0 * _g(ea - 1.0, 5.5) * _g(eb + 4.0, 8.0)  # concha
    ear += 2.5 * _g(q - 0.84, 0.1) * plate  # helix rim
    ear -= 1.5 * _g(q - 0.62, 0.08) * _g(eb - 6.0, 14.0)  # scapha
    ear = np.maximum(ear, 0.0) * _sstep(ax, 50.0, 64.0)
    return face + ear


def _warp(p: np.ndarray, wp: dict, expr: dict) -> np.ndarray:
    """Smooth identity/expression warp of template points (N, 3) -> (N, 3)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    d = np.zeros_like(p)
    front = _sstep(z, 0.0, 40.0)
    # face width (midface) and jaw width (below the mouth), about the midline
    d[:, 0] += (wp["face_width"] - 1) * x * front * _g(y + 5.0, 45.0)
    d[:, 0] += (wp["jaw_width"] - 1) * x * (1 - _sstep(y, -100.0, -60.0))
    # lower face length: stretch below the nose, about y=-30
    d[:, 1] += (
        (wp["lower_face_length"] - 1) * np.minimum(y + 30.0, 0.0) * (1 - _sstep(y, -140, -110))
    )
    # nose width / length, about its midline and the nasion
    nose_w = _g(x, 22.0) * _g(y + 22.0, 14.0) * front
    d[:, 0] += (wp["nose_width"] - 1) * x * nose_w
    d[:, 1] += (wp["nose_length"] - 1) * (y - 14.0) * _g(x, 24.0) * _g(y + 12.0, 20.0) * front
    # eyes: spacing (translate outwards) and size (scale about the eye centre); the weights
    # are mirrored Gaussian pairs so that the warp stays smooth across the midline
    gr, gl = _g(x - 31.0, 14.0), _g(x + 31.0, 14.0)
    ey_w = _g(y - 5.0, 13.0) * front
    d[:, 0] += wp["eye_spacing"] * (gr - gl) * ey_w
    d[:, 0] += (wp["eye_size"] - 1) * ((x - 31.0) * gr + (x + 31.0) * gl) * ey_w
    d[:, 1] += (wp["eye_size"] - 1) * (y - 3.0) * (gr + gl) * ey_w
    # brows
    brow_w = _gp(x, 30.0, 20.0) * _g(y - 22.0, 8.0) * front
    d[:, 1] += (wp["brow_height"] + 3.0 * expr["brow_raise"]) * brow_w
    # mouth: width about the midline, height, smile lifts and widens the corners
    mouth_w = _g(x, 30.0) * _g(y + 61.0, 14.0) * front
    d[:, 0] += (wp["mouth_width"] - 1) * x * mouth_w
    d[:, 1] += wp["mouth_height"] * mouth_w
    cy = _g(y + 61.0, 8.0) * front
    d[:, 0] += 2.5 * expr["smile"] * (_g(x - 25.0, 9.0) - _g(x + 25.0, 9.0)) * cy
    d[:, 1] += 3.5 * expr["smile"] * _gp(x, 25.0, 9.0) * cy
    d[:, 1] += wp["chin_height"] * _g(x, 30.0) * _g(y + 100.0, 15.0) * front
    # ears: size about the ear centre, height
    ear_w = _g(z + 8.0, 25.0) * _g(y + 5.0, 38.0) * _sstep(np.abs(x), 45.0, 65.0)
    d[:, 1] += ((wp["ear_size"] - 1) * (y + 5.0) + wp["ear_height"]) * ear_w
    d[:, 2] += (wp["ear_size"] - 1) * (z + 8.0) * ear_w
    q = p + d
    return q * np.array([wp["head_width"], wp["head_height"], wp["head_depth"]])


# --------------------------------------------------------------------------------------
# the grid


@dataclass(frozen=True)
class _Grid:
    dirs: np.ndarray  # (V, 3) unit rays
    faces: np.ndarray  # (T, 3)
    face_uv: np.ndarray  # (T, 3, 2)


_GRID_A, _GRID_B = 0.4, 0.3


def _make_grid(n_lat: int, n_lon: int) -> _Grid:
    """Rays on a (latitude, longitude) grid about +y with a vertex at each pole.

    Vertex order: top pole, then rows top to bottom (each row: longitude from the back,
    through the face, round to the back), then the bottom pole. Longitude 0 faces +z.
    """
    # uniform grid parameters (t, s), warped so rays are ~1.7x denser on the face than on
    # the back of the head: polar = t + b sin(2t)/2, azimuth = s - a sin(s) (s = 0 at +z)
    t = np.pi * (np.arange(n_lat) + 1) / (n_lat + 1)
    s = -np.pi + 2 * np.pi * np.arange(n_lon) / n_lon
    polar = t + 0.5 * _GRID_B * np.sin(2 * t)
    az = s - _GRID_A * np.sin(s)
    P, A = np.meshgrid(polar, az, indexing="ij")
    body = np.stack([np.sin(P) * np.sin(A), np.cos(P), np.sin(P) * np.cos(A)], -1).reshape(-1, 3)
    dirs = np.concatenate([[[0.0, 1.0, 0.0]], body, [[0.0, -1.0, 0.0]]])
    top, bot = 0, 1 + n_lat * n_lon

    def vid(i, j):
        return 1 + i * n_lon + (j % n_lon)

    def uvv(i, j):  # texture coordinate of grid node (i, j); j may be n_lon (seam copy)
        return np.stack([j / n_lon, 1.0 - t[i] / np.pi], -1)

    faces, uvs = [], []
    i, j = np.meshgrid(np.arange(n_lat - 1), np.arange(n_lon), indexing="ij")
    i, j = i.ravel(), j.ravel()
    a, b, c, d = vid(i, j), vid(i + 1, j), vid(i + 1, j + 1), vid(i, j + 1)
    ua, ub, uc, ud = uvv(i, j), uvv(i + 1, j), uvv(i + 1, j + 1), uvv(i, j + 1)
    faces += [np.stack([a, b, c], -1), np.stack([a, c, d], -1)]
    uvs += [np.stack([ua, ub, uc], 1), np.stack([ua, uc, ud], 1)]
    jj = np.arange(n_lon)
    faces.append(np.stack([np.full(n_lon, top), vid(0, jj), vid(0, jj + 1)], -1))
    pole_t = np.stack([(jj + 0.5) / n_lon, np.ones(n_lon)], -1)
    uvs.append(
        np.stack([pole_t, uvv(np.zeros(n_lon, int), jj), uvv(np.zeros(n_lon, int), jj + 1)], 1)
    )
    last = np.full(n_lon, n_lat - 1)
    faces.append(np.stack([np.full(n_lon, bot), vid(last, jj + 1), vid(last, jj)], -1))
    pole_b = np.stack([(jj + 0.5) / n_lon, np.zeros(n_lon)], -1)
    uvs.append(np.stack([pole_b, uvv(last, jj + 1), uvv(last, jj)], 1))
    faces = np.concatenate(faces).astype(np.int64)
    face_uv = np.concatenate(uvs).astype(np.float32)
    # orient triangles so that normals point away from the origin (outwards)
    tri = dirs[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = np.einsum("ij,ij->i", n, tri.mean(1)) < 0
    faces[flip] = faces[flip][:, ::-1]
    face_uv[flip] = face_uv[flip][:, ::-1]
    return _Grid(dirs=dirs, faces=faces, face_uv=face_uv)


def _surface(grid: _Grid, prm: _Params) -> np.ndarray:
    """Vertices (V, 3) mm of the head for the given parameters."""
    r0 = _radial_root(grid.dirs, lambda p: _base_sdf(p, prm.amp))
    p0 = grid.dirs * r0[:, None]
    r = r0 + _relief(p0, prm.amp, prm.expr)
    return _warp(grid.dirs * r[:, None], prm.warp, prm.expr)


# --------------------------------------------------------------------------------------
# landmarks


def _landmark_targets() -> tuple[np.ndarray, np.ndarray]:
    """Where the 68 Multi-PIE landmarks sit on the neutral template.

    Returns (68, 3) target points and a (68,) bool telling which are matched in 3D (the jaw
    contour, on the sides of the face) rather than by their frontal (x, y) position.
    The subject's right side (image left in a frontal view) is -x.
    """
    pts = np.zeros((68, 3))
    use3d = np.zeros(68, bool)
    # jaw contour 0..16: from beside the ear round the jaw to the chin and back up
    a = np.linspace(0.0, np.pi, 17)
    pts[:17, 0] = -67.0 * np.cos(a)
    pts[:17, 1] = -8.0 - 104.0 * np.sin(a) ** 1.15
    pts[:17, 2] = 15.0 + 70.0 * np.sin(a) ** 1.5
    use3d[:17] = True
    # brows 17..21 (right, outer->inner), 22..26 (left, inner->outer)
    bx = np.array([-54.0, -44.0, -34.0, -24.0, -15.0])
    by = np.array([20.0, 25.5, 27.5, 26.5, 23.0])
    pts[17:22, 0], pts[17:22, 1] = bx, by
    pts[22:27, 0], pts[22:27, 1] = -bx[::-1], by[::-1]
    # nose bridge 27..30 (nasion to tip), lower nose 31..35 (right to left)
    pts[27:31, 0], pts[27:31, 1] = 0.0, [11.0, 0.0, -12.0, -24.0]
    pts[31:36, 0], pts[31:36, 1] = (
        [-14.0, -7.5, 0.0, 7.5, 14.0],
        [-33.0, -35.0, -36.5, -35.0, -33.0],
    )
    # eyes: 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid (right eye);
    # 42 inner corner, 43-44 upper, 45 outer, 46-47 lower (left eye)
    ex = np.array([-46.0, -37.0, -25.0, -16.0, -25.0, -37.0])
    ey = np.array([3.0, 7.3, 7.3, 3.0, -0.6, -0.6])
    pts[36:42, 0], pts[36:42, 1] = ex, ey
    pts[42:48, 0] = -ex[[3, 2, 1, 0, 5, 4]]
    pts[42:48, 1] = ey[[3, 2, 1, 0, 5, 4]]
    # lips: outer 48..59 (48 right corner, upper lip to 54, lower lip back), inner 60..67
    ym = -61.0
    pts[48:60, 0] = [-25.5, -17.0, -7.0, 0.0, 7.0, 17.0, 25.5, 17.0, 8.0, 0.0, -8.0, -17.0]
    pts[48:60, 1] = ym + np.array(
        [0.0, 6.5, 9.5, 8.5, 9.5, 6.5, 0.0, -8.0, -11.0, -11.5, -11.0, -8.0]
    )
    pts[60:68, 0] = [-23.0, -9.0, 0.0, 9.0, 23.0, 9.0, 0.0, -9.0]
    # a closed mouth: inner upper/lower lip points on the grid rows just above/below the line
    pts[60:68, 1] = ym + np.array([0.0, 1.3, 1.3, 1.3, 0.0, -1.3, -1.3, -1.3])
    return pts, use3d


def _pick_landmarks(verts: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Vertex ids (68,) of the landmark targets on the neutral template ``verts``."""
    pts, use3d = _landmark_targets()
    front = (verts[:, 2] > 20.0) & (normals[:, 2] > 0.0)
    idx = np.flatnonzero(front)
    out = np.empty(68, np.int64)
    for k in range(68):
        if use3d[k]:
            d = np.sum((verts[idx] - pts[k]) ** 2, 1)
        else:
            d = np.sum((verts[idx, :2] - pts[k, :2]) ** 2, 1)
        out[k] = idx[np.argmin(d)]
    # the nose tip (pronasale) is, by definition, the most forward point of the nose
    nose = idx[(np.abs(verts[idx, 0]) < 1.0) & (np.abs(verts[idx, 1] + 25.0) < 15.0)]
    out[30] = nose[np.argmax(verts[nose, 2])]
    return out


# --------------------------------------------------------------------------------------


class BuiltinFaceModel:
    """The offline face model: a parametric head with fixed topology (FaceModel protocol).

    ``resolution`` is the number of latitude rows (the longitude count is ~1.7x that, even);
    the default 110 gives 20,682 vertices, about 2.4 mm apart on the face (the grid is denser
    there) and 4.3 mm on the back of the head.
    ``texture_size`` is the side of the synthetic albedo texture (0: vertex colours only).
    Landmark vertex ids (68 semantic + dense, 800 in all) are chosen once on the neutral
    template and are the same for every identity and expression.
    """

    name = "builtin"

    def __init__(self, resolution: int = 110, texture_size: int = 1024, n_landmarks: int = 800):
        if resolution < 40:
            raise ValueError(f"BuiltinFaceModel resolution must be >= 40, got {resolution}")
        self.resolution = int(resolution)
        self.texture_size = int(texture_size)
        self.n_lat = self.resolution
        self.n_lon = 2 * round(0.85 * self.resolution)  # even: a column on the midline
        self.grid = _make_grid(self.n_lat, self.n_lon)
        neutral = _identity(np.zeros(N_IDENTITY), np.zeros(N_EXPRESSION))
        self.template = _surface(self.grid, neutral)
        normals = vertex_normals(self.template, self.grid.faces)
        self.face_region = self._face_region(self.template)
        lm68 = _pick_landmarks(self.template, normals)
        self.face_region[lm68] = True
        self.landmark_vertices = dense_landmarks(self.template, self.face_region, lm68, n_landmarks)

    @staticmethod
    def _face_region(v: np.ndarray) -> np.ndarray:
        """Front face: forehead to chin, between the ears (an ellipse in frontal x, y)."""
        x, y, z = v[:, 0], v[:, 1], v[:, 2]
        return ((x / 70.0) ** 2 + ((y + 35.0) / 95.0) ** 2 <= 1.0) & (z > 25.0)

    @property
    def faces(self) -> np.ndarray:
        return self.grid.faces

    def coefficients(self, seed: int, expression: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(w_id (N_IDENTITY,), w_ex (N_EXPRESSION,)) for a seed; w_ex is zero without
        expression. Deterministic: the same seed always gives the same face."""
        rng = np.random.default_rng([int(seed), 0xFACE])
        w_id = rng.standard_normal(N_IDENTITY)
        w_ex = rng.uniform(0.0, 1.0, N_EXPRESSION) if expression else np.zeros(N_EXPRESSION)
        return w_id, w_ex

    def vertices(self, w_id: np.ndarray, w_ex: np.ndarray | None = None) -> np.ndarray:
        """Vertices (V, 3) float64 mm of the head with identity ``w_id`` and expression
        ``w_ex`` (zeros: neutral)."""
        w_id = np.asarray(w_id, np.float64)
        w_ex = np.zeros(N_EXPRESSION) if w_ex is None else np.asarray(w_ex, np.float64)
        if w_id.shape != (N_IDENTITY,) or w_ex.shape != (N_EXPRESSION,):
            raise ValueError(
                f"w_id must be ({N_IDENTITY},) and w_ex ({N_EXPRESSION},), "
                f"got {w_id.shape} and {w_ex.shape}"
            )
        return _surface(self.grid, _identity(w_id, w_ex))

    def sample(self, seed: int, expression: bool = False) -> tuple[FaceMesh, dict]:
        """A face for ``seed`` and its JSON-serialisable coefficients {"source": "builtin",
        "seed", "w_id": (N_IDENTITY,) list, "w_ex": (N_EXPRESSION,) list}.

        The mesh has per-vertex colours always and, when ``texture_size`` > 0, a synthetic
        albedo texture with per-corner UVs (the skin's appearance is drawn from the same seed).
        """
        w_id, w_ex = self.coefficients(seed, expression)
        v = self.vertices(w_id, w_ex)
        texture = vcol = None
        lm68 = v[self.landmark_vertices[:68]]
        vcol = vertex_albedo(v, lm68, seed)
        if self.texture_size > 0:
            texture = synthesize_albedo(
                v, self.grid.faces, self.grid.face_uv, lm68, seed, self.texture_size
            )
        mesh = FaceMesh(
            vertices=v,
            faces=self.grid.faces.copy(),
            landmark_vertices=self.landmark_vertices.copy(),
            vertex_colors=vcol,
            texture=texture,
            face_uv=self.grid.face_uv.copy() if texture is not None else None,
            face_region=self.face_region.copy(),
            name=f"builtin-{seed}{'-expr' if expression else ''}",
            meta={
                "model": "builtin",
                "units": "mm",
                "resolution": self.resolution,
                "semantic68": True,
                "albedo_seed": int(seed),
            },
        )
        coeffs = {
            "source": "builtin",
            "seed": int(seed),
            "w_id": w_id.tolist(),
            "w_ex": w_ex.tolist(),
        }
        return mesh, coeffs
