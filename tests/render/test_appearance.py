"""Appearance randomisation: photograph backgrounds and camera effects change the
RGB image only, are drawn from the sequence seed, and are recorded in sequence.json (light,
skin and occluders: test_appearance_scene.py)."""

import json

import numpy as np
import pytest
import yaml

from facesfm.config import from_dict
from facesfm.data.format import load_sequence
from facesfm.errors import InputError
from facesfm.render import camera_effects as ce
from facesfm.render.config import (
    AppearanceConfig,
    CameraEffectsConfig,
    PhotoBackgroundConfig,
    RenderConfig,
    TrajectoryConfig,
)

pytest.importorskip("skimage.data", reason="photograph backgrounds need scikit-image")

PHOTO = PhotoBackgroundConfig(probability=1.0)
CAMERA = CameraEffectsConfig(probability=1.0, motion_blur=(1.0, 3.0), defocus=(0.6, 1.5),
                             noise=(0.003, 0.006))


def _cfg(appearance=None, **kw):
    return RenderConfig(width=80, height=80, focal=105.0, landmarks=68, write_mesh=False,
                        trajectory=TrajectoryConfig(frames=3, roll_jitter=2.0),
                        appearance=appearance or AppearanceConfig(), **kw)


@pytest.fixture(scope="module")
def renders(tmp_path_factory, builtin_face):
    """Sequences of the built-in face, 3 frames of 80 px: {name: Sequence}; "off", "photo",
    "camera", "both" and "both_again" at seed 8, "both_other" at seed 9."""
    from facesfm.render.writer import render_sequence

    mesh, _ = builtin_face
    root = tmp_path_factory.mktemp("appearance")
    runs = {
        "off": (AppearanceConfig(), 8),
        "photo": (AppearanceConfig(background=PHOTO), 8),
        "camera": (AppearanceConfig(camera=CAMERA), 8),
        "both": (AppearanceConfig(background=PHOTO, camera=CAMERA), 8),
        "both_again": (AppearanceConfig(background=PHOTO, camera=CAMERA), 8),
        "both_other": (AppearanceConfig(background=PHOTO, camera=CAMERA), 9),
    }
    return {name: load_sequence(render_sequence(mesh, root / name, _cfg(app), seed=seed).path)
            for name, (app, seed) in runs.items()}


# -- config ------------------------------------------------------------------------------

def test_appearance_is_off_by_default_and_its_config_is_checked():
    assert not RenderConfig().appearance.enabled
    assert AppearanceConfig(camera=CameraEffectsConfig(probability=0.1)).enabled
    for bad, field in (({"background": {"probability": 1.5}}, "background.probability"),
                       ({"background": {"photos": ["astronaut"]}}, "background.photos"),
                       ({"background": {"zoom": [0.5, 2.0]}}, "background.zoom"),
                       ({"camera": {"defocus": [2.0, 1.0]}}, "camera.defocus"),
                       ({"camera": {"jpeg_quality": [0, 90]}}, "camera.jpeg_quality"),
                       ({"camera": {"vignetting": [0.0, 1.5]}}, "camera.vignetting")):
        with pytest.raises(InputError, match=field.replace(".", r"\.")):
            from_dict(RenderConfig, {"appearance": bad})
    with pytest.raises(InputError, match="unknown key.*fog"):
        from_dict(RenderConfig, {"appearance": {"fog": {}}})
    with pytest.raises(InputError, match="jpeg_quality"):
        from_dict(RenderConfig, {"appearance": {"camera": {"jpeg_quality": [50.5, 90]}}})


def test_batch_config_reads_appearance_from_yaml_and_the_vary_option(tmp_path):
    from facesfm.render.batch import build_batch_config

    path = tmp_path / "render.yaml"
    path.write_text(yaml.safe_dump({"render": {"appearance": {
        "background": {"probability": 0.5, "photos": ["brick", "coffee"]},
        "camera": {"probability": 0.25, "jpeg_quality": None}}}}))
    app = build_batch_config(path).render.appearance
    assert app.background.probability == 0.5 and app.background.photos == ("brick", "coffee")
    assert app.camera.probability == 0.25 and app.camera.jpeg_quality is None
    varied = build_batch_config(vary_appearance=True).render.appearance
    assert varied.background.probability > 0 and varied.camera.probability > 0
    assert not build_batch_config().render.appearance.enabled


def test_photo_draws_cover_their_ranges():
    from facesfm.render.photos import load_photo, sample_photo_background

    cfg = PhotoBackgroundConfig(probability=0.3, zoom=(1.5, 2.5), brightness=(0.9, 1.1))
    rng = np.random.default_rng(0)
    draws = [sample_photo_background(cfg, rng, 60, 90) for _ in range(400)]
    got = [d for d in draws if d is not None]
    assert 0.24 < len(got) / len(draws) < 0.36
    assert {d.photo for d in got} == set(cfg.photos)
    assert 0.4 < np.mean([d.flip for d in got]) < 0.6
    for d in got:
        ph, pw = load_photo(d.photo).shape[:2]
        x, y, w, h = d.crop
        assert w / h == pytest.approx(1.5)  # the image's aspect ratio
        assert 1.5 - 1e-9 <= min(pw / w, ph / h) <= 2.5 + 1e-9  # the zoom
        assert 0 <= x <= pw - w and 0 <= y <= ph - h
        assert 0.9 <= d.brightness <= 1.1 and all(np.exp(-0.15) <= g <= np.exp(0.15)
                                                  for g in d.tint)


def test_a_mirrored_photo_is_the_mirror_image():
    from facesfm.render.photos import photo_background, sample_photo_background

    bg = sample_photo_background(PhotoBackgroundConfig(probability=1.0),
                                 np.random.default_rng(3), 48, 64)
    a = photo_background(bg, 48, 64)
    b = photo_background(type(bg)(**{**bg.__dict__, "flip": not bg.flip}), 48, 64)
    np.testing.assert_array_equal(a, b[:, ::-1])
    assert np.abs(a.astype(int) - b).mean() > 3


# -- each camera effect on a synthetic image ---------------------------------------------

IDEAL = ce.CameraModel(defocus=0.0, vignetting=0.0, exposure=0.0, noise=0.0, shot_noise=0.0,
                       white_balance=(1.0, 1.0, 1.0), jpeg_quality=None)
STILL = ce.FrameMotion(length=0.0, angle=0.0)


def _camera(**kw):
    return ce.CameraModel(**{**IDEAL.__dict__, **kw})


def _texture(size=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _grad_energy(im):
    x = np.asarray(im, np.float64)
    return (np.diff(x, axis=1) ** 2).mean(), (np.diff(x, axis=0) ** 2).mean()


def test_an_ideal_camera_changes_nothing():
    im = _texture()
    out = ce.apply_camera(im, IDEAL, STILL, np.random.default_rng(0))
    np.testing.assert_array_equal(out, im)


def test_noise_raises_the_variance_of_a_flat_image_and_grows_with_the_signal():
    flat = np.full((64, 64, 3), 128, np.uint8)
    out = ce.apply_camera(flat, _camera(noise=0.01), STILL, np.random.default_rng(0))
    assert out.astype(float).std() > 2.0
    rng = np.random.default_rng(1)
    for level in (0.05, 0.5):  # shot noise: variance = shot_noise x intensity
        x = np.full((128, 128, 3), level, np.float32)
        var = ce.sensor_noise(x, 0.0, 0.004, rng).var()
        assert var == pytest.approx(0.004 * level, rel=0.05)
    x = np.full((128, 128, 3), 0.3, np.float32)
    assert ce.sensor_noise(x, 0.02, 0.0, rng).std() == pytest.approx(0.02, rel=0.05)


def test_blur_lowers_gradient_energy_and_motion_blur_follows_its_direction():
    im = _texture()
    e0 = sum(_grad_energy(im))
    defocused = ce.apply_camera(im, _camera(defocus=2.0), STILL, np.random.default_rng(0))
    assert sum(_grad_energy(defocused)) < 0.3 * e0
    for k in (ce.disk_kernel(2.3), ce.motion_kernel(5.0, 30.0)):
        assert k.sum() == pytest.approx(1.0, abs=1e-6)
    along_u = ce.apply_camera(im, IDEAL, ce.FrameMotion(6.0, 0.0), np.random.default_rng(0))
    along_v = ce.apply_camera(im, IDEAL, ce.FrameMotion(6.0, 90.0), np.random.default_rng(0))
    gu, gv = _grad_energy(along_u)
    assert gu < 0.3 * gv  # blurred along u: the u gradients are gone, the v ones much less so
    gu, gv = _grad_energy(along_v)
    assert gv < 0.3 * gu


def test_vignetting_darkens_the_corners_relative_to_the_centre():
    flat = np.full((65, 81, 3), 200, np.uint8)
    out = ce.apply_camera(flat, _camera(vignetting=0.4), STILL, np.random.default_rng(0))
    lin = (out.astype(float) / 255) ** ce.GAMMA
    centre = lin[32, 40, 0]
    assert centre == pytest.approx((200 / 255) ** ce.GAMMA, rel=0.01)
    for r, c in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        assert lin[r, c, 0] / centre == pytest.approx(0.6, abs=0.01)


def test_exposure_and_white_balance_scale_linear_light():
    grey = np.full((8, 8, 3), 100, np.uint8)
    lin_in = (100 / 255) ** ce.GAMMA
    out = ce.apply_camera(grey, _camera(exposure=1.0), STILL, np.random.default_rng(0))
    assert ((out[0, 0] / 255) ** ce.GAMMA / lin_in) == pytest.approx([2, 2, 2], rel=0.02)
    out = ce.apply_camera(grey, _camera(white_balance=(1.5, 1.0, 0.5)), STILL,
                          np.random.default_rng(0))
    assert ((out[0, 0] / 255) ** ce.GAMMA / lin_in) == pytest.approx([1.5, 1, 0.5], rel=0.02)


def test_jpeg_quality_changes_the_image_and_lower_quality_loses_more():
    im = _texture(64)
    q90, q20 = (ce.apply_camera(im, _camera(jpeg_quality=q), STILL, np.random.default_rng(0))
                for q in (90, 20))
    assert q90.tobytes() != im.tobytes() and q20.tobytes() != q90.tobytes()
    err = [np.abs(a.astype(int) - im).mean() for a in (q90, q20)]
    assert 0 < err[0] < err[1]


# -- whole sequences -----------------------------------------------------------------------

def test_same_seed_same_images_and_draws_another_seed_differs(renders):
    a, b, c = renders["both"], renders["both_again"], renders["both_other"]
    for i in range(3):
        np.testing.assert_array_equal(a.image(i), b.image(i))
    assert a.meta["appearance"] == b.meta["appearance"]
    assert a.meta["appearance"] != c.meta["appearance"]
    assert np.abs(a.image(0).astype(int) - c.image(0)).mean() > 5
    motion = a.meta["appearance"]["camera"]["motion_blur"]
    assert len(motion) == 3 and len({m["length"] for m in motion}) == 3  # drawn per frame


def test_appearance_leaves_the_geometric_ground_truth_untouched(renders):
    off = renders["off"]
    for name in ("photo", "camera", "both"):
        on = renders[name]
        np.testing.assert_array_equal(on.K, off.K)
        for k in ("cam_T_world", "uv", "visible", "z", "landmark_xyz", "landmark_vertex_ids"):
            np.testing.assert_array_equal(getattr(on, k), getattr(off, k))
        for i in range(3):
            np.testing.assert_array_equal(on.depth(i), off.depth(i))
            np.testing.assert_array_equal(on.mask(i), off.mask(i))
            assert on.image(i).tobytes() != off.image(i).tobytes()
        for f in ("cameras.txt", "images.txt", "points3D.txt"):
            assert (on.root / "colmap" / f).read_text() == (off.root / "colmap" / f).read_text()


def test_off_writes_the_renderers_images_and_records_nothing(renders, builtin_face):
    """With appearance off, every written image is exactly the renderer's output over the
    sequence's procedural background: nothing touched the pixels."""
    from facesfm.render.lights import sample_lighting
    from facesfm.render.renderer import FaceRenderer, make_background
    from facesfm.render.writer import sequence_streams

    off = renders["off"]
    meta = json.loads((off.root / "sequence.json").read_text())
    assert "appearance" not in meta and meta["background"] in ("noise", "gradient")
    cfg = _cfg()
    streams = sequence_streams(8)
    lighting = sample_lighting(cfg.lighting, streams["lighting"])
    streams["background"].random()  # "random" chose the kind with this draw
    bg = make_background(meta["background"], cfg.background_color, 80, 80, streams["background"])
    with FaceRenderer(80, 80, off.K) as r:
        r.set_mesh(builtin_face[0], lighting)
        for i in range(3):
            np.testing.assert_array_equal(off.image(i), r.render(off.cam_T_world[i], bg).rgb)


def test_background_pixels_are_the_recorded_photo_crop_and_the_face_is_kept(renders):
    from facesfm.render.photos import PhotoBackground, load_photo, photo_background

    off, on = renders["off"], renders["photo"]
    rec = on.meta["appearance"]["background"]
    assert on.meta["background"] == "photo" and on.meta["appearance"]["camera"] is None
    assert rec["flip"]  # seed 8 draws a mirrored crop: a record without it fails below
    bg = photo_background(PhotoBackground(**{**rec, "crop": tuple(rec["crop"]),
                                             "tint": tuple(rec["tint"])}), 80, 80)
    x, y, w, h = rec["crop"]
    assert 0 <= x and 0 <= y and x + w <= load_photo(rec["photo"]).shape[1] + 1e-6
    assert y + h <= load_photo(rec["photo"]).shape[0] + 1e-6
    assert bg.std() > 3  # a photograph, not a flat colour
    for i in range(3):
        sky = on.depth(i) == 0
        assert 500 < sky.sum() < 80 * 80 - 500
        np.testing.assert_array_equal(on.image(i)[sky], bg[sky])
        np.testing.assert_array_equal(on.image(i)[~sky], off.image(i)[~sky])
        assert np.abs(off.image(i)[sky].astype(int) - bg[sky]).mean() > 5


def test_the_recorded_camera_reproduces_the_images(renders):
    """The sequence says how it was made: the clean render taken through the recorded camera
    and motion (noise from the frame's stream) gives the written frame byte for byte."""
    from facesfm.render.writer import frame_stream

    off, on = renders["off"], renders["camera"]
    rec = dict(on.meta["appearance"]["camera"])
    motion = rec.pop("motion_blur")
    camera = ce.CameraModel(**{**rec, "white_balance": tuple(rec["white_balance"])})
    assert on.meta["appearance"]["background"] is None
    assert on.meta["background"] == off.meta["background"]
    for i in range(3):
        rng = frame_stream(8, i)
        assert ce.sample_motion(CAMERA, rng) == ce.FrameMotion(**motion[i])
        np.testing.assert_array_equal(ce.apply_camera(off.image(i), camera,
                                                      ce.FrameMotion(**motion[i]), rng),
                                      on.image(i))


def test_resume_takes_a_sequence_rendered_before_appearance_existed(tmp_path):
    from facesfm.config import to_dict
    from facesfm.render.batch import render_batch
    from facesfm.render.config import BatchConfig

    cfg = BatchConfig(render=_cfg())
    render_batch(cfg, tmp_path / "d", progress=False, echo=lambda *_: None)
    meta_path = tmp_path / "d" / "00000_00" / "sequence.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["appearance"]  # as written before appearance existed
    meta_path.write_text(json.dumps(meta))
    said = []
    render_batch(cfg, tmp_path / "d", resume=True, progress=False, echo=said.append)
    assert "1 finished sequence(s) kept, 0 to render" in said[0]
    on = from_dict(BatchConfig, {**to_dict(cfg), "render": {
        **to_dict(cfg.render), "appearance": {"camera": {"probability": 1.0}}}})
    with pytest.raises(InputError, match="other settings"):
        render_batch(on, tmp_path / "d", resume=True, progress=False, echo=lambda *_: None)
