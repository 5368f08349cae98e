"""Shared fixtures: the built-in face and one rendered 21-frame sequence (every 3rd frame of
the default -60..+60 degree sweep), rendered once per test session."""

import numpy as np
import pytest

from facesfm.render.config import RenderConfig, TrajectoryConfig


@pytest.fixture(scope="session")
def builtin_face():
    """(FaceMesh, coeffs) of the built-in model, seed 0."""
    from facesfm.faces.builtin import BuiltinFaceModel

    return BuiltinFaceModel().sample(0)


@pytest.fixture(scope="session")
def seq21(tmp_path_factory, builtin_face):
    """Path of a written 21-frame sequence of the built-in face (yaw -60, -54, ..., +60)."""
    from facesfm.render.writer import render_sequence

    mesh, coeffs = builtin_face
    out = tmp_path_factory.mktemp("render") / "seq21"
    cfg = RenderConfig(trajectory=TrajectoryConfig(every=3))
    res = render_sequence(mesh, out, cfg, seed=0,
                          face_info={"source": "builtin", "seed": 0, "coeffs": coeffs})
    assert res.frames == 21
    return out


def _plane_mesh(corners, colors=None, region=None):
    """A FaceMesh of independent triangles: corners (T, 3, 3) world mm."""
    from facesfm.faces.types import FaceMesh

    corners = np.asarray(corners, dtype=np.float64)
    T = len(corners)
    v = corners.reshape(-1, 3)
    f = np.arange(3 * T).reshape(T, 3)
    return FaceMesh(
        vertices=v,
        faces=f,
        landmark_vertices=np.arange(min(len(v), 3)),
        vertex_colors=None if colors is None else np.asarray(colors, np.float32),
        face_region=None if region is None else np.asarray(region, bool),
        name="plane",
    )


@pytest.fixture(scope="session")
def plane_mesh():
    """Factory: FaceMesh of independent triangles from corners (T, 3, 3)."""
    return _plane_mesh
