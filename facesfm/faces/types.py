"""Plain values passed from face models to the renderer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["LANDMARK_COUNTS", "FaceMesh", "FaceModel"]

#: Landmark counts that every face source provides. Dense sets are nested: the set of N is
#: the first N entries of the 800 ordering, and the first 68 are the semantic Multi-PIE ones
#: where the source has them. So landmark ID k names the same vertex whatever N is.
LANDMARK_COUNTS = (68, 200, 300, 400, 500, 568, 800)


@dataclass(frozen=True)
class FaceMesh:
    """One face instance ready to render, in the world frame (millimetres, +y up, face
    looking down +z, head roughly centred on the origin).

    vertices:          (V, 3) float64, mm.
    faces:             (T, 3) int64 triangle vertex indices into ``vertices``.
    landmark_vertices: (L,) int64 vertex index of landmark ID k (L = 800 for the built-in
                       models; prefixes give the smaller sets).
    vertex_colors:     (V, 3) float32 in [0, 1], or None.
    texture:           (Ht, Wt, 3) uint8 albedo image, or None.
    face_uv:           (T, 3, 2) float32 texture coordinates of each triangle corner in
                       [0, 1] (v up, OpenGL/OBJ convention), or None. Per corner, because
                       UV seams split vertices that are one point in 3D.
    face_region:       (V,) bool, the vertices of the face area (where landmarks live).
    name:              short description for logs.
    """

    vertices: np.ndarray
    faces: np.ndarray
    landmark_vertices: np.ndarray
    vertex_colors: np.ndarray | None = None
    texture: np.ndarray | None = None
    face_uv: np.ndarray | None = None
    face_region: np.ndarray | None = None
    name: str = "face"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"FaceMesh.vertices must be (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"FaceMesh.faces must be (T, 3) triangles, got {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError("FaceMesh.faces index outside the vertex array")
        if self.landmark_vertices.size and self.landmark_vertices.max() >= len(v):
            raise ValueError("FaceMesh.landmark_vertices index outside the vertex array")
        if self.texture is not None and self.face_uv is None:
            raise ValueError("FaceMesh with a texture needs face_uv")
        if self.face_uv is not None and self.face_uv.shape != (len(f), 3, 2):
            raise ValueError(f"FaceMesh.face_uv must be (T, 3, 2), got {self.face_uv.shape}")
        if self.vertex_colors is not None and self.vertex_colors.shape != v.shape:
            raise ValueError("FaceMesh.vertex_colors must be (V, 3)")

    def landmarks(self, n: int) -> np.ndarray:
        """Vertex indices of landmark IDs 0..n-1."""
        if n > len(self.landmark_vertices):
            raise ValueError(
                f"{self.name} has {len(self.landmark_vertices)} landmarks, {n} were asked for"
            )
        return self.landmark_vertices[:n]

    def vertex_rgb(self) -> np.ndarray | None:
        """(V, 3) uint8 sRGB colour per vertex: its vertex colour, or the texture at one of
        its corners' uv (nearest texel); None if the mesh has neither."""
        if self.vertex_colors is not None:
            return np.clip(np.asarray(self.vertex_colors) * 255 + 0.5, 0, 255).astype(np.uint8)
        if self.texture is None:
            return None
        uv = np.zeros((len(self.vertices), 2), dtype=np.float64)
        uv[np.asarray(self.faces).reshape(-1)] = np.asarray(self.face_uv).reshape(-1, 2)
        h, w = self.texture.shape[:2]
        col = np.clip(np.round(uv[:, 0] * (w - 1)), 0, w - 1).astype(int)
        row = np.clip(np.round((1.0 - uv[:, 1]) * (h - 1)), 0, h - 1).astype(int)  # v is up
        return np.asarray(self.texture)[row, col, :3].astype(np.uint8)


class FaceModel(Protocol):
    """A source of faces: ICT-FaceKit, the built-in model, or a user's scanned mesh."""

    name: str

    def sample(self, seed: int, expression: bool = False) -> tuple[FaceMesh, dict]:
        """A face instance and its coefficients (JSON-serialisable) for a seed."""
        ...
