"""Appearance randomisation in the scene: extra lights and a specular sheen, the skin's
albedo, and occluders in front of the face. Drawn from the sequence seed, recorded in
sequence.json; the geometric ground truth stays exact and an occluded landmark is labelled
hidden."""

from dataclasses import replace

import numpy as np
import pytest

from facesfm.config import from_dict
from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.geometry.camera import intrinsics, look_at
from facesfm.render.config import (
    AppearanceConfig,
    LightingConfig,
    LightRigConfig,
    OccluderConfig,
    RenderConfig,
    SkinVariationConfig,
    TrajectoryConfig,
)
from facesfm.render.lights import (
    Lighting,
    LightRig,
    rig_sheen,
    sample_light_rig,
    shade_vertices,
)
from facesfm.render.occluders import (
    Occluder,
    Occluders,
    draw_occluders,
    frame_hand,
    sample_occluders,
)
from facesfm.render.skin import SkinVariation, sample_skin_variation, vary_albedo, vary_skin

LIGHT = LightRigConfig(probability=1.0, specular=(0.2, 0.4))
SKIN = SkinVariationConfig(probability=1.0)
OCCLUDERS = OccluderConfig(strands=1.0, glasses=1.0, hand=1.0, hand_frames=1.0)
SCENE = AppearanceConfig(light=LIGHT, skin=SKIN, occluders=OCCLUDERS)
FRONT = Lighting(ambient=0.0, key=1.0, key_dir=np.array([0.0, 0.0, 1.0]), fill=0.0,
                 fill_dir=np.array([0.0, 0.0, 1.0]), color=np.ones(3), temperature=6500.0)


def _cfg(appearance=None):
    return RenderConfig(width=128, height=128, focal=170.0, landmarks=200, write_mesh=False,
                        trajectory=TrajectoryConfig(frames=4),
                        appearance=appearance or AppearanceConfig())


@pytest.fixture(scope="module")
def renders(tmp_path_factory, builtin_face):
    """4-frame sequences of the built-in face at 128 px: "off", "scene" and "scene_again" at
    seed 3, "scene_other" at seed 4, "occluders" (only them) at seed 3."""
    from facesfm.render.writer import render_sequence

    mesh, _ = builtin_face
    root = tmp_path_factory.mktemp("scene")
    runs = {"off": (AppearanceConfig(), 3), "scene": (SCENE, 3), "scene_again": (SCENE, 3),
            "scene_other": (SCENE, 4),
            "occluders": (AppearanceConfig(occluders=OCCLUDERS), 3)}
    return {name: load_sequence(render_sequence(mesh, root / name, _cfg(app), seed=seed).path)
            for name, (app, seed) in runs.items()}


# -- config --------------------------------------------------------------------------------

def test_the_scene_sections_are_off_by_default_and_checked():
    assert not AppearanceConfig().enabled
    for section in ({"light": LightRigConfig(probability=0.2)},
                    {"skin": SkinVariationConfig(probability=0.2)},
                    {"occluders": OccluderConfig(hand=0.2)}):
        assert AppearanceConfig(**section).enabled
    for bad, field in (({"light": {"lights": [3, 1]}}, "light.lights"),
                       ({"light": {"shininess": [0.0, 5.0]}}, "light.shininess"),
                       ({"skin": {"detail_sigma": 0.0}}, "skin.detail_sigma"),
                       ({"skin": {"tone": [-1.0, 1.0]}}, "skin.tone"),
                       ({"occluders": {"glasses": 2.0}}, "occluders.glasses"),
                       ({"occluders": {"hand_size": [0.0, 10.0]}}, "occluders.hand_size")):
        with pytest.raises(InputError, match=field.replace(".", r"\.")):
            from_dict(AppearanceConfig, bad, "appearance")


# -- light ---------------------------------------------------------------------------------

def test_light_rig_draws_are_seeded_and_within_their_ranges():
    a = sample_light_rig(LIGHT, np.random.default_rng(1))
    b = sample_light_rig(LIGHT, np.random.default_rng(1))
    assert a.to_dict() == b.to_dict()
    assert sample_light_rig(LightRigConfig(), np.random.default_rng(1)) is None
    for seed in range(20):
        r = sample_light_rig(LIGHT, np.random.default_rng(seed))
        assert 1 <= len(r.directions) <= 3
        np.testing.assert_allclose(np.linalg.norm(r.directions, axis=1), 1.0)
        assert 0.3 <= r.ambient_gain <= 1.2 and 0.2 <= r.specular <= 0.4


def test_extra_lights_add_lambertian_irradiance_and_the_ambient_gain_scales_it():
    n = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    base = replace(FRONT, ambient=0.2)
    rig = LightRig(directions=np.array([[1.0, 0.0, 0.0]]), colors=np.array([[0.5, 0.25, 0.0]]),
                   temperatures=np.array([3000.0]), ambient_gain=0.5, specular=0.0,
                   shininess=10.0)
    np.testing.assert_allclose(shade_vertices(n, base)[:, 0], [1.2, 0.2, 0.2])
    np.testing.assert_allclose(shade_vertices(n, base, rig),
                               [[1.1, 1.1, 1.1], [0.6, 0.35, 0.1], [0.1, 0.1, 0.1]])


def test_the_sheen_peaks_at_the_mirror_direction_and_is_zero_facing_away():
    rig = LightRig(directions=np.zeros((0, 3)), colors=np.zeros((0, 3)),
                   temperatures=np.zeros(0), ambient_gain=1.0, specular=0.5, shininess=20.0)
    v = np.zeros((3, 3))
    tilt = np.array([np.sin(0.3), 0.0, np.cos(0.3)])
    n = np.array([[0.0, 0.0, 1.0], tilt, [0.0, 0.0, -1.0]])
    s = rig_sheen(v, n, FRONT, rig, np.array([0.0, 0.0, 500.0]))  # light and camera at +z
    np.testing.assert_allclose(s[0], 0.5)  # n = h
    assert 0 < s[1, 0] < s[0, 0]
    np.testing.assert_array_equal(s[2], 0.0)


def test_a_sheen_follows_the_camera_and_leaves_no_state_behind(builtin_face):
    from facesfm.render.renderer import FaceRenderer

    mesh, _ = builtin_face
    K = intrinsics(170.0, 96, 96)
    front = look_at(np.array([0.0, 0.0, 500.0]), np.zeros(3))
    side = look_at(np.array([300.0, 0.0, 400.0]), np.zeros(3))
    rig = LightRig(directions=np.zeros((0, 3)), colors=np.zeros((0, 3)),
                   temperatures=np.zeros(0), ambient_gain=1.0, specular=0.4, shininess=15.0)
    with FaceRenderer(96, 96, K) as r:
        r.set_mesh(mesh, FRONT)
        matte = r.render(front).rgb.astype(int)
        r.set_mesh(mesh, FRONT, replace(rig, specular=0.0))
        np.testing.assert_array_equal(r.render(front).rgb, matte)  # no sheen, no change
        r.set_mesh(mesh, FRONT, rig)
        shiny = r.render(front).rgb.astype(int)
        r.render(side)
        np.testing.assert_array_equal(r.render(front).rgb, shiny)
    assert (shiny >= matte).all() and (shiny - matte).mean() > 1


# -- skin ----------------------------------------------------------------------------------

def test_skin_variation_does_what_each_term_says():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.2, 0.8, (16, 16, 3))
    smooth = np.full_like(rgb, 0.5)
    same = SkinVariation(1.0, 1.0, 1.0, 1.0, 3.0, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(vary_albedo(rgb, smooth, same), rgb)
    np.testing.assert_allclose(vary_albedo(rgb, smooth, replace(same, tone=0.5)), rgb * 0.5)
    flat = vary_albedo(rgb, smooth, replace(same, detail=0.0))
    np.testing.assert_allclose(flat, 0.5)
    grey = vary_albedo(rgb, smooth, replace(same, saturation=0.0))
    np.testing.assert_allclose(grey[..., 0], grey[..., 2])
    low = vary_albedo(rgb, smooth, replace(same, contrast=0.5))
    np.testing.assert_allclose(low.std(axis=(0, 1)), 0.5 * rgb.std(axis=(0, 1)))  # per channel
    assert sample_skin_variation(SkinVariationConfig(), rng) is None


def test_vary_skin_changes_the_albedo_of_textured_and_coloured_meshes_only(builtin_face):
    mesh, _ = builtin_face
    var = SkinVariation(0.6, 1.2, 1.3, 2.0, 3.0, (1.0, 0.9, 1.1))
    out = vary_skin(mesh, var)
    for k in ("vertices", "faces", "landmark_vertices"):
        np.testing.assert_array_equal(getattr(out, k), getattr(mesh, k))
    assert mesh.texture is not None and mesh.vertex_colors is not None  # both change
    assert out.texture.mean() < 0.8 * mesh.texture.mean()  # tone 0.6
    before = mesh.vertex_rgb().astype(float)
    assert out.vertex_rgb().mean() < 0.8 * before.mean()
    coloured = replace(mesh, texture=None, face_uv=None,
                       vertex_colors=(before / 255).astype(np.float32))
    recoloured = vary_skin(coloured, var)
    assert recoloured.vertex_colors.shape == coloured.vertex_colors.shape
    assert np.abs(recoloured.vertex_colors - coloured.vertex_colors).mean() > 0.02
    plain = replace(coloured, vertex_colors=None)
    assert vary_skin(plain, var) is plain


# -- occluders -----------------------------------------------------------------------------

def _square(z, half=20.0):
    pts = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    return Occluder("hand", pts, 0.0, (200.0, 100.0, 50.0))


def test_an_occluder_is_drawn_where_it_is_in_front_and_hides_what_is_behind():
    K = intrinsics(100.0, 64, 64)
    T = np.eye(4)
    rgb = np.full((64, 64, 3), 30, np.uint8)
    depth = np.full((64, 64), 500.0, np.float32)
    depth[:, :8] = 0  # background on the left
    near = Occluders((), _square(400.0), 1.0)
    img, seen, mask = draw_occluders(rgb, depth, near, K, T, hand=True)
    c = slice(29, 35)  # the centre: the square spans +-20 mm at 400 mm = +-5 px
    np.testing.assert_array_equal(img[c, c], [[[200, 100, 50]] * 6] * 6)
    np.testing.assert_allclose(seen[c, c], 400.0)
    assert mask[c, c].all() and not mask[0, 0] and (seen[~mask] == depth[~mask]).all()
    assert 80 <= mask.sum() <= 130  # about 10 x 10 px
    far = Occluders((), _square(600.0), 1.0)  # behind the surface: hidden by it
    img, seen, mask = draw_occluders(rgb, depth, far, K, T, hand=True)
    assert not mask.any()
    np.testing.assert_array_equal(img, rgb)
    np.testing.assert_array_equal(seen, depth)
    _, _, mask = draw_occluders(rgb, depth, near, K, T, hand=False)  # not in this frame
    assert not mask.any()
    strand = Occluders((Occluder("strand", np.array([[-30.0, 0, 400], [30.0, 0, 400]]), 2.0,
                                 (0.0, 0.0, 0.0)),), None, 0.0)
    img, _, mask = draw_occluders(rgb, np.zeros_like(depth), strand, K, T, hand=False)
    rows = np.flatnonzero(mask.any(axis=1))
    assert rows.min() >= 30 and rows.max() <= 33  # 0.5 px wide at 400 mm, on row 31.5
    assert img[:, 10:50][mask[:, 10:50]].max() < 30


def test_occluder_draws_need_semantic_landmarks_for_strands_and_frames(builtin_face):
    mesh, _ = builtin_face
    occ = sample_occluders(mesh, OCCLUDERS, np.random.default_rng(5))
    kinds = {o.kind for o in occ.fixed}
    assert kinds == {"strand", "rim", "bridge", "temple"} and occ.hand is not None
    samples = replace(mesh, meta={**mesh.meta, "semantic68": False})
    occ2 = sample_occluders(samples, OCCLUDERS, np.random.default_rng(5))
    assert occ2.fixed == () and occ2.hand.to_dict() == occ.hand.to_dict()
    assert sample_occluders(mesh, OccluderConfig(), np.random.default_rng(5)) is None
    # the strands lie in front of the skin, the rims in front of the eyes
    v = np.asarray(mesh.vertices)
    eyes = v[mesh.landmark_vertices[36:48]]
    rims = np.concatenate([o.points for o in occ.fixed if o.kind == "rim"])
    assert rims[:, 2].min() >= eyes[:, 2].max() + 10
    for strand in (o.points for o in occ.fixed if o.kind == "strand"):
        for x, y, z in strand:
            near = np.linalg.norm(v[:, :2] - [x, y], axis=1) < 4.0
            assert z > v[near, 2].max() + 1.9


# -- whole sequences -----------------------------------------------------------------------

def test_same_seed_same_scene_and_another_seed_differs(renders):
    a, b, c = renders["scene"], renders["scene_again"], renders["scene_other"]
    for i in range(4):
        np.testing.assert_array_equal(a.image(i), b.image(i))
    np.testing.assert_array_equal(a.visible, b.visible)
    assert a.meta["appearance"] == b.meta["appearance"]
    for k in ("light", "skin", "occluders"):
        assert a.meta["appearance"][k] is not None
        assert a.meta["appearance"][k] != c.meta["appearance"][k]


def test_the_scene_leaves_the_geometric_ground_truth_untouched(renders):
    off = renders["off"]
    for name in ("scene", "occluders"):
        on = renders[name]
        np.testing.assert_array_equal(on.K, off.K)
        for k in ("cam_T_world", "uv", "z", "landmark_xyz", "landmark_vertex_ids"):
            np.testing.assert_array_equal(getattr(on, k), getattr(off, k))
        for i in range(4):
            np.testing.assert_array_equal(on.depth(i), off.depth(i))
            np.testing.assert_array_equal(on.mask(i), off.mask(i))
        # occluders only ever hide a landmark
        assert not (on.visible & ~off.visible).any()


def test_a_landmark_behind_an_occluder_is_labelled_hidden(renders, builtin_face):
    """The written frames are the plain render with the recorded occluders drawn over it, and
    every landmark they hide, and only those, lost its visibility."""
    from facesfm.render.visibility import landmark_visibility
    from facesfm.render.writer import OCCLUDER_FRAMES, frame_stream, sequence_streams

    off, on = renders["off"], renders["occluders"]
    cfg = _cfg(AppearanceConfig(occluders=OCCLUDERS))
    occ = sample_occluders(builtin_face[0], OCCLUDERS, sequence_streams(3)["occluders"])
    assert on.meta["appearance"]["occluders"]["fixed"] == [o.to_dict() for o in occ.fixed]
    lost = 0
    for i in range(4):
        hand = frame_hand(occ, frame_stream(3, i, OCCLUDER_FRAMES))
        assert hand == on.meta["appearance"]["occluders"]["hand_in_frame"][i]
        img, seen, mask = draw_occluders(off.image(i), off.depth(i), occ, on.K,
                                         on.cam_T_world[i], hand)
        np.testing.assert_array_equal(on.image(i), img)
        _, _, vis = landmark_visibility(on.landmark_xyz, _normals(builtin_face[0], cfg), on.K,
                                        on.cam_T_world[i], seen, cfg.depth_tolerance,
                                        cfg.edge_margin, cfg.occlusion)
        np.testing.assert_array_equal(on.visible[i], vis)
        hidden = off.visible[i] & ~on.visible[i]
        # the occlusion test reads the 4 pixel centres around uv: the occluder covers one
        # (the others hid it already or are covered too)
        c0 = np.floor(on.uv[i][hidden]).astype(int)
        covered = np.zeros(len(c0), dtype=bool)
        for du in (0, 1):
            for dv in (0, 1):
                covered |= mask[c0[:, 1] + dv, c0[:, 0] + du]
        assert covered.all()
        lost += hidden.sum()
    assert lost >= 10  # the hand is in every frame


def _normals(mesh, cfg):
    from facesfm.render.visibility import landmark_normals

    return landmark_normals(np.asarray(mesh.vertices, dtype=np.float64), mesh.faces,
                            np.asarray(mesh.landmark_vertices[:cfg.landmarks]),
                            cfg.facing_radius)


def test_resume_fills_sections_added_since_with_their_defaults(tmp_path):
    """A sequence whose recorded config predates a section still resumes."""
    import json

    from facesfm.render.batch import render_batch
    from facesfm.render.config import BatchConfig

    cfg = BatchConfig(render=replace(_cfg(), trajectory=TrajectoryConfig(frames=2),
                                     landmarks=68, lighting=LightingConfig()))
    render_batch(cfg, tmp_path / "d", progress=False, echo=lambda *_: None)
    meta_path = tmp_path / "d" / "00000_00" / "sequence.json"
    meta = json.loads(meta_path.read_text())
    for k in ("light", "skin", "occluders"):
        del meta["config"]["appearance"][k]
    meta_path.write_text(json.dumps(meta))
    said = []
    render_batch(cfg, tmp_path / "d", resume=True, progress=False, echo=said.append)
    assert "1 finished sequence(s) kept, 0 to render" in said[0]


def test_appearance_presets_and_the_held_out_photographs():
    from facesfm.render.batch import build_batch_config
    from facesfm.render.config import HELD_OUT_PHOTOS, PHOTOS

    varied = build_batch_config(vary_appearance=True).render.appearance
    assert varied == build_batch_config(appearance="varied").render.appearance
    assert varied.light.probability > 0 and varied.occluders.enabled
    assert set(varied.background.photos) == set(PHOTOS)
    real = build_batch_config(appearance="realistic").render.appearance
    assert set(real.background.photos) == set(HELD_OUT_PHOTOS)
    assert not set(HELD_OUT_PHOTOS) & set(PHOTOS)  # never a training background
    assert real.camera.motion_blur[1] > varied.camera.motion_blur[1]
    with pytest.raises(InputError, match="preset 'foggy'"):
        build_batch_config(appearance="foggy")
    with pytest.raises(InputError, match="both given"):
        build_batch_config(vary_appearance=True, appearance="realistic")
