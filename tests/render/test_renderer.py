"""The renderer agrees with facesfm.geometry.camera.project to sub-pixel precision."""

import numpy as np
import pytest

from facesfm.geometry.camera import (
    backproject,
    camera_center,
    intrinsics,
    invert_pose,
    look_at,
    project,
    transform,
)
from facesfm.render.config import LightingConfig
from facesfm.render.lights import Lighting, sample_lighting, temperature_rgb
from facesfm.render.renderer import FaceRenderer, make_background, opencv_to_pyrender_pose
from facesfm.render.trajectory import roll_matrix
from facesfm.render.visibility import sample_depth, vertex_normals

W, H = 160, 120
K = intrinsics(200.0, W, H)
NEUTRAL = Lighting(ambient=1.0, key=0.0, key_dir=np.array([0.0, 0, 1]), fill=0.0,
                   fill_dir=np.array([0.0, 0, 1]), color=np.ones(3), temperature=6500.0)


@pytest.fixture(scope="module")
def renderer():
    with FaceRenderer(W, H, K) as r:
        yield r


def _pose(yaw, pitch, roll, dist=400.0):
    a, b = np.deg2rad(yaw), np.deg2rad(pitch)
    eye = dist * np.array([np.sin(a) * np.cos(b), np.sin(b), np.cos(a) * np.cos(b)])
    return roll_matrix(roll) @ look_at(eye, np.zeros(3))


def _inside_and_ambiguous(uv_tri):
    """Pixel centres strictly inside a projected triangle, and those within 0.02 px of an
    edge (where the rasteriser's tie rule decides)."""
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    inside = np.ones((H, W), bool)
    near = np.zeros((H, W), bool)
    d1, d2 = uv_tri[1] - uv_tri[0], uv_tri[2] - uv_tri[0]
    area = d1[0] * d2[1] - d1[1] * d2[0]
    for k in range(3):
        a, b = uv_tri[k], uv_tri[(k + 1) % 3]
        e = b - a
        s = (e[0] * (vv - a[1]) - e[1] * (uu - a[0])) * np.sign(area)
        dist = s / np.linalg.norm(e)
        inside &= dist > 0
        near |= np.abs(dist) < 0.02
    return inside, near


def test_pose_conversion_is_opencv_to_opengl():
    T = _pose(30, 10, 5)
    P = opencv_to_pyrender_pose(T)
    # pyrender's camera looks down its -z: that must be our +z (the viewing direction).
    np.testing.assert_allclose(P[:3, 2], -invert_pose(T)[:3, 2], atol=1e-12)
    np.testing.assert_allclose(P[:3, 1], -invert_pose(T)[:3, 1], atol=1e-12)
    np.testing.assert_allclose(P[:3, 3], camera_center(T), atol=1e-9)


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (35, -12, 17), (-58, 20, -40)])
def test_tiny_triangle_lands_where_project_says(renderer, plane_mesh, yaw, pitch, roll):
    """The rasterised pixels of a small triangle are exactly the pixel centres inside its
    projection: a 0.5 px convention error (or a flipped axis) would move dozens of pixels."""
    T = _pose(yaw, pitch, roll)
    uv_tri = np.array([[61.3, 40.7], [97.6, 52.2], [70.4, 88.9]])
    x_cam = backproject(K, uv_tri, np.array([395.0, 402.0, 410.0]))
    world = transform(invert_pose(T), x_cam)
    renderer.set_mesh(plane_mesh(world[None]), NEUTRAL)
    fr = renderer.render(T)
    inside, near = _inside_and_ambiguous(uv_tri)
    assert near.sum() < 30
    fg = fr.depth > 0
    assert inside.sum() > 500
    np.testing.assert_array_equal(fg[~near], inside[~near])
    np.testing.assert_array_equal(fr.mask, fg)  # no face_region: the whole mesh is face


def test_depth_is_camera_z_at_pixel_centres(renderer, plane_mesh):
    """A tilted plane: depth at every foreground pixel centre equals the ray/plane
    intersection to 1e-3 mm (a half-pixel shift would give ~0.4 mm errors here)."""
    T = _pose(25, 15, 30)
    n = np.array([0.45, -0.3, 1.0])
    n /= np.linalg.norm(n)
    a = np.cross(n, [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    c = [-150 * a - 150 * b, 150 * a - 150 * b, 150 * a + 150 * b, -150 * a + 150 * b]
    renderer.set_mesh(plane_mesh([[c[0], c[1], c[2]], [c[0], c[2], c[3]]]), NEUTRAL)
    fr = renderer.render(T)
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1)
    n_cam = T[:3, :3] @ n
    z = (n_cam @ T[:3, 3]) / (rays @ n_cam)  # plane through the world origin
    fg = fr.depth > 0
    assert fg.sum() > 0.5 * W * H
    assert np.abs(fr.depth[fg] - z[fg]).max() < 1e-3
    # and the 1/z bilinear sampler is exact on it at sub-pixel positions
    rng = np.random.default_rng(1)
    uv = rng.uniform([20, 20], [W - 20, H - 20], (200, 2))
    zs = sample_depth(fr.depth, uv)
    ok = np.isfinite(zs)
    assert ok.sum() > 150
    rays_s = np.concatenate([(uv - K[:2, 2]) / K[0, 0], np.ones((200, 1))], 1)
    np.testing.assert_allclose(zs[ok], ((n_cam @ T[:3, 3]) / (rays_s @ n_cam))[ok], atol=2e-3)


def test_mask_is_face_region_triangles(renderer, plane_mesh):
    T = _pose(0, 0, 0)
    uv_a = np.array([[20.2, 20.3], [70.6, 25.1], [30.4, 90.7]])
    uv_b = np.array([[90.2, 20.3], [140.6, 30.1], [110.4, 100.7]])
    corners = [transform(invert_pose(T), backproject(K, uv, np.full(3, 400.0)))
               for uv in (uv_a, uv_b)]
    region = np.array([True] * 3 + [False] * 3)
    renderer.set_mesh(plane_mesh(corners, region=region), NEUTRAL)
    fr = renderer.render(T)
    in_a, near_a = _inside_and_ambiguous(uv_a)
    in_b, near_b = _inside_and_ambiguous(uv_b)
    ok = ~(near_a | near_b)
    np.testing.assert_array_equal(fr.mask[ok], in_a[ok])
    np.testing.assert_array_equal((fr.depth > 0)[ok], (in_a | in_b)[ok])


def test_lambertian_shading_value_and_view_independence(renderer, plane_mesh):
    """Colour = albedo * (ambient + key * n.l)^(1/2.2) * light colour, the same from two
    different cameras (lights are fixed in the world)."""
    light = Lighting(ambient=0.3, key=0.6, key_dir=np.array([0.0, 0.6, 0.8]), fill=0.0,
                     fill_dir=np.array([0.0, 0.0, 1.0]), color=temperature_rgb(5000.0),
                     temperature=5000.0)
    c = np.array([[-300, -300, 0], [300, -300, 0], [300, 300, 0], [-300, 300, 0.0]])
    tris = [[c[0], c[1], c[2]], [c[0], c[2], c[3]]]
    renderer.set_mesh(plane_mesh(tris, colors=np.full((6, 3), 0.5)), light)
    expected = 255 * 0.5 * (light.color * (0.3 + 0.6 * 0.8)) ** (1 / 2.2)
    for T in (_pose(0, 0, 0), _pose(40, -20, 10)):
        fr = renderer.render(T)
        fg = fr.depth > 0
        assert fg.sum() > 1000
        np.testing.assert_allclose(fr.rgb[fg].mean(0), expected, atol=1.0)
        assert np.abs(fr.rgb[fg].astype(float) - expected).max() <= 1.0


def test_background_and_lighting_are_seeded():
    for kind in ("noise", "gradient", "color"):
        a = make_background(kind, (10, 20, 30), 48, 64, np.random.default_rng(3))
        b = make_background(kind, (10, 20, 30), 48, 64, np.random.default_rng(3))
        assert a.shape == (48, 64, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    for kind in ("noise", "gradient"):
        a = make_background(kind, (0, 0, 0), 48, 64, np.random.default_rng(3))
        c = make_background(kind, (0, 0, 0), 48, 64, np.random.default_rng(4))
        assert np.abs(c.astype(int) - a.astype(int)).mean() > 5
    assert (make_background("color", (10, 20, 30), 4, 4, np.random.default_rng(0))
            == [10, 20, 30]).all()
    l1 = sample_lighting(LightingConfig(), np.random.default_rng(5))
    l2 = sample_lighting(LightingConfig(), np.random.default_rng(5))
    l3 = sample_lighting(LightingConfig(), np.random.default_rng(6))
    assert l1.to_dict() == l2.to_dict() and l1.to_dict() != l3.to_dict()
    assert abs(np.linalg.norm(l1.key_dir) - 1) < 1e-12
    np.testing.assert_allclose(temperature_rgb(6500.0), [1.0, 0.976, 0.996])


def test_builtin_face_render_agrees_with_projection(builtin_face):
    """Every vertex projects into the (1 px dilated) silhouette, and at front-facing,
    unoccluded vertices the depth buffer equals the vertex's camera z."""
    mesh, _ = builtin_face
    K384 = intrinsics(500.0, 384, 384)
    with FaceRenderer(384, 384, K384) as r:
        r.set_mesh(mesh, NEUTRAL)
        for yaw in (-45.0, 10.0):
            T = _pose(yaw, 5.0, 0.0, dist=500.0)
            fr = r.render(T)
            x = transform(T, mesh.vertices)
            uv = project(K384, x)
            fg = fr.depth > 0
            dil = fg.copy()
            dil[1:] |= fg[:-1]
            dil[:-1] |= fg[1:]
            dil[:, 1:] |= dil[:, :-1]
            dil[:, :-1] |= dil[:, 1:]
            ij = np.round(uv).astype(int)
            assert (ij >= 0).all() and (ij < 384).all()
            assert dil[ij[:, 1], ij[:, 0]].all()
            n = vertex_normals(mesh.vertices, mesh.faces)
            to_cam = camera_center(T) - mesh.vertices
            cos = np.einsum("ij,ij->i", n, to_cam) / np.linalg.norm(to_cam, axis=1)
            zs = sample_depth(fr.depth, uv)
            # not grazing: the 4 pixels around uv see the vertex's own (curved) neighbourhood
            sel = (cos > 0.3) & np.isfinite(zs)
            err = np.abs(zs - x[:, 2])[sel]
            assert sel.sum() > 3000
            assert np.mean(err < 0.5) > 0.9  # the rest is occluded (nose, ears)
            assert np.median(err) < 0.05
            # at vertices projecting onto a pixel centre, interpolation plays no part
            centre = sel & (np.abs(uv - np.round(uv)).max(1) < 0.1)
            assert centre.sum() > 50
            assert np.median(np.abs(zs - x[:, 2])[centre]) < 0.01


def test_framebuffer_path_matches_osmesa_path(plane_mesh):
    """EGL/pyglet render through pyrender's own framebuffer, which is 4x multisampled: its
    depth resolve picks a sample off the pixel centre (0.39 mm error on this plane). The
    renderer turns MSAA off there; forcing that path on OSMesa must give identical output."""
    T = _pose(15, 8, 0, dist=380.0)
    n = np.array([0.45, -0.3, 1.0])
    n /= np.linalg.norm(n)
    a = np.cross(n, [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    c = [-150 * a - 150 * b, 150 * a - 150 * b, 150 * a + 150 * b, -150 * a + 150 * b]
    mesh = plane_mesh([[c[0], c[1], c[2]], [c[0], c[2], c[3]]], region=[1, 1, 1, 0, 0, 0])
    out = {}
    for mode in ("osmesa", "framebuffer", "framebuffer+msaa"):
        with FaceRenderer(W, H, K) as r:
            if mode != "osmesa":
                r._r._platform.supports_framebuffers = lambda: True
                r._msaa_checked = mode == "framebuffer+msaa"  # skip the fix: pyrender as is
            r.set_mesh(mesh, NEUTRAL)
            out[mode] = r.render(T)
    ref, fb, ms = out["osmesa"], out["framebuffer"], out["framebuffer+msaa"]
    assert (ref.depth > 0).sum() > 5000 and 0 < ref.mask.sum() < (ref.depth > 0).sum()
    np.testing.assert_array_equal(fb.depth > 0, ref.depth > 0)
    np.testing.assert_allclose(fb.depth, ref.depth, atol=1e-3)  # float32 rounding only
    assert np.abs(fb.rgb.astype(int) - ref.rgb).max() <= 1  # 8-bit rounding/dither
    np.testing.assert_array_equal(fb.mask, ref.mask)
    both = (ms.depth > 0) & (ref.depth > 0)
    assert np.abs(ms.depth[both] - ref.depth[both]).max() > 0.1  # why the fix is needed
