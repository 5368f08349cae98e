"""facesfm.faces"""

from facesfm.faces.albedo import synthesize_albedo, texel_positions, vertex_albedo
from facesfm.faces.builtin import BuiltinFaceModel
from facesfm.faces.ict import ICTFaceModel, load_ict_arrays
from facesfm.faces.landmarks import dense_landmarks, validate_count
from facesfm.faces.mesh import MeshFaceModel, load_textured_mesh

__all__ = [
    "BuiltinFaceModel",
    "ICTFaceModel",
    "MeshFaceModel",
    "dense_landmarks",
    "load_ict_arrays",
    "load_textured_mesh",
    "synthesize_albedo",
    "texel_positions",
    "validate_count",
    "vertex_albedo",
]
