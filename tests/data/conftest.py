"""A small sequence of the built-in face (8 frames, 128x128), rendered once per session."""

import pytest

from facesfm.render.config import RenderConfig, TrajectoryConfig


@pytest.fixture(scope="session")
def small_seq(tmp_path_factory):
    from facesfm.faces.builtin import BuiltinFaceModel
    from facesfm.render.writer import render_sequence

    mesh, coeffs = BuiltinFaceModel().sample(1)
    out = tmp_path_factory.mktemp("data") / "small"
    cfg = RenderConfig(
        width=128, height=128, focal=170.0, trajectory=TrajectoryConfig(frames=8, roll_jitter=4.0)
    )
    render_sequence(
        mesh, out, cfg, seed=11, face_info={"source": "builtin", "seed": 1, "coeffs": coeffs}
    )
    return out
