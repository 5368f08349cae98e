"""facesfm.faces"""

from facesfm.faces.ict import ICTFaceModel, load_ict_arrays
from facesfm.faces.landmarks import dense_landmarks, validate_count
from facesfm.faces.mesh import MeshFaceModel, load_textured_mesh

__all__ = [
    "ICTFaceModel",
    "MeshFaceModel",
    "dense_landmarks",
    "load_ict_arrays",
    "load_textured_mesh",
    "validate_count",
]
