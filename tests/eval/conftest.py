import pytest
from eval_shapes import face_like_mesh


@pytest.fixture(scope="session")
def face_mesh():
    """(vertices (V, 3) mm, faces (T, 3)) of the face-like test head."""
    return face_like_mesh()
