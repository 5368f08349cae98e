"""Synthetic face-like geometry shared by the eval tests (no other facesfm stage needed)."""

import numpy as np
import trimesh


def face_like_mesh(subdivisions: int = 4):
    """An ellipsoid head (mm) with a nose, brow and chin bumps; returns (vertices, faces).

    Half-axes 75 x 100 x 90 mm (x, y, z), face looking down +z like the world frame.
    """
    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    u = s.vertices.copy()
    bumps = [  # (unit direction, height mm, angular width rad)
        ((0.0, -0.05, 1.0), 22.0, 0.22),  # nose
        ((0.3, 0.35, 1.0), 6.0, 0.25),  # brows
        ((-0.3, 0.35, 1.0), 6.0, 0.25),
        ((0.0, -0.6, 1.0), 8.0, 0.3),  # chin
        ((0.35, 0.15, 1.0), -7.0, 0.18),  # eye sockets
        ((-0.35, 0.15, 1.0), -7.0, 0.18),
    ]
    r = np.ones(len(u))
    for d, h, w in bumps:
        d = np.asarray(d) / np.linalg.norm(d)
        ang = np.arccos(np.clip(u @ d, -1, 1))
        r += (h / 90.0) * np.exp(-0.5 * (ang / w) ** 2)
    v = u * r[:, None] * np.array([75.0, 100.0, 90.0])
    return v, np.asarray(s.faces, dtype=np.int64)


def ellipsoid_mesh(subdivisions: int = 3):
    """A convex ellipsoid (mm): (vertices, faces)."""
    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    return s.vertices * np.array([75.0, 100.0, 90.0]), np.asarray(s.faces, dtype=np.int64)


def random_rotation(rng, angle_deg=None):
    """A rotation matrix; about a random axis by ``angle_deg`` (random angle when None)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    th = np.radians(angle_deg) if angle_deg is not None else rng.uniform(0, np.pi)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K
