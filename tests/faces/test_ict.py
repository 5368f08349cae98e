"""ICT-FaceKit loader: exact neutral, modes = file - neutral, trimmed and upstream OBJ files,
errors naming the culprit file, the cache, parts, and deterministic sampling."""

import json
import os
import shutil

import numpy as np
import pytest

from facesfm.errors import InputError
from facesfm.faces import ict as ict_mod
from facesfm.faces.ict import (
    ICT_ORIGIN_MM,
    ICTFaceModel,
    load_ict_arrays,
    read_obj_topology,
    read_obj_vertices,
)

pytestmark = pytest.mark.ict

N_ALL = 26719


def _ref_vertices(path):
    """Independent, slow reference parse: Python float() of each 'v' line."""
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                out.append([float(t) for t in line.split()[1:4]])
    return np.array(out)


@pytest.fixture(scope="module")
def ict_model(ict_dir, tmp_path_factory):
    # One cache folder for the whole session, so the second module to load is warm.
    cache = tmp_path_factory.getbasetemp() / "facesfm-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACESFM_CACHE", str(cache))
        return ICTFaceModel(ict_dir, texture_size=None)


@pytest.fixture(scope="module")
def neutral_ref(ict_dir):
    return _ref_vertices(ict_dir / "generic_neutral_mesh.obj")


def _mini_folder(
    ict_dir,
    dst,
    identities=("identity000", "identity001", "identity002"),
    expressions=("jawOpen", "eyeBlink_L"),
    upstream=(),
):
    """A small FaceXModel copy: the neutral, a few modes, a matching vertex_indices.json.
    Files named in ``upstream`` get the neutral's vt/f lines appended, as upstream has them."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(ict_dir / "generic_neutral_mesh.obj", dst)
    neutral = (ict_dir / "generic_neutral_mesh.obj").read_text().splitlines(keepends=True)
    topo = "".join(ln for ln in neutral if ln.startswith(("vt ", "f ", "usemtl")))
    for stem in (*identities, *expressions):
        text = (ict_dir / f"{stem}.obj").read_text()
        if stem in upstream:
            text = "# upstream-style file\n" + text + topo
        (dst / f"{stem}.obj").write_text(text)
    idx = json.loads((ict_dir / "vertex_indices.json").read_text())
    idx["expressions"] = list(expressions)
    (dst / "vertex_indices.json").write_text(json.dumps(idx))
    return dst


# --------------------------------------------------------------------------- exactness


def test_zero_coefficients_give_the_neutral_mesh_exactly(ict_model, neutral_ref):
    assert neutral_ref.shape == (N_ALL, 3)
    vid = ict_model.vertex_ids
    assert len(vid) == 9409 + 1839 + 3140
    expected = neutral_ref[vid] * 10.0 - ICT_ORIGIN_MM
    assert np.array_equal(ict_model.mesh().vertices, expected)
    zeros = ict_model.mesh(np.zeros(100), np.zeros(53)).vertices
    assert np.array_equal(zeros, expected)
    assert ict_model.identity_modes.shape == (100, len(vid), 3)
    assert ict_model.expression_modes.shape == (53, len(vid), 3)


def test_modes_are_file_minus_neutral_in_mm(ict_model, neutral_ref, ict_dir):
    vid = ict_model.vertex_ids
    ident = _ref_vertices(ict_dir / "identity007.obj")
    assert np.array_equal(ict_model.identity_modes[7], (ident - neutral_ref)[vid] * 10.0)
    j = ict_model.expression_names.index("jawOpen")
    jaw = _ref_vertices(ict_dir / "jawOpen.obj")
    assert np.array_equal(ict_model.expression_modes[j], (jaw - neutral_ref)[vid] * 10.0)
    # A unit weight reproduces the file itself (to rounding), in the world frame.
    w = np.zeros(8)
    w[7] = 1.0
    got = ict_model.mesh(w, {"jawOpen": 1.0}).vertices
    want = (ident + jaw - neutral_ref)[vid] * 10.0 - ICT_ORIGIN_MM
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_world_frame_is_mm_with_the_head_centred(ict_model):
    v = ict_model.neutral_vertices
    centre = 0.5 * (v.min(0) + v.max(0))
    assert np.abs(centre).max() < 0.5  # mm
    assert 240 < v[:, 0].max() - v[:, 0].min() < 260  # head ~25 cm wide
    nose_z = v[:9409, 2].max()
    assert 105 < nose_z < 115  # 13.09 cm - 1.9 cm offset, in mm


def test_topology_splits_quads_keeps_winding_and_uvs(ict_dir):
    faces, uv = read_obj_topology(ict_dir / "generic_neutral_mesh.obj", N_ALL)
    assert faces.shape == (548 + 2 * 25836, 3)
    assert uv.shape == (len(faces), 3, 2) and uv.dtype == np.float32
    # First f line: "f 874/1 12/2 871/3 873/4" -> two triangles of a fan.
    assert faces[:2].tolist() == [[873, 11, 870], [873, 870, 872]]
    lines = (ict_dir / "generic_neutral_mesh.obj").read_text().splitlines()
    vt = [[float(t) for t in ln.split()[1:3]] for ln in lines if ln.startswith("vt ")]
    np.testing.assert_array_equal(uv[0], np.float32([vt[0], vt[1], vt[2]]))
    np.testing.assert_array_equal(uv[1], np.float32([vt[0], vt[2], vt[3]]))
    # ICT's UVs are UDIM-style tiles: u reaches 7 (teeth, lashes...), v stays in [0, 1].
    assert uv[..., 1].min() >= 0 and uv[..., 1].max() <= 1
    assert uv[..., 0].min() >= 0 and 6 < uv[..., 0].max() < 7


def test_uv_atlas_puts_each_tile_in_its_own_quadrant(ict_model, ict_dir):
    full, raw = read_obj_topology(ict_dir / "generic_neutral_mesh.obj", N_ALL)
    keep = np.isin(full, ict_model.vertex_ids).all(1)
    raw, ids = raw[keep], full[keep]
    uv = ict_model.face_uv
    assert uv.shape == raw.shape and uv.min() >= 0 and uv.max() <= 1
    eye = (ids >= 21451).all(1)
    tile = np.floor(raw[..., 0].mean(1))
    assert set(np.unique(tile[~eye])) == {0.0, 1.0}
    face0 = ~eye & (tile == 0)
    head1 = ~eye & (tile == 1)
    np.testing.assert_allclose(
        uv[face0], np.stack([raw[face0, :, 0] / 2, raw[face0, :, 1] / 2 + 0.5], -1), atol=1e-6
    )
    np.testing.assert_allclose(
        uv[head1],
        np.stack([(raw[head1, :, 0] - 1) / 2 + 0.5, raw[head1, :, 1] / 2 + 0.5], -1),
        atol=1e-6,
    )
    np.testing.assert_allclose(uv[eye], raw[eye] / 2, atol=1e-6)
    assert uv[eye].max() <= 0.5 and uv[~eye, :, 1].min() >= 0.5


def test_compacted_mesh_drops_faces_touching_removed_parts(ict_model, neutral_ref, ict_dir):
    f = ict_model.faces
    assert f.min() == 0 and f.max() == len(ict_model.vertex_ids) - 1
    full, _ = read_obj_topology(ict_dir / "generic_neutral_mesh.obj", N_ALL)
    keep = np.isin(full, ict_model.vertex_ids).all(1)
    assert len(f) == keep.sum()
    assert np.array_equal(ict_model.vertex_ids[f], full[keep])
    # Outward winding: triangle normals around the nose tip point towards +z.
    v = ict_model.neutral_vertices
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    c = v[f].mean(1)
    forehead = (f < 9409).all(1) & (np.abs(c[:, 0]) < 30) & (c[:, 1] > 90) & (c[:, 1] < 120)
    forehead &= c[:, 2] > 0
    assert forehead.sum() > 100 and (n[forehead, 2] > 0).all()


def test_parts_subset_and_bad_parts(ict_model, ict_dir):
    face_only = ICTFaceModel(ict_dir, parts=("face",), texture_size=None)
    assert len(face_only.vertex_ids) == 9409 and face_only.faces.max() < 9409
    assert np.array_equal(face_only.landmark_vertices, ict_model.landmark_vertices)
    assert np.array_equal(face_only.mesh().vertices, ict_model.mesh().vertices[:9409])
    with pytest.raises(InputError, match="teeth"):
        ICTFaceModel(ict_dir, parts=("face", "teeth"))
    with pytest.raises(InputError, match="including 'face'"):
        ICTFaceModel(ict_dir, parts=("head",))


# --------------------------------------------------------------------------- file formats


def test_obj_vertex_reader_reads_trimmed_and_upstream_alike(ict_dir, tmp_path):
    d = _mini_folder(
        ict_dir,
        tmp_path / "m",
        identities=("identity003",),
        expressions=(),
        upstream=("identity003",),
    )
    up = read_obj_vertices(d / "identity003.obj")
    trimmed = read_obj_vertices(ict_dir / "identity003.obj")
    assert "vt " in (d / "identity003.obj").read_text()
    assert up.shape == (N_ALL, 3)
    assert np.array_equal(up, trimmed)
    assert np.array_equal(trimmed, _ref_vertices(ict_dir / "identity003.obj"))


def test_upstream_format_folder_loads_the_same_modes(ict_model, ict_dir, tmp_path):
    d = _mini_folder(
        ict_dir, tmp_path / "FaceXModel", upstream=("identity001", "identity002", "jawOpen")
    )
    small = ICTFaceModel(d.parent, texture_size=None, cache=tmp_path / "cache")
    assert small.identity_names == ("identity000", "identity001", "identity002")
    assert small.expression_names == ("jawOpen", "eyeBlink_L")
    assert np.array_equal(small.identity_modes, ict_model.identity_modes[:3])
    for k, name in enumerate(small.expression_names):
        j = ict_model.expression_names.index(name)
        assert np.array_equal(small.expression_modes[k], ict_model.expression_modes[j])
    w = [0.3, -1.2, 0.7]
    np.testing.assert_allclose(
        small.mesh(w, {"jawOpen": 0.5}).vertices,
        ict_model.mesh(w, {"jawOpen": 0.5}).vertices,
        rtol=0,
        atol=1e-12,
    )
    assert np.array_equal(small.landmark_vertices, ict_model.landmark_vertices)
    assert np.array_equal(small.faces, ict_model.faces)


def test_wrong_vertex_count_names_the_file_and_both_counts(ict_dir, tmp_path):
    d = _mini_folder(
        ict_dir,
        tmp_path / "FaceXModel",
        identities=("identity000", "identity001"),
        expressions=("jawOpen",),
    )
    lines = (d / "identity001.obj").read_text().splitlines(keepends=True)
    (d / "identity001.obj").write_text("".join(lines[:-1]))
    with pytest.raises(InputError) as e:
        load_ict_arrays(d, cache=False)
    msg = str(e.value)
    assert "identity001.obj" in msg and "26718" in msg and "26719" in msg


def test_malformed_line_names_the_file_and_line(ict_dir, tmp_path):
    d = _mini_folder(
        ict_dir, tmp_path / "FaceXModel", identities=("identity000",), expressions=("jawOpen",)
    )
    lines = (d / "jawOpen.obj").read_text().splitlines(keepends=True)
    lines[4] = "v 1.0 abc 2.0\n"
    (d / "jawOpen.obj").write_text("".join(lines))
    with pytest.raises(InputError, match=r"jawOpen\.obj: malformed vertex on line 5"):
        load_ict_arrays(d, cache=False)
    lines[4] = "v 1.0 2.0\n"  # too few numbers
    (d / "jawOpen.obj").write_text("".join(lines))
    with pytest.raises(InputError, match=r"jawOpen\.obj: malformed vertex on line 5"):
        load_ict_arrays(d, cache=False)


def test_missing_folder_and_missing_listed_expression(ict_dir, tmp_path):
    with pytest.raises(InputError, match="nowhere"):
        ICTFaceModel(tmp_path / "nowhere")
    d = _mini_folder(
        ict_dir, tmp_path / "FaceXModel", identities=("identity000",), expressions=("jawOpen",)
    )
    (d / "jawOpen.obj").unlink()
    with pytest.raises(InputError, match=r"jawOpen\.obj: missing"):
        load_ict_arrays(d, cache=False)


# --------------------------------------------------------------------------- cache


def test_cache_is_written_reused_and_invalidated(ict_dir, tmp_path):
    d = _mini_folder(
        ict_dir, tmp_path / "FaceXModel", identities=("identity000",), expressions=("jawOpen",)
    )
    cache = tmp_path / "cache"
    a = load_ict_arrays(d, cache=cache)
    files = list(cache.glob("ict_*.npz"))
    assert len(files) == 1
    # Warm: the stored arrays come back (poison the parser to prove it is not called).
    orig = ict_mod._parse
    ict_mod._parse = None
    try:
        b = load_ict_arrays(d, cache=cache)
    finally:
        ict_mod._parse = orig
    assert np.array_equal(a.identity_modes, b.identity_modes)
    assert np.array_equal(a.dense, b.dense) and np.array_equal(a.face_uv, b.face_uv)
    # Changing a mode file changes the key: a second cache file, with the new numbers.
    p = d / "identity000.obj"
    lines = p.read_text().splitlines(keepends=True)
    lines[0] = "v 0 0 0\n"
    p.write_text("".join(lines))
    os.utime(p, ns=(1, 1))
    c = load_ict_arrays(d, cache=cache)
    assert len(list(cache.glob("ict_*.npz"))) == 2
    assert np.array_equal(c.identity_modes[0, 0], -c.neutral[0])
    # A corrupt cache file is parsed again and replaced.
    for f in cache.glob("ict_*.npz"):
        f.write_bytes(b"not an npz")
    e = load_ict_arrays(d, cache=cache)
    assert np.array_equal(e.identity_modes, c.identity_modes)


def test_default_cache_lives_in_facesfm_cache(ict_model, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "facesfm-cache"
    assert len(list(cache.glob("ict_*.npz"))) == 1


# --------------------------------------------------------------------------- sampling


def test_sampling_is_deterministic_per_seed_and_differs_across_seeds(ict_model):
    a, ca = ict_model.sample(11)
    b, cb = ict_model.sample(11)
    c, cc = ict_model.sample(12)
    assert np.array_equal(a.vertices, b.vertices) and ca == cb
    assert not np.allclose(a.vertices, c.vertices, atol=1.0)
    assert len(ca["identity"]) == 100 and ca["expression"] == {}
    assert json.loads(json.dumps(ca)) == ca
    # w_id ~ N(0, 1), drawn first from default_rng(seed).
    np.testing.assert_array_equal(ca["identity"], np.random.default_rng(11).standard_normal(100))
    assert ca["albedo_seed"] != cc["albedo_seed"]


def test_expressions_sparse_in_unit_interval_identity_unchanged(ict_model):
    plain, cp = ict_model.sample(5)
    names = set()
    for seed in range(5, 25):
        m, c = ict_model.sample(seed, expression=True)
        ex = c["expression"]
        assert 1 <= len(ex) <= ict_model.max_expressions
        assert all(0.0 <= w <= 1.0 for w in ex.values())
        names |= set(ex)
        if seed == 5:
            assert c["identity"] == cp["identity"] and c["albedo_seed"] == cp["albedo_seed"]
            rebuilt = ict_model.mesh(c["identity"], ex).vertices
            assert np.array_equal(m.vertices, rebuilt)
            assert not np.allclose(m.vertices, plain.vertices, atol=0.1)
    assert len(names) > 10  # the subset is random, not always the same blend shapes


def test_fewer_modes_and_scale(ict_model, ict_dir):
    few = ICTFaceModel(ict_dir, n_identity_modes=10, identity_scale=0.5, texture_size=None)
    m, c = few.sample(3)
    assert len(c["identity"]) == 10
    np.testing.assert_allclose(
        c["identity"], 0.5 * np.random.default_rng(3).standard_normal(10), rtol=0, atol=0
    )
    np.testing.assert_allclose(m.vertices, ict_model.mesh(c["identity"]).vertices, atol=1e-12)
    zero = ICTFaceModel(ict_dir, identity_scale=0.0, texture_size=None)
    assert np.array_equal(zero.sample(9)[0].vertices, ict_model.neutral_vertices)
    with pytest.raises(InputError, match="n_identity_modes"):
        ICTFaceModel(ict_dir, n_identity_modes=101)
    with pytest.raises(InputError, match="identity weights"):
        ict_model.mesh(np.zeros(101))
    with pytest.raises(InputError, match="unknown ICT expression 'smile'"):
        ict_model.mesh(None, {"smile": 1.0})


# --------------------------------------------------------------------------- appearance


def test_texture_comes_from_the_albedo_module_with_the_documented_arguments(ict_model):
    calls = []

    def fake(vertices, faces, face_uv, landmarks68_xyz, seed, size=1024):
        calls.append(
            (vertices.shape, faces.shape, face_uv.shape, landmarks68_xyz.shape, seed, size)
        )
        return np.full((size, size, 3), 7, np.uint8)

    orig, size = ict_mod._synthesize_albedo, ict_model.texture_size
    ict_mod._synthesize_albedo = lambda: fake
    ict_model.texture_size = 16
    try:
        m, c = ict_model.sample(4)
    finally:
        ict_mod._synthesize_albedo, ict_model.texture_size = orig, size
    v, t = len(ict_model.vertex_ids), len(ict_model.faces)
    assert calls == [((v, 3), (t, 3), (t, 3, 2), (68, 3), c["albedo_seed"], 16)]
    assert m.texture.shape == (16, 16, 3) and m.vertex_colors is None
    assert m.face_uv.shape == (t, 3, 2)


def test_plain_vertex_colours_without_texture(ict_model):
    m = ict_model.mesh()
    assert m.texture is None and m.vertex_colors.shape == m.vertices.shape
    assert m.vertex_colors.dtype == np.float32
    eyes = ict_model.vertex_ids >= 21451
    assert np.allclose(m.vertex_colors[~eyes], [0.78, 0.60, 0.50])
    assert np.allclose(m.vertex_colors[eyes], [0.92, 0.91, 0.88])


def test_real_albedo_texture_when_the_module_is_there(ict_model, ict_dir):
    pytest.importorskip("facesfm.faces.albedo")
    small = ICTFaceModel(ict_dir, texture_size=64)
    a, ca = small.sample(8)
    b, _ = small.sample(8)
    c, _ = small.sample(9)
    assert a.texture.shape == (64, 64, 3) and a.texture.dtype == np.uint8
    assert np.array_equal(a.texture, b.texture)
    assert not np.array_equal(a.texture, c.texture)
    assert np.array_equal(a.vertices, ict_model.mesh(ca["identity"]).vertices)
