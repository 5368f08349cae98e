"""Synthetic skin albedo: deterministic per seed, regions where the landmarks say, high
frequencies present, and a UV rasteriser that covers exactly the triangles."""


import numpy as np
import pytest
from scipy import ndimage

from facesfm.faces.albedo import skin_params, synthesize_albedo, texel_positions, vertex_albedo
from facesfm.faces.builtin import BuiltinFaceModel

SIZE = 512


@pytest.fixture(scope="module")
def head():
    model = BuiltinFaceModel(texture_size=0)
    mesh, _ = model.sample(0)
    lm = mesh.vertices[mesh.landmarks(68)]
    return model, mesh, lm


@pytest.fixture(scope="module")
def raster(head):
    model, mesh, _ = head
    return texel_positions(mesh.vertices, mesh.faces, model.grid.face_uv, SIZE)


@pytest.fixture(scope="module")
def textures(head):
    model, mesh, lm = head
    return {
        s: synthesize_albedo(mesh.vertices, mesh.faces, model.grid.face_uv, lm, s, SIZE)
        for s in (0, 1, 2, 3)
    }


def _lum(img):
    return img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_rasteriser_exact_on_a_plane():
    # a 2x3 grid of quads on the plane z = 0 with uv an affine map of (x, y)
    xs, ys = np.meshgrid(np.linspace(0, 20, 3), np.linspace(0, 30, 4))
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    f = []
    for r in range(3):
        for c in range(2):
            a, b, d, e = r * 3 + c, r * 3 + c + 1, (r + 1) * 3 + c, (r + 1) * 3 + c + 1
            f += [[a, b, e], [a, e, d]]
    f = np.array(f)
    uv = np.stack([v[:, 0] / 20.0, v[:, 1] / 30.0], 1)[f]
    tri, bary, pos = texel_positions(v, f, uv, 64)
    assert (tri >= 0).all()  # every texel centre lies in some triangle
    np.testing.assert_allclose(bary.sum(-1), 1.0, atol=1e-6)
    assert bary.min() > -1e-5
    r, c = np.mgrid[0:64, 0:64]
    u, vv = (c + 0.5) / 64, 1 - (r + 0.5) / 64
    np.testing.assert_allclose(pos[..., 0], 20 * u, atol=1e-4)
    np.testing.assert_allclose(pos[..., 1], 30 * vv, atol=1e-4)
    # the triangle a texel is given contains it
    uvt = uv[tri]
    w = bary[..., None]
    np.testing.assert_allclose((w * uvt).sum(-2), np.stack([u, vv], -1), atol=1e-5)


def test_rasteriser_leaves_uncovered_texels_empty():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2]])
    uv = np.array([[[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]]])
    tri, _, _ = texel_positions(v, f, uv, 100)
    # the triangle covers 1/8 of the square: 1250 texel centres, give or take the diagonal
    assert abs((tri == 0).sum() - 1250) <= 50 and (tri[tri != 0] == -1).all()
    assert tri[99, 0] == 0 and tri[0, 99] == -1  # row 0 is v = 1 (v up)


def test_builtin_uv_covers_the_texture(head, raster):
    model, _, _ = head
    tri = raster[0]
    uv = model.grid.face_uv.astype(np.float64)
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    # covered texels = the UV area of the triangles (they do not overlap), to 0.5 %
    assert abs((tri >= 0).sum() / (area.sum() * SIZE**2) - 1) < 0.005
    assert (tri >= 0).mean() > 0.99  # the grid's UVs fill the square but for the pole fans
    # every triangle bigger than a few texels got its texels
    counts = np.bincount(tri[tri >= 0], minlength=len(uv))
    big = area * SIZE**2 > 4
    assert big.sum() > len(uv) // 2 and (counts[big] > 0).all()


def test_deterministic_and_seed_dependent(head, textures):
    model, mesh, lm = head
    again = synthesize_albedo(mesh.vertices, mesh.faces, model.grid.face_uv, lm, 0, SIZE)
    np.testing.assert_array_equal(again, textures[0])
    assert textures[0].shape == (SIZE, SIZE, 3) and textures[0].dtype == np.uint8
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(textures[a].astype(int) - textures[b].astype(int)).mean() > 3.0
    # skin tone is an identity trait: the mean colour differs across seeds
    means = np.array([t.reshape(-1, 3).mean(0) for t in textures.values()])
    assert np.ptp(means[:, 0]) > 10


def _region_texels(raster, lm, which):
    tri, _, pos = raster
    p = pos.reshape(-1, 3).astype(np.float64)
    cover = tri.ravel() >= 0
    if which == "brow":
        line = np.concatenate([lm[18:21], lm[23:26]]) + [0, -2.0, 0]
        d = np.min(np.linalg.norm(p[:, None] - line[None], axis=-1), 1)
        return cover & (d < 1.5)
    if which == "lip":
        c = np.array([lm[51] * 0.5 + lm[62] * 0.5, lm[57] * 0.5 + lm[66] * 0.5])
        d = np.min(np.linalg.norm(p[:, None] - c[None], axis=-1), 1)
        return cover & (d < 2.5)
    if which == "cheek":
        c = np.array([(lm[36] + lm[48]) / 2 - [12, 0, 0], (lm[45] + lm[54]) / 2 + [12, 0, 0]])
        d = np.min(np.linalg.norm(p[:, None] - c[None], axis=-1), 1)
        return cover & (d < 6.0)
    raise ValueError(which)


def _redness(t, m):
    return t[m, 0].mean() / t[m, 1].mean()


def test_regions(head, raster, textures):
    _, _, lm = head
    brow, lip, cheek = (_region_texels(raster, lm, w) for w in ("brow", "lip", "cheek"))
    assert brow.sum() > 20 and lip.sum() > 20 and cheek.sum() > 100
    for tex in textures.values():
        t = tex.reshape(-1, 3).astype(np.float64)
        lum = _lum(t)
        assert lum[brow].mean() < 0.85 * lum[cheek].mean()
        assert lum[lip].mean() < 0.95 * lum[cheek].mean()
        assert _redness(t, lip) > _redness(t, cheek) + 0.08


def test_high_frequency_content(raster, textures):
    tri = raster[0]
    for tex in textures.values():
        lum = _lum(tex)
        hp = lum - ndimage.gaussian_filter(lum, 3.0)
        # fine detail (pores, grain, spots) of a few grey levels over the skin, not sandpaper
        assert 2.0 < hp[tri >= 0].std() < 10.0


def test_seam_is_continuous(textures):
    # the grid's longitude seam runs down the back: u = 0 and u = 1 are the same 3D points,
    # so across it the (low-passed) colour jumps no more than between neighbouring columns
    rows = slice(SIZE // 8, 7 * SIZE // 8)
    for tex in textures.values():
        lum = ndimage.gaussian_filter(_lum(tex), 3.0, mode="wrap")[rows]
        seam = np.abs(lum[:, 0] - lum[:, -1]).mean()
        inner = np.abs(np.diff(lum[:, SIZE // 4 : 3 * SIZE // 4], axis=1)).mean()
        assert seam < 3 * inner


def test_vertex_albedo(head):
    _, mesh, lm = head
    c = vertex_albedo(mesh.vertices, lm, 5)
    assert c.shape == mesh.vertices.shape and c.dtype == np.float32
    assert c.min() >= 0 and c.max() <= 1
    np.testing.assert_array_equal(c, vertex_albedo(mesh.vertices, lm, 5))
    assert np.abs(c - vertex_albedo(mesh.vertices, lm, 6)).mean() > 0.01
    # brows darker than the cheeks at the vertices too
    v = mesh.vertices
    d_brow = np.min(np.linalg.norm(v[:, None] - (lm[18:21] + [0, -2, 0])[None], axis=-1), 1)
    d_cheek = np.linalg.norm(v - ((lm[36] + lm[48]) / 2 - [12, 0, 0]), axis=1)
    lum = _lum(c)
    assert lum[d_brow < 2].mean() < 0.85 * lum[d_cheek < 6].mean()
    # without landmarks: plain skin, no regions, still deterministic
    plain = vertex_albedo(v, None, 5)
    np.testing.assert_array_equal(plain, vertex_albedo(v, None, 5))
    assert abs(_lum(plain)[d_brow < 2].mean() - _lum(plain)[d_cheek < 6].mean()) < 0.08


def test_skin_params_plausible():
    for s in range(20):
        sp = skin_params(s)
        assert np.all(sp.skin > 0.05) and np.all(sp.skin <= 1)
        assert sp.skin[0] >= sp.skin[1] >= sp.skin[2]  # skin is red > green > blue
        assert np.all(sp.hair < sp.skin)


def test_bad_inputs(head):
    model, mesh, lm = head
    with pytest.raises(ValueError, match="landmarks68_xyz"):
        vertex_albedo(mesh.vertices, lm[:10], 0)
    with pytest.raises(ValueError, match="face_uv"):
        synthesize_albedo(mesh.vertices, mesh.faces, model.grid.face_uv[:5], lm, 0, 64)
    with pytest.raises(ValueError, match="vertices"):
        vertex_albedo(mesh.vertices[:, :2], lm, 0)


@pytest.mark.ict
def test_ict_mesh_regions(ict_dir):
    # the same landmark-driven regions on a real model's topology and UV layout
    from facesfm.faces.ict import ICTFaceModel

    model = ICTFaceModel(ict_dir, texture_size=None)
    v = model.neutral_vertices
    lm = v[model.landmarks68]
    tex = synthesize_albedo(v, model.faces, model.face_uv, lm, 3, 1024)
    tri, _, pos = texel_positions(v, model.faces, model.face_uv, 1024)
    raster = (tri, None, pos)
    t = tex.reshape(-1, 3).astype(np.float64)
    lum = _lum(t)
    brow, lip, cheek = (_region_texels(raster, lm, w) for w in ("brow", "lip", "cheek"))
    assert brow.sum() > 20 and lip.sum() > 20 and cheek.sum() > 100
    assert lum[brow].mean() < 0.85 * lum[cheek].mean()
    assert t[lip, 0].mean() / t[lip, 1].mean() > t[cheek, 0].mean() / t[cheek, 1].mean() + 0.08
