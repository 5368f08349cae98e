"""Things in front of the face: hair strands over the forehead, spectacle frames and a
hand-sized blob, as one sequence's :class:`Occluders` drew them (OccluderConfig).

Each occluder is 3D geometry in the head's (world) frame: strands hang a few millimetres in
front of the forehead, the frames sit in front of the eyes with temples running back past
the head, the blob floats in front of the face. Per frame they are projected, drawn with a
depth per segment (painter's order) at twice the image resolution, and depth-tested against
the rendered face: a pixel shows an occluder where it is nearer than the face or where there
is no face. :func:`draw_occluders` returns the image with them and the depth the camera sees
(the face's where no occluder is in front), which the landmark occlusion test then reads, so
a landmark behind a strand or a hand is labelled hidden exactly as one behind the nose. The
sequence's stored depth and mask stay the face's.

The strands and frames need the face's 68 semantic landmarks (brows and eyes) to be placed;
a user mesh, whose landmarks are samples of its surface, gets only the blob.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy.spatial import cKDTree

from facesfm.faces.types import FaceMesh
from facesfm.geometry.camera import project, transform
from facesfm.render.appearance_config import OccluderConfig, draw_range

__all__ = ["Occluder", "Occluders", "draw_occluders", "frame_hand", "sample_occluders"]

_BROWS, _NOSE_TIP = np.arange(17, 27), 30
_EYES = (np.arange(36, 42), np.arange(42, 48))
# hair colours (sRGB 0..255): black, dark brown, brown, auburn, blond, grey
_HAIR = np.array([[20, 17, 15], [50, 35, 25], [90, 60, 40], [110, 50, 30], [170, 140, 90],
                  [140, 140, 140]], dtype=np.float64)
# frame colours: black, tortoise, gunmetal, gold, red, blue
_FRAMES = np.array([[15, 15, 15], [80, 45, 20], [90, 95, 100], [190, 160, 80], [150, 30, 30],
                    [30, 50, 120]], dtype=np.float64)
_SS = 2  # supersampling factor of the occluder layer


@dataclass(frozen=True)
class Occluder:
    """One piece: a 3D polyline (world frame, mm) drawn ``width`` mm wide in ``color``
    (sRGB 0..255), or a filled polygon (``width`` 0)."""

    kind: str
    points: np.ndarray
    width: float
    color: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "points": np.round(self.points, 3).tolist(),
                "width": self.width, "color": list(self.color)}


@dataclass(frozen=True)
class Occluders:
    """One sequence's occluders: ``fixed`` in every frame (strands, frames) and the ``hand``
    (or None), shown in the frames :func:`frame_hand` picks with probability
    ``hand_frames``."""

    fixed: tuple[Occluder, ...]
    hand: Occluder | None
    hand_frames: float

    def to_dict(self) -> dict:
        return {"fixed": [o.to_dict() for o in self.fixed],
                "hand": None if self.hand is None else self.hand.to_dict(),
                "hand_frames": self.hand_frames}


class _Surface:
    """The front of the head: the largest z of the mesh near (x, y)."""

    def __init__(self, vertices: np.ndarray):
        self._v = vertices
        self._tree = cKDTree(vertices[:, :2])

    def front_z(self, x: float, y: float) -> float:
        near = self._tree.query_ball_point([x, y], r=4.0)
        if not near:
            _, near = self._tree.query([x, y], k=8)
        return float(self._v[np.atleast_1d(near), 2].max())


def _strands(lm: np.ndarray, surf: _Surface, cfg: OccluderConfig,
             rng: np.random.Generator) -> list[Occluder]:
    brows = lm[_BROWS]
    x0, x1 = brows[:, 0].min(), brows[:, 0].max()
    brow_y = brows[:, 1].mean()
    color = _HAIR[rng.integers(len(_HAIR))]
    out = []
    for _ in range(int(rng.integers(cfg.strand_count[0], cfg.strand_count[1] + 1))):
        xs = rng.uniform(x0 - 0.1 * (x1 - x0), x1 + 0.1 * (x1 - x0))
        ys = brow_y + rng.uniform(25.0, 50.0)
        ye = brow_y - rng.uniform(-5.0, 22.0)
        xe = xs + rng.uniform(-20.0, 20.0)
        wiggle, phase = rng.uniform(0.0, 4.0), rng.uniform(0.0, 2 * np.pi)
        t = np.linspace(0.0, 1.0, 8)
        x = xs + (xe - xs) * t + wiggle * np.sin(phase + 3.0 * t)
        y = ys + (ye - ys) * t
        gap = rng.uniform(2.0, 5.0)  # in front of the skin
        z = np.array([surf.front_z(a, b) for a, b in zip(x, y)]) + gap
        shade = rng.uniform(0.7, 1.3)
        out.append(Occluder("strand", np.stack([x, y, z], axis=1),
                            draw_range(rng, cfg.strand_width),
                            tuple(np.clip(color * shade, 0, 255).tolist())))
    return out


def _glasses(lm: np.ndarray, surf: _Surface, cfg: OccluderConfig,
             rng: np.random.Generator) -> list[Occluder]:
    centres = [lm[e].mean(axis=0) for e in _EYES]
    iod = float(np.linalg.norm(centres[1] - centres[0]))
    rx = iod * rng.uniform(0.36, 0.46)
    ry = rx * rng.uniform(0.6, 0.85)
    front = max(lm[e][:, 2].max() for e in _EYES) + rng.uniform(10.0, 16.0)
    width = draw_range(rng, cfg.frame_width)
    color = tuple(_FRAMES[rng.integers(len(_FRAMES))].tolist())
    a = np.linspace(0.0, 2 * np.pi, 33)
    out, inner, outer = [], [], []
    for c in centres:
        side = np.sign(c[0] - 0.5 * (centres[0][0] + centres[1][0]))
        rim = np.stack([c[0] + rx * np.cos(a), c[1] + ry * np.sin(a), np.full_like(a, front)],
                       axis=1)
        out.append(Occluder("rim", rim, width, color))
        inner.append([c[0] - side * rx, c[1], front])
        outer.append([c[0] + side * rx, c[1], front])
    # the bridge clears the nose; the temples run back past the sides of the head
    mid = 0.5 * (np.asarray(inner[0]) + np.asarray(inner[1]))
    bridge_z = max(front, surf.front_z(mid[0], mid[1] + 0.2 * ry) + 3.0)
    out.append(Occluder("bridge", np.array([inner[0], [mid[0], mid[1] + 0.2 * ry, bridge_z],
                                            inner[1]]), width, color))
    for o in outer:
        o = np.asarray(o)
        out.append(Occluder("temple", np.array([o, o + [0.0, 4.0, -100.0]]), width, color))
    return out


def _hand(lm: np.ndarray, surf: _Surface, cfg: OccluderConfig,
          rng: np.random.Generator) -> Occluder:
    lo, hi = lm[:68].min(axis=0), lm[:68].max(axis=0)
    cx, cy = rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])
    size = draw_range(rng, cfg.hand_size)
    rx, ry = 0.5 * size, 0.5 * size * rng.uniform(0.6, 1.0)
    rot = rng.uniform(0.0, np.pi)
    z = surf.front_z(cx, cy) + rng.uniform(15.0, 50.0)
    a = np.linspace(0.0, 2 * np.pi, 25)[:-1]
    r = 1.0 + 0.08 * np.sin(3 * a + rng.uniform(0, 2 * np.pi))  # a lumpy outline
    x, y = rx * r * np.cos(a), ry * r * np.sin(a)
    pts = np.stack([cx + x * np.cos(rot) - y * np.sin(rot),
                    cy + x * np.sin(rot) + y * np.cos(rot), np.full_like(a, z)], axis=1)
    tone = rng.uniform(0.35, 1.0)
    color = np.array([235.0, 190.0, 160.0]) * tone * np.exp(rng.uniform(-0.1, 0.1, 3))
    return Occluder("hand", pts, 0.0, tuple(np.clip(color, 0, 255).tolist()))


def sample_occluders(face: FaceMesh, cfg: OccluderConfig,
                     rng: np.random.Generator) -> Occluders | None:
    """Draw one sequence's occluders on ``face``; None when it gets none. Every draw is made
    whatever the face (so a seed draws the same sequence of choices), and the strands and
    frames are dropped on a face without semantic landmarks."""
    if not cfg.enabled:
        return None
    has = {k: bool(rng.random() < getattr(cfg, k)) for k in ("strands", "glasses", "hand")}
    if not any(has.values()):
        return None
    v = np.asarray(face.vertices, dtype=np.float64)
    n = min(68, len(face.landmark_vertices))
    lm = v[np.asarray(face.landmark_vertices[:n])]
    surf = _Surface(v)
    semantic = face.meta.get("semantic68", False) and n == 68
    fixed: list[Occluder] = []
    if has["strands"]:
        sub = np.random.default_rng(rng.integers(2**63))
        if semantic:
            fixed += _strands(lm, surf, cfg, sub)
    if has["glasses"]:
        sub = np.random.default_rng(rng.integers(2**63))
        if semantic:
            fixed += _glasses(lm, surf, cfg, sub)
    hand = None
    if has["hand"]:
        hand = _hand(lm, surf, cfg, np.random.default_rng(rng.integers(2**63)))
    if not fixed and hand is None:
        return None
    return Occluders(tuple(fixed), hand, float(cfg.hand_frames))


def frame_hand(occ: Occluders | None, rng: np.random.Generator) -> bool:
    """Whether this frame shows the sequence's hand (drawn from the frame's own stream)."""
    if occ is None or occ.hand is None:
        return False
    return bool(rng.random() < occ.hand_frames)


def draw_occluders(rgb: np.ndarray, depth: np.ndarray, occ: Occluders, K: np.ndarray,
                   cam_T_world: np.ndarray, hand: bool,
                   znear: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``occ`` (the hand too where ``hand``) over the rendered frame.

    rgb: (H, W, 3) uint8; depth: (H, W) the face's depth (0 = background).
    Returns (rgb with the occluders, the depth the camera sees: an occluder's where it covers
    at least half of the pixel and is in front, else the face's; the (H, W) bool mask of
    those pixels).
    """
    H, W = depth.shape
    pieces = list(occ.fixed) + ([occ.hand] if hand and occ.hand is not None else [])
    segs = []  # (depth, pixel points, width px, colour)
    fx = float(K[0, 0])
    for p in pieces:
        cam = transform(np.asarray(cam_T_world, dtype=np.float64), p.points)
        z = cam[:, 2]
        if not (z > znear).any():
            continue
        uv = project(K, np.where((z > znear)[:, None], cam, [0.0, 0.0, 1.0]))  # behind: unused
        pix = (uv + 0.5) * _SS  # pixel centre (c, r) -> PIL coordinates at _SS x
        if p.width == 0:
            if (z > znear).all():
                segs.append((float(z.mean()), pix, 0.0, p.color))
            continue
        for a in range(len(z) - 1):
            if z[a] > znear and z[a + 1] > znear:
                zm = 0.5 * (z[a] + z[a + 1])
                segs.append((zm, pix[a:a + 2], p.width * fx / zm * _SS, p.color))
    Hs, Ws = H * _SS, W * _SS
    zlayer = Image.new("F", (Ws, Hs), 0.0)
    layers = [Image.new("F", (Ws, Hs), 0.0) for _ in range(3)]
    dz = ImageDraw.Draw(zlayer)
    dc = [ImageDraw.Draw(im) for im in layers]
    for zm, pix, width, color in sorted(segs, key=lambda s: -s[0]):  # far to near
        xy = [tuple(q) for q in pix.tolist()]
        if width == 0:
            dz.polygon(xy, fill=zm)
            for d, c in zip(dc, color):
                d.polygon(xy, fill=float(c))
        else:
            w = max(1, round(width))
            dz.line(xy, fill=zm, width=w, joint="curve")
            for d, c in zip(dc, color):
                d.line(xy, fill=float(c), width=w, joint="curve")
    zs = np.asarray(zlayer)
    face = np.repeat(np.repeat(depth, _SS, axis=0), _SS, axis=1)
    shown = (zs > 0) & ((face <= 0) | (zs < face))
    cover = shown.reshape(H, _SS, W, _SS).mean(axis=(1, 3))
    col = np.stack([np.asarray(im) for im in layers], axis=-1) * shown[..., None]
    col = col.reshape(H, _SS, W, _SS, 3).sum(axis=(1, 3)) / np.maximum(
        shown.reshape(H, _SS, W, _SS).sum(axis=(1, 3)), 1)[..., None]
    out = rgb.astype(np.float64) * (1 - cover[..., None]) + col * cover[..., None]
    zmin = np.where(shown, zs, np.inf).reshape(H, _SS, W, _SS).min(axis=(1, 3))
    mask = cover >= 0.5
    seen = np.where(mask, zmin, depth).astype(depth.dtype)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), seen, mask
