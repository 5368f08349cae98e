"""A lens per sequence (``RenderConfig.focal_spread``): focal length and camera distance drawn
together from the sequence seed, so the head fills the frame alike and only the perspective
differs; the geometric ground truth follows the drawn K."""

import json

import numpy as np
import pytest

from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.geometry.camera import project, transform
from facesfm.render.config import RenderConfig, TrajectoryConfig


def _cfg(**kw):
    return RenderConfig(width=96, height=96, focal=125.0, landmarks=68, write_mesh=False,
                        trajectory=TrajectoryConfig(frames=3), **kw)


@pytest.fixture(scope="module")
def lens_renders(tmp_path_factory, builtin_face):
    """{name: Sequence}: "fixed" (spread 1), "a" and "a_again" (spread 2.5, seed 3),
    "b" .. "e" (spread 2.5, seeds 4..7), all of the built-in face."""
    from facesfm.geometry.camera import intrinsics
    from facesfm.render.renderer import FaceRenderer
    from facesfm.render.writer import render_sequence

    mesh, _ = builtin_face
    root = tmp_path_factory.mktemp("lens")
    out = {"fixed": load_sequence(render_sequence(mesh, root / "fixed", _cfg(), seed=3).path)}
    spread = _cfg(focal_spread=2.5)
    # one renderer for the varied sequences, as a batch worker reuses it
    r = FaceRenderer(96, 96, intrinsics(125.0, 96, 96))
    try:
        for name, seed in (("a", 3), ("a_again", 3), ("b", 4), ("c", 5), ("d", 6), ("e", 7)):
            out[name] = load_sequence(render_sequence(mesh, root / name, spread, seed=seed,
                                                      renderer=r).path)
    finally:
        r.close()
    return out


def test_spread_one_draws_nothing(lens_renders):
    seq = lens_renders["fixed"]
    assert seq.K[0, 0] == 125.0
    assert "lens" not in json.loads((seq.root / "sequence.json").read_text())


def test_lens_is_drawn_from_the_seed_and_recorded(lens_renders):
    a, again = lens_renders["a"], lens_renders["a_again"]
    np.testing.assert_array_equal(a.K, again.K)
    np.testing.assert_array_equal(a.image(1), again.image(1))
    focals = [lens_renders[k].K[0, 0] for k in ("a", "b", "c", "d", "e")]
    assert len(set(focals)) == 5 and all(125 / 2.5 <= f <= 125 * 2.5 for f in focals)
    for k in ("a", "b", "c", "d", "e"):
        seq = lens_renders[k]
        meta = json.loads((seq.root / "sequence.json").read_text())
        factor = meta["lens"]["factor"]
        assert seq.K[0, 0] == pytest.approx(125.0 * factor)
        # the camera moved back by the same factor (distance to the look-at target)
        C = -np.einsum("ba,b->a", seq.cam_T_world[0, :3, :3], seq.cam_T_world[0, :3, 3])
        assert np.linalg.norm(C - np.asarray(meta["target"])) == pytest.approx(500.0 * factor)


def test_head_fills_the_frame_alike_and_ground_truth_follows_k(lens_renders):
    area = {k: lens_renders[k].mask(1).sum() for k in lens_renders}
    for k in ("a", "b", "c", "d", "e"):
        assert area[k] == pytest.approx(area["fixed"], rel=0.2), area
        seq = lens_renders[k]
        uv = project(seq.K, transform(seq.cam_T_world[1], seq.landmark_xyz))
        vis = seq.visible[1]
        np.testing.assert_allclose(uv[vis], seq.uv[1][vis], atol=1e-6)
        # the pixels were rendered through the same K: the depth map under each visible
        # landmark is the landmark's own depth
        c, r = np.rint(seq.uv[1][vis]).astype(int).T
        dz = np.abs(seq.depth(1)[r, c] - seq.z[1][vis])
        assert np.median(dz) < 1.0, np.median(dz)


def test_bad_spread_is_refused():
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="focal_spread"):
            RenderConfig(focal_spread=bad)
