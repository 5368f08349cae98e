import math

import numpy as np
import pytest
import torch

from facesfm.geometry.camera import intrinsics, invert_pose, look_at
from facesfm.geometry.warp import (
    affine_resample,
    affine_resample_views,
    backproject_depth,
    crop_affine,
    inverse_warp,
    pixel_grid,
    sample_image,
    uv_to_grid,
)
from facesfm.networks.pose import pose_vector_to_matrix


def _K(f, W, H, dtype=torch.float64):
    return torch.tensor(intrinsics(f, W, H), dtype=dtype)


def test_pixel_grid_and_uv_to_grid_hit_pixel_centres():
    g = pixel_grid(3, 4, dtype=torch.float64)
    assert g.shape == (3, 4, 2)
    assert g[2, 1].tolist() == [1.0, 2.0]  # (row 2, col 1) -> uv (1, 2)
    n = uv_to_grid(g, 3, 4)
    assert n[0, 0].tolist() == [-1.0, -1.0] and n[2, 3].tolist() == [1.0, 1.0]


def test_sample_image_reads_exact_pixels_and_points():
    img = torch.arange(2 * 3 * 5 * 7, dtype=torch.float64).reshape(2, 3, 5, 7)
    uv = torch.tensor([[[0.0, 0.0], [6.0, 4.0], [2.0, 3.0]]] * 2, dtype=torch.float64)
    out = sample_image(img, uv)
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(out[1, 2], img[1, :, 3, 2], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[0, 1], img[0, :, 4, 6], rtol=0, atol=1e-12)
    # halfway between two columns: the mean
    mid = sample_image(img, torch.tensor([[[2.5, 1.0]]] * 2, dtype=torch.float64))
    torch.testing.assert_close(mid[0, 0], 0.5 * (img[0, :, 1, 2] + img[0, :, 1, 3]))


def test_backproject_depth_reprojects_to_its_pixel():
    K = _K(50.0, 8, 6)
    depth = 400.0 + torch.rand(2, 1, 6, 8, dtype=torch.float64) * 50
    pts = backproject_depth(K, depth)
    assert pts.shape == (2, 6, 8, 3)
    torch.testing.assert_close(pts[..., 2], depth[:, 0])
    uv = (pts @ K.T)[..., :2] / pts[..., 2:]
    torch.testing.assert_close(uv, pixel_grid(6, 8, dtype=torch.float64).expand(2, 6, 8, 2))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_identity_warp_reproduces_image(dtype, tol):
    torch.manual_seed(0)
    H, W = 12, 16
    img = torch.rand(2, 3, H, W, dtype=dtype)
    depth = 300.0 + 200.0 * torch.rand(2, 1, H, W, dtype=dtype)
    T = torch.eye(4, dtype=dtype).expand(2, 4, 4)
    w = inverse_warp(img, depth, T, _K(20.0, W, H, dtype))
    assert w.image.dtype == dtype and w.image.shape == img.shape
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.equal(w.valid[inner], torch.ones_like(w.valid[inner]))
    torch.testing.assert_close(w.image[inner], img[inner], rtol=0, atol=tol)
    torch.testing.assert_close(w.projected_depth, depth)


def _plane_case(dtype=torch.float64):
    """A tilted plane n.X = d in the target frame, a general rigid motion, a linear texture."""
    H, W, f = 24, 32, 40.0
    K = _K(f, W, H, dtype)
    n = torch.tensor([0.1, -0.2, 1.0], dtype=dtype)
    n = n / n.norm()
    d = 500.0
    uv = pixel_grid(H, W, dtype=dtype)
    rays = torch.cat([uv, torch.ones(H, W, 1, dtype=dtype)], -1) @ torch.linalg.inv(K).T
    depth = d / (rays @ n)  # z of the ray with z-component 1 hitting the plane
    vec = torch.tensor([0.03, -0.05, 0.02, 8.0, -5.0, 4.0], dtype=dtype)
    T = pose_vector_to_matrix(vec)
    return H, W, K, n, d, depth[None, None], T


def test_rigid_motion_on_plane_matches_homography():
    H, W, K, n, d, depth, T = _plane_case()
    R, t = T[:3, :3], T[:3, 3]
    # plane-induced homography: x_src ~ K (R + t n^T / d) K^-1 x_tgt
    Hm = K @ (R + torch.outer(t, n) / d) @ torch.linalg.inv(K)
    uv = pixel_grid(H, W, dtype=torch.float64)
    xh = torch.cat([uv, torch.ones(H, W, 1, dtype=torch.float64)], -1) @ Hm.T
    uv_expected = xh[..., :2] / xh[..., 2:]
    a, b, c = 0.013, -0.021, 0.4  # linear texture: bilinear sampling is exact on it
    src = (a * uv[..., 0] + b * uv[..., 1] + c)[None, None]
    w = inverse_warp(src, depth, T[None], K)
    torch.testing.assert_close(w.uv[0], uv_expected, rtol=0, atol=1e-9)
    m = w.valid[0, 0]
    assert 0.5 < m.double().mean() < 1.0  # part of the view moves out of the image
    expected = a * uv_expected[..., 0] + b * uv_expected[..., 1] + c
    torch.testing.assert_close(w.image[0, 0][m], expected[m], rtol=0, atol=1e-10)
    inside = (
        (uv_expected[..., 0] >= 0)
        & (uv_expected[..., 0] <= W - 1)
        & (uv_expected[..., 1] >= 0)
        & (uv_expected[..., 1] <= H - 1)
    )
    assert torch.equal(m, inside)
    # projected depth is the z of the moved point
    X = torch.cat([uv, torch.ones(H, W, 1, dtype=torch.float64)], -1) @ torch.linalg.inv(K).T
    X = X * depth[0, 0, ..., None]
    torch.testing.assert_close(w.projected_depth[0, 0], (X @ R.T + t)[..., 2])


def test_integer_shift_warps_textured_plane_exactly():
    # fronto-parallel plane at 400 mm, camera moved so the image shifts by exactly 3 px
    H, W, f, Z = 10, 14, 100.0, 400.0
    K = _K(f, W, H)
    tx = 3.0 * Z / f
    T = torch.eye(4, dtype=torch.float64)
    T[0, 3] = tx
    uv = pixel_grid(H, W, dtype=torch.float64)
    tex = (torch.sin(0.9 * uv[..., 0]) * torch.cos(0.7 * uv[..., 1]))[None, None]
    w = inverse_warp(tex, torch.full((1, 1, H, W), Z, dtype=torch.float64), T[None], K)
    torch.testing.assert_close(w.image[0, 0, :, : W - 3], tex[0, 0, :, 3:], rtol=0, atol=1e-12)
    assert w.valid[0, 0, :, : W - 3].all() and not w.valid[0, 0, :, W - 3 :].any()


def test_points_behind_source_camera_are_invalid_and_finite():
    H, W = 6, 8
    K = _K(10.0, W, H)
    depth = torch.full((1, 1, H, W), 100.0, dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)[None].clone()
    T[0, 2, 3] = -150.0  # every point ends up at z = -50
    depth.requires_grad_(True)
    w = inverse_warp(torch.rand(1, 1, H, W, dtype=torch.float64), depth, T, K)
    assert not w.valid.any()
    (w.image * w.valid).sum().backward()
    assert torch.isfinite(depth.grad).all()
    assert torch.isfinite(w.uv).all()


def test_warp_gradcheck():
    torch.manual_seed(1)
    H, W = 4, 5
    K = _K(6.0, W, H).requires_grad_(True)
    img = torch.rand(1, 2, H, W, dtype=torch.float64, requires_grad=True)
    depth = (50.0 + 5.0 * torch.rand(1, 1, H, W, dtype=torch.float64)).requires_grad_(True)
    vec = torch.tensor(
        [[0.01, -0.02, 0.015, 0.7, -0.4, 0.3]], dtype=torch.float64, requires_grad=True
    )

    def f(img, depth, vec, K):
        w = inverse_warp(img, depth, pose_vector_to_matrix(vec), K)
        return w.image, w.projected_depth, w.uv

    assert torch.autograd.gradcheck(f, (img, depth, vec, K), eps=1e-6, atol=1e-6)


def test_warp_supports_per_batch_intrinsics_and_look_at_poses():
    H, W = 7, 9  # odd: the principal point is pixel (row 3, col 4)
    K = torch.stack([_K(12.0, W, H), _K(15.0, W, H)])
    a = torch.tensor(look_at(np.array([0.0, 0.0, 500.0]), np.zeros(3)))
    b = torch.tensor(
        look_at(np.array([500.0 * math.sin(0.1), 0.0, 500.0 * math.cos(0.1)]), np.zeros(3))
    )
    src_T_tgt = (b @ invert_pose(a))[None].expand(2, 4, 4)
    w = inverse_warp(
        torch.rand(2, 3, H, W, dtype=torch.float64),
        torch.full((2, 1, H, W), 500.0, dtype=torch.float64),
        src_T_tgt,
        K,
    )
    assert w.image.shape == (2, 3, H, W) and w.valid.dtype == torch.bool
    # the principal point's ray hits the origin; both cameras see it at their centre
    torch.testing.assert_close(
        w.uv[:, 3, 4], torch.tensor([[4.0, 3.0]] * 2, dtype=torch.float64), rtol=0, atol=1e-9
    )
    assert w.valid[:, 0, 3, 4].all()


def test_warp_shape_errors():
    K = _K(10.0, 8, 6)
    with pytest.raises(ValueError, match="tgt_depth"):
        inverse_warp(torch.rand(1, 3, 6, 8), torch.rand(1, 6, 8), torch.eye(4)[None], K)
    with pytest.raises(ValueError, match="src_T_tgt"):
        inverse_warp(torch.rand(1, 3, 6, 8), torch.rand(1, 1, 6, 8), torch.eye(4), K)
    with pytest.raises(ValueError, match="K must be"):
        inverse_warp(
            torch.rand(1, 3, 6, 8), torch.rand(1, 1, 6, 8), torch.eye(4)[None], torch.eye(4)
        )
    with pytest.raises(ValueError, match="uv must be"):
        sample_image(torch.rand(1, 3, 6, 8), torch.rand(2, 5, 2))


def test_float32_warp_matches_float64_at_face_scale():
    # 192 px images, f = 600 px, a head 500 mm away turning by ~6 degrees
    H = W = 192
    K = _K(600.0, W, H)
    g = torch.Generator().manual_seed(0)
    depth = 480.0 + 40.0 * torch.rand(1, 1, H, W, generator=g, dtype=torch.float64)
    T = pose_vector_to_matrix(
        torch.tensor([[0.01, 0.1, -0.02, 30.0, -5.0, 8.0]], dtype=torch.float64)
    )
    img = torch.rand(1, 3, H, W, generator=g, dtype=torch.float64)
    w64 = inverse_warp(img, depth, T, K)
    w32 = inverse_warp(img.float(), depth.float(), T.float(), K.float())
    assert (w32.uv.double() - w64.uv).abs().max() < 5e-4  # px
    both = w64.valid & w32.valid
    assert (w32.image.double() - w64.image).abs().mul(both).max() < 2e-4


def test_views_of_each_image_equal_resampling_repeated_images():
    """affine_resample_views samples V crops of each image in one grid per image, without
    repeating the images: the same values as resampling the repeated batch, view-major."""
    torch.manual_seed(0)
    B, V = 3, 4
    x = torch.rand(B, 3, 96, 80)
    centre = torch.rand(V * B, 2, dtype=torch.float64) * 30 + 30
    side = torch.rand(V * B, dtype=torch.float64) * 40 + 40
    A = crop_affine(centre, side, (32, 48))
    ref = affine_resample(x.repeat(V, 1, 1, 1), A, (32, 48))
    assert torch.equal(affine_resample_views(x, A.reshape(V, B, 3, 3), (32, 48)), ref)
