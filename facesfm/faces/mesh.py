"""A user's own textured face mesh (a scan: OBJ, PLY or GLB) as a face source.

The mesh is brought into facesfm's world frame (millimetres, +y up, face looking down +z,
centred on the origin). It has no semantic landmarks: its landmark IDs are deterministic
farthest-point samples over all its vertices, so they are consistent between the frames of
one sequence (what bundle adjustment needs) but carry no meaning across meshes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facesfm.errors import InputError
from facesfm.faces.landmarks import dense_landmarks
from facesfm.faces.types import FaceMesh

__all__ = ["ORIENTATIONS", "UNITS_TO_MM", "MeshFaceModel", "load_textured_mesh"]

UNITS_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
#: orient value -> rotation (applied as R @ x) taking the axis the face looks down to +z,
#: keeping +y up.
ORIENTATIONS = {
    "none": np.eye(3),
    "+z": np.eye(3),
    "-z": np.diag([-1.0, 1.0, -1.0]),
    "+x": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    "-x": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
}
SUFFIXES = (".obj", ".ply", ".glb", ".gltf")
_PLAIN_RGB = (0.78, 0.60, 0.50)


def _texture_image(visual) -> np.ndarray | None:
    """(H, W, 3) uint8 base-colour image of a trimesh TextureVisuals, or None."""
    mat = getattr(visual, "material", None)
    if mat is None:
        return None
    img = getattr(mat, "image", None)  # SimpleMaterial (OBJ/MTL)
    if img is None:
        img = getattr(mat, "baseColorTexture", None)  # PBRMaterial (glTF)
    if img is None:
        return None
    if hasattr(img, "convert"):  # PIL image
        arr = np.asarray(img.convert("RGB"))
    else:
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) == 0:
        return None
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_textured_mesh(
    path: str | os.PathLike,
    units: str = "mm",
    center: bool = True,
    orient: str | None = None,
    require_texture: bool = False,
    n_landmarks: int = 800,
    scale: float = 1.0,
) -> FaceMesh:
    """Read a face mesh into the world frame.

    path:            OBJ (with MTL + image), PLY (vertex colours) or GLB/glTF.
    units:           the file's length unit, "mm", "cm" or "m"; vertices come out in mm.
    scale:           a further factor (a scan in arbitrary units: the factor to mm).
    center:          move the bounding-box centre (after rotation) to the origin.
    orient:          which axis the face looks down in the file: "+z" (or None/"none": no
                     rotation), "-z", "+x", "-x"; it is turned to +z about the y axis (+y up).
    require_texture: raise unless the file has a UV texture image or per-vertex colours.
    n_landmarks:     length of the landmark ordering (capped by the vertex count).

    Returns a FaceMesh: texture + face_uv (T, 3, 2) when the file has a UV-mapped image, else
    vertex_colors (V, 3) in [0, 1] (the file's, or a plain skin tone, noted in meta). The
    landmarks are farthest-point samples over all used vertices starting at the front-most one
    (``meta["semantic68"] is False``: the first 68 are not Multi-PIE landmarks).
    Every unusable input raises :class:`InputError` naming the file or option.
    """
    import trimesh

    path = Path(path)
    if units not in UNITS_TO_MM:
        raise InputError(f"units={units!r}: choose one of {list(UNITS_TO_MM)}")
    key = "none" if orient is None else str(orient)
    if key not in ORIENTATIONS:
        raise InputError(f"orient={orient!r}: choose one of {list(ORIENTATIONS)}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; --mesh takes a mesh file "
                         f"({', '.join(SUFFIXES)})")
    if not path.is_file():
        raise InputError(f"mesh file not found: {path}")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: unsupported mesh format; use one of {list(SUFFIXES)}")
    try:
        tm = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh raises many types on bad files
        raise InputError(f"{path}: cannot read mesh ({type(e).__name__}: {e})") from e
    if not isinstance(tm, trimesh.Trimesh) or len(tm.faces) == 0 or len(tm.vertices) < 3:
        raise InputError(f"{path}: no triangles could be read (malformed or empty mesh)")
    faces = np.asarray(tm.faces, dtype=np.int64)
    v = np.asarray(tm.vertices, dtype=np.float64)
    if not np.isfinite(v).all():
        raise InputError(f"{path}: non-finite vertex coordinates")

    texture = face_uv = colors = None
    appearance = "plain"
    visual = tm.visual
    if getattr(visual, "kind", None) == "texture":
        uv = getattr(visual, "uv", None)
        img = _texture_image(visual)
        if uv is not None and img is not None and len(uv) == len(v):
            texture = img
            # trimesh's uv is v up (OBJ's convention) for every format: it flips glTF's v-down
            # TEXCOORD_0 on reading, so it is FaceMesh.face_uv as it is
            face_uv = np.asarray(uv, dtype=np.float32)[faces]
            appearance = "texture"
    if texture is None and getattr(visual, "kind", None) == "vertex":
        vc = np.asarray(visual.vertex_colors)
        if vc.shape[0] == len(v):
            colors = (vc[:, :3].astype(np.float32) / 255.0).astype(np.float32)
            appearance = "vertex_colors"
    if texture is None and colors is None:
        if require_texture:
            raise InputError(
                f"{path}: no texture image (UV + material image) or vertex colours; the "
                "photometric losses need one (--allow-untextured renders it in a plain skin tone)"
            )
        colors = np.tile(np.asarray(_PLAIN_RGB, np.float32), (len(v), 1))

    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"--scale must be a finite number > 0, got {scale}")
    scale = UNITS_TO_MM[units] * scale
    v = v * scale
    rot = ORIENTATIONS[key]
    if key not in ("none", "+z"):
        v = v @ rot.T
    used = np.zeros(len(v), bool)
    used[faces.reshape(-1)] = True
    offset = np.zeros(3)
    if center:
        offset = 0.5 * (v[used].min(0) + v[used].max(0))
        v = v - offset
    n = min(int(n_landmarks), int(used.sum()))
    landmarks = dense_landmarks(v, used, [], n=n)
    return FaceMesh(
        vertices=v,
        faces=faces,
        landmark_vertices=landmarks,
        vertex_colors=colors,
        texture=texture,
        face_uv=face_uv,
        face_region=used,
        name=path.name,
        meta={
            "source": str(path),
            "units": "mm",
            "file_units": units,
            "scale_to_mm": scale,
            "orient": key,
            "rotation": rot.tolist(),
            "center_offset_mm": offset.tolist(),
            "appearance": appearance,
            "semantic68": False,
            "landmarks": "farthest-point samples over all vertices from the front-most one; "
            "no semantic 68",
        },
    )


class MeshFaceModel:
    """One fixed user mesh as a :class:`facesfm.faces.types.FaceModel`.

    The mesh is read (and checked) once, here; ``sample`` returns it whatever the seed, since a
    scan has no shape or expression parameters. Arguments are those of
    :func:`load_textured_mesh`.
    """

    name = "mesh"

    def __init__(
        self,
        path: str | os.PathLike,
        units: str = "mm",
        center: bool = True,
        orient: str | None = None,
        require_texture: bool = False,
        n_landmarks: int = 800,
        scale: float = 1.0,
    ):
        self.path = Path(path)
        self.face = load_textured_mesh(
            self.path,
            units=units,
            scale=scale,
            center=center,
            orient=orient,
            require_texture=require_texture,
            n_landmarks=n_landmarks,
        )

    def sample(self, seed: int, expression: bool = False) -> tuple[FaceMesh, dict]:
        """The mesh (seed and expression are ignored) and ``{"mesh": path}``."""
        return self.face, {"mesh": str(self.path)}
