"""User meshes: units, centring and orientation into the world frame, texture and vertex
colours read back, deterministic landmarks, and errors that name the file."""

import numpy as np
import pytest
import trimesh
from PIL import Image

from facesfm.errors import InputError
from facesfm.faces.mesh import MeshFaceModel, load_textured_mesh

OFFSET_M = np.array([0.5, 0.2, -0.3])
RADIUS_M = 0.1


def _uv_of(p_m):
    """The texture coordinate painted onto a point (file units, metres): affine in x, y."""
    return np.stack([2 * p_m[..., 0] + 0.2, 2 * p_m[..., 1] + 0.1], -1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("meshes")
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=RADIUS_M)
    sphere.vertices += OFFSET_M
    img = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    tex = sphere.copy()
    tex.visual = trimesh.visual.TextureVisuals(uv=_uv_of(tex.vertices), image=Image.fromarray(img))
    tex.export(d / "face.obj")
    tex.export(d / "face.glb")
    col = trimesh.creation.icosphere(subdivisions=1, radius=3.0)
    colors = np.random.default_rng(1).integers(0, 256, (len(col.vertices), 4), dtype=np.uint8)
    colors[:, 3] = 255
    col.visual.vertex_colors = colors
    col.export(d / "colored.ply")
    bare = trimesh.creation.box(extents=(2.0, 4.0, 6.0))
    bare.export(d / "bare.ply")
    # A "nose" pointing down +x: a cone whose tip is at x = 5 (cm).
    cone = trimesh.creation.cone(radius=1.0, height=5.0)  # apex on +z
    cone.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    cone.export(d / "cone.ply")
    return {"dir": d, "img": img, "colors": colors, "col": col, "cone": cone}


def test_textured_obj_in_metres_is_centred_mm_with_its_texture(files):
    m = load_textured_mesh(files["dir"] / "face.obj", units="m")
    v = m.vertices
    np.testing.assert_allclose(0.5 * (v.min(0) + v.max(0)), 0.0, atol=1e-9)
    np.testing.assert_allclose(v.max(0) - v.min(0), 2 * RADIUS_M * 1000, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), RADIUS_M * 1000, rtol=1e-6)
    assert np.array_equal(m.texture, files["img"])
    offset = np.array(m.meta["center_offset_mm"])
    np.testing.assert_allclose(offset, OFFSET_M * 1000, atol=1e-4)
    # Every triangle corner carries the UV painted at its original position.
    p_file = (v[m.faces] + offset) / 1000.0
    np.testing.assert_allclose(m.face_uv, _uv_of(p_file), atol=1e-6)
    assert m.face_uv.shape == (len(m.faces), 3, 2) and m.face_uv.dtype == np.float32
    assert m.vertex_colors is None and m.meta["appearance"] == "texture"
    assert m.meta["semantic68"] is False


def test_units_and_no_centring(files):
    cm = load_textured_mesh(files["dir"] / "face.obj", units="cm", center=False)
    mm = load_textured_mesh(files["dir"] / "face.obj", units="mm", center=False)
    np.testing.assert_allclose(cm.vertices, 10.0 * mm.vertices, rtol=1e-12)
    np.testing.assert_allclose(mm.vertices.mean(0), OFFSET_M, atol=1e-6)
    with pytest.raises(InputError, match="units='inch'"):
        load_textured_mesh(files["dir"] / "face.obj", units="inch")


def test_glb_keeps_its_texture(files):
    m = load_textured_mesh(files["dir"] / "face.glb", units="m")
    assert np.array_equal(m.texture, files["img"])
    p_file = (m.vertices[m.faces] + np.array(m.meta["center_offset_mm"])) / 1000.0
    np.testing.assert_allclose(m.face_uv, _uv_of(p_file), atol=1e-5)


def test_vertex_coloured_ply(files):
    m = load_textured_mesh(files["dir"] / "colored.ply", units="cm", center=False)
    np.testing.assert_allclose(m.vertices, files["col"].vertices * 10.0, rtol=1e-6)
    np.testing.assert_allclose(m.vertex_colors, files["colors"][:, :3] / 255.0, atol=1e-6)
    assert m.texture is None and m.face_uv is None
    assert m.meta["appearance"] == "vertex_colors"


@pytest.mark.parametrize(
    "orient, perm",
    [
        ("+x", lambda p: np.c_[-p[:, 2], p[:, 1], p[:, 0]]),
        ("-x", lambda p: np.c_[p[:, 2], p[:, 1], -p[:, 0]]),
        ("-z", lambda p: np.c_[-p[:, 0], p[:, 1], -p[:, 2]]),
        ("+z", lambda p: p),
        (None, lambda p: p),
    ],
)
def test_orientation_turns_the_face_axis_to_plus_z_keeping_y_up(files, orient, perm):
    m = load_textured_mesh(files["dir"] / "cone.ply", units="cm", center=False, orient=orient)
    np.testing.assert_allclose(m.vertices, perm(files["cone"].vertices * 10.0), atol=1e-9)


def test_orient_plus_x_puts_the_nose_in_front(files):
    m = load_textured_mesh(files["dir"] / "cone.ply", units="cm", orient="+x")
    tip = np.argmax(m.vertices[:, 2])
    np.testing.assert_allclose(m.vertices[tip, [0, 1]], 0.0, atol=1e-9)
    assert m.vertices[tip, 2] == pytest.approx(25.0)  # half the 50 mm height after centring
    assert m.landmark_vertices[0] == tip  # landmark 0: the front-most vertex
    with pytest.raises(InputError, match="orient='up'"):
        load_textured_mesh(files["dir"] / "cone.ply", orient="up")


def test_landmarks_are_deterministic_nested_fps_over_all_vertices(files):
    m = load_textured_mesh(files["dir"] / "face.obj", units="m")
    lm = m.landmark_vertices
    used = np.unique(m.faces)
    assert len(lm) == len(used) == 162  # fewer vertices than 800: all of them, in FPS order
    assert len(np.unique(lm)) == len(lm) and m.face_region.all()
    again = load_textured_mesh(files["dir"] / "face.obj", units="m", n_landmarks=20)
    assert np.array_equal(again.landmark_vertices, lm[:20])
    # FPS on a sphere: the second landmark is the antipode of the first.
    v = m.vertices
    np.testing.assert_allclose(v[lm[1]], -v[lm[0]], atol=1e-6)


def test_missing_file_and_unsupported_format(tmp_path):
    with pytest.raises(InputError, match="mesh file not found: .*nope.obj"):
        load_textured_mesh(tmp_path / "nope.obj")
    (tmp_path / "face.xyz").write_text("1 2 3\n")
    with pytest.raises(InputError, match=r"face\.xyz: unsupported mesh format"):
        load_textured_mesh(tmp_path / "face.xyz")


@pytest.mark.parametrize(
    "text",
    [
        "hello world\nv 1 2\nf 1 2 3 4\n",  # trimesh raises
        "v 0 0 0\nv 1 0 0\nv 0 1 0\n",  # vertices, no faces
        "",  # empty
    ],
)
def test_malformed_obj_names_the_file(tmp_path, text):
    p = tmp_path / "broken.obj"
    p.write_text(text)
    with pytest.raises(InputError, match=r"broken\.obj"):
        load_textured_mesh(p)


def test_missing_texture_is_an_error_only_when_required(files):
    p = files["dir"] / "bare.ply"
    with pytest.raises(InputError, match=r"bare\.ply: no texture image"):
        load_textured_mesh(p, require_texture=True)
    m = load_textured_mesh(p)
    assert m.meta["appearance"] == "plain"
    np.testing.assert_allclose(m.vertex_colors, np.tile([0.78, 0.60, 0.50], (len(m.vertices), 1)))
    # The textured and the coloured files satisfy the requirement.
    load_textured_mesh(files["dir"] / "face.obj", require_texture=True)
    load_textured_mesh(files["dir"] / "colored.ply", require_texture=True)


def test_mesh_face_model_ignores_the_seed(files):
    path = files["dir"] / "face.obj"
    model = MeshFaceModel(path, units="m")
    a, ca = model.sample(0)
    b, cb = model.sample(123, expression=True)
    assert np.array_equal(a.vertices, b.vertices)
    assert ca == cb == {"mesh": str(path)}
    assert model.name == "mesh"
    with pytest.raises(InputError, match="mesh file not found"):
        MeshFaceModel(files["dir"] / "other.obj")
