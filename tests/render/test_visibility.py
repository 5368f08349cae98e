import numpy as np
import pytest
import trimesh

from facesfm.errors import InputError
from facesfm.geometry.camera import intrinsics, look_at, project, transform
from facesfm.render.config import RenderConfig
from facesfm.render.visibility import (
    landmark_visibility,
    outward_sign,
    sample_depth,
    vertex_normals,
)


def test_vertex_normals_area_weighted():
    s = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
    n = vertex_normals(s.vertices, s.faces)
    radial = s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True)
    assert np.abs(np.einsum("ij,ij->i", n, radial) - 1).max() < 2e-3
    assert outward_sign(s.vertices, n) == 1.0
    assert outward_sign(s.vertices, -n) == -1.0
    # area weighting: a vertex shared by a big and a small triangle at a right angle
    v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 1.0], [0, -1.0, 0]])
    f = np.array([[0, 1, 2], [0, 3, 4]])  # normals +z (area 50) and +x (area 0.5)
    n0 = vertex_normals(v, f)[0]
    np.testing.assert_allclose(n0, np.array([0.5, 0, 50]) / np.hypot(0.5, 50), atol=1e-12)
    np.testing.assert_array_equal(vertex_normals(v, f)[[3, 4]] != 0, [[True, False, False]] * 2)


def _plane_depth(K, n_cam, d, H, W):
    """Depth map of the plane n.X = d seen by camera K (camera frame)."""
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1)
    return d / (rays @ n_cam)


def test_sample_depth_exact_on_a_plane_and_nan_off_it():
    K = intrinsics(300.0, 64, 48)
    n = np.array([0.3, -0.5, 1.0])
    depth = _plane_depth(K, n, 400.0, 48, 64)
    rng = np.random.default_rng(0)
    uv = rng.uniform([0, 0], [63, 47], (500, 2))
    rays = np.concatenate([(uv - K[:2, 2]) / 300.0, np.ones((500, 1))], 1)
    np.testing.assert_allclose(sample_depth(depth, uv), 400.0 / (rays @ n), rtol=1e-12)
    # integer positions return the pixel exactly; background or outside gives NaN
    np.testing.assert_allclose(sample_depth(depth, np.array([[5.0, 7.0]])), depth[7, 5])
    holed = depth.copy()
    holed[10, 20] = 0
    z = sample_depth(holed, np.array([[19.5, 9.5], [20.5, 10.5], [21.01, 10.5], [63.5, 3.0],
                                      [-0.01, 3.0], [np.nan, 1.0]]))
    assert np.isnan(z[[0, 1, 3, 4, 5]]).all() and np.isfinite(z[2])


def test_landmark_visibility_rules():
    """In-image margin, back-facing and occlusion each remove exactly their landmark
    (the two-sided "bilinear" occlusion rule)."""
    H = W = 100
    K = intrinsics(100.0, W, H)
    T = look_at(np.array([0.0, 0, 200]), np.zeros(3))  # camera on +z looking at the origin
    # a wall at world z=0 (camera z = 200), seen everywhere
    depth = np.full((H, W), 200.0, dtype=np.float32)
    xyz = np.array([
        [0.0, 0.0, 0.0],     # 0 on the wall, facing: visible
        [10.0, 5.0, 0.3],    # 1 0.3 mm in front of the wall: within 0.5 mm -> visible
        [-10.0, 5.0, -2.0],  # 2 2 mm behind the wall: occluded
        [0.0, 10.0, 0.0],    # 3 facing away
        [99.0, 0.0, 0.0],    # 4 projects at u = 49.5 + 49.5 = 99: outside the 1 px margin
        [96.0, 0.0, 0.0],    # 5 projects at u = 97.5: inside the margin
    ])
    normals = np.tile([0.0, 0.0, 1.0], (6, 1))
    normals[3] = [0, 0, -1]
    uv, z, vis = landmark_visibility(xyz, normals, K, T, depth, tol=0.5, margin=1.0,
                                     occlusion="bilinear")
    np.testing.assert_allclose(uv, project(K, transform(T, xyz)), atol=1e-12)
    np.testing.assert_allclose(z, 200 - xyz[:, 2], atol=1e-12)
    np.testing.assert_array_equal(vis, [True, True, False, False, False, True])
    # the tolerance is the rule: 0.2 mm rejects landmark 1
    _, _, vis2 = landmark_visibility(xyz, normals, K, T, depth, tol=0.2, occlusion="bilinear")
    np.testing.assert_array_equal(vis2, [True, False, False, False, False, True])
    # the default rule keeps margin and facing, and hides landmark 2 (2 mm behind the wall)
    _, _, vis3 = landmark_visibility(xyz, normals, K, T, depth, tol=0.5)
    np.testing.assert_array_equal(vis3, [True, True, False, False, False, True])


def test_front_rule_hides_only_behind_a_surface_in_front_at_all_four_pixels():
    """"front": a surface behind the landmark or background next to it never hides it; an
    occluder hides it only when it covers all 4 pixel centres around uv by more than tol."""
    H = W = 40
    K = intrinsics(100.0, W, H)  # principal point (19.5, 19.5)
    T = look_at(np.array([0.0, 0, 200]), np.zeros(3))
    normals = np.tile([0.0, 0.0, 1.0], (1, 1))
    lm = np.array([[0.0, 0.0, 0.0]])  # z = 200, projects at uv = (19.5, 19.5)

    def vis(depth, rule="front", tol=2.0):
        return landmark_visibility(lm, normals, K, T, depth, tol=tol, occlusion=rule)[2][0]

    wall_behind = np.full((H, W), 230.0)  # a surface 30 mm behind the landmark
    assert vis(wall_behind) and not vis(wall_behind, "bilinear")
    background = np.zeros((H, W))
    assert vis(background) and not vis(background, "bilinear")
    edge = np.full((H, W), 200.0)
    edge[:, 20:] = 150.0  # an occluder 50 mm in front covers 2 of the 4 pixel centres
    assert vis(edge) and not vis(edge, "bilinear")
    edge[:, 19:] = 150.0  # ... now all 4 of them
    assert not vis(edge)
    contact = np.full((H, W), 198.8)  # 1.2 mm in front everywhere: a contact, not occlusion
    assert vis(contact) and not vis(contact, tol=1.0)
    with pytest.raises(ValueError, match="occlusion"):
        vis(contact, "nearest")


def test_render_config_checks_the_occlusion_rule():
    assert RenderConfig().occlusion == "front" and RenderConfig().depth_tolerance == 2.0
    with pytest.raises(InputError, match="occlusion"):
        RenderConfig(occlusion="zbuffer")


def _closed_lips():
    """Two lips meeting on a seam along the x axis at the origin, the face towards +z: each
    lip is a strip of triangles that runs from z = -4 at y = +-6 up to the seam, where the
    last 2 mm fold into the mouth (the inner-lip surface, facing -y above and +y below).
    Returns vertices, faces (counter-clockwise seen from outside) and the seam vertex on the
    upper lip at x = 0."""
    xs = np.arange(-6.0, 6.5, 1.0)
    profile = [(6.0, -4.0), (3.0, -1.0), (1.0, 0.0), (0.0, -2.0)]  # (|y|, z) from outside in
    verts, faces, seam = [], [], None
    for sgn in (1.0, -1.0):
        base = len(verts)
        for ay, z in profile:
            for x in xs:
                verts.append((x, sgn * ay, z))
        nx = len(xs)
        for r in range(len(profile) - 1):
            for c in range(nx - 1):
                a, b = base + r * nx + c, base + r * nx + c + 1
                d, e = a + nx, b + nx
                quad = [(a, b, e), (a, e, d)] if sgn < 0 else [(a, e, b), (a, d, e)]
                faces.extend(quad)
        if sgn > 0:
            seam = base + (len(profile) - 1) * nx + int(np.argmin(np.abs(xs)))
    return np.array(verts), np.array(faces), seam


def test_patch_normals_plane_sphere_and_seam():
    from facesfm.geometry.mesh import patch_normals

    s = trimesh.creation.icosphere(subdivisions=4, radius=50.0)
    pts = s.vertices[::37]
    n = patch_normals(s.vertices, s.faces, pts, 4.0)
    radial = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", n, radial).min() > 0.999
    # a radius smaller than any triangle still gives the nearest triangle's normal
    n_small = patch_normals(s.vertices, s.faces, pts, 1e-3)
    assert np.einsum("ij,ij->i", n_small, radial).min() > 0.99
    with pytest.raises(ValueError, match="radius"):
        patch_normals(s.vertices, s.faces, pts, 0.0)
    with pytest.raises(ValueError, match="points"):
        patch_normals(s.vertices, s.faces, pts[:, :2], 1.0)

    v, f, seam = _closed_lips()
    vn = vertex_normals(v, f)[seam]
    pn = patch_normals(v, f, v[seam][None], 2.5)[0]
    assert vn[2] > 0 and vn[1] < -0.8  # the vertex normal points down into the mouth
    assert pn[2] > 0.9 and abs(pn[1]) < 0.1  # both lips gathered: the seam faces forward


def test_seam_landmark_visible_from_above_with_the_patch_rule():
    """The closed-lip seam seen from 40 degrees above: the rule before (vertex normal) hid it,
    the patch normal keeps it; the render config's default is the patch rule."""
    from facesfm.render.visibility import landmark_normals

    v, f, seam = _closed_lips()
    H = W = 64
    K = intrinsics(200.0, W, H)
    elev = np.radians(40.0)
    T = look_at(np.array([0.0, 300 * np.sin(elev), 300 * np.cos(elev)]), np.zeros(3))
    depth = np.zeros((H, W))  # nothing in front: only the facing test can hide the seam
    vis = {}
    for r in (0.0, 2.5):
        nrm = landmark_normals(v, f, np.array([seam]), r)
        vis[r] = landmark_visibility(v[[seam]], nrm, K, T, depth)[2][0]
    assert not vis[0.0] and vis[2.5]
    assert RenderConfig().facing_radius == 2.5
    np.testing.assert_allclose(landmark_normals(v, f, np.array([seam]), 0.0)[0],
                               vertex_normals(v, f)[seam])
    with pytest.raises(InputError, match="facing_radius"):
        RenderConfig(facing_radius=-1.0)
