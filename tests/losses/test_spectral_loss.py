import math

import pytest
import torch

from facesfm.geometry.camera import intrinsics
from facesfm.geometry.warp import pixel_grid
from facesfm.losses.spectral import photometric_error, spectral_loss, view_synthesis_loss
from facesfm.networks.pose import pose_vector_to_matrix


def test_zero_for_identical_images():
    x = torch.rand(2, 3, 10, 12, dtype=torch.float64)
    loss, m = spectral_loss(x, x.clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert m["valid_fraction"].item() == 1.0


def test_value_on_constant_images():
    # constant patches: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.3, 0.5
    x = torch.full((1, 3, 6, 7), a, dtype=torch.float64)
    y = torch.full((1, 3, 6, 7), b, dtype=torch.float64)
    c1 = 0.01**2
    s = (2 * a * b + c1) / (a * a + b * b + c1)
    expected = 0.85 * (1 - s) / 2 + 0.15 * abs(a - b)
    for window in ("box3", "gauss11"):
        loss, m = spectral_loss(x, y, window=window)
        assert loss.item() == pytest.approx(expected, rel=1e-12)
        assert m["l1"].item() == pytest.approx(0.2, rel=1e-12)
        assert m["dssim"].item() == pytest.approx((1 - s) / 2, rel=1e-12)
    err = photometric_error(x, y, alpha=0.5)
    assert err.shape == (1, 1, 6, 7)
    torch.testing.assert_close(err, torch.full_like(err, 0.5 * (1 - s) / 2 + 0.5 * 0.2))


def test_mask_excludes_pixels():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    y = x.clone()
    y[..., 10:, :] = torch.rand(1, 3, 6, 16, dtype=torch.float64)  # differs in the bottom rows
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., :8, :] = True  # more than the 3x3 SSIM window away from the changed rows
    loss, m = spectral_loss(x, y, mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert m["valid_fraction"].item() == pytest.approx(0.5)
    assert spectral_loss(x, y)[0].item() > 0.05
    # an empty mask gives a zero loss, not a NaN
    empty, _ = spectral_loss(x, y, torch.zeros_like(mask))
    assert empty.item() == 0.0


def test_spectral_gradcheck():
    torch.manual_seed(1)
    x = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: spectral_loss(a, b, mask)[0], (x, y))


def _textured_plane(H=16, W=20, f=50.0, Z=400.0):
    uv = pixel_grid(H, W, dtype=torch.float64)
    tex = 0.5 + 0.4 * torch.sin(0.8 * uv[..., 0] + 0.3 * uv[..., 1]) * torch.cos(0.6 * uv[..., 1])
    return tex[None, None].expand(1, 3, H, W).contiguous(), torch.tensor(intrinsics(f, W, H)), Z


def test_view_synthesis_zero_at_true_pose_positive_elsewhere():
    tgt, K, Z = _textured_plane()
    H, W = tgt.shape[-2:]
    # the source camera sits 2 px * Z / f to the right: the source image is the target shifted
    shift = 2
    src = torch.zeros_like(tgt)
    src[..., : W - shift] = tgt[..., shift:]
    depth = torch.full((1, 1, H, W), Z, dtype=torch.float64)
    true = torch.eye(4, dtype=torch.float64)[None].clone()
    true[0, 0, 3] = -shift * Z / K[0, 0]
    tgt_mask = torch.ones(1, 1, H, W, dtype=torch.bool)
    src_mask = torch.zeros(1, 1, H, W, dtype=torch.bool)
    src_mask[..., : W - shift - 4] = True  # "face" ends 4 px before the image content does
    loss, m = view_synthesis_loss(tgt, src, depth, true, K, tgt_mask, src_mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    # valid target columns: shift .. W - 5 (source face ends 4 px early), eroded by the
    # 3x3 SSIM window on both sides
    assert m["valid_fraction"].item() == pytest.approx((W - shift - 4 - 2) / W)
    wrong = pose_vector_to_matrix(torch.tensor([[0, 0.01, 0, 0, 0, 0]], dtype=torch.float64)) @ true
    assert view_synthesis_loss(tgt, src, depth, wrong, K, tgt_mask, src_mask)[0].item() > 0.02
    # gradients reach the depth and the pose
    depth.requires_grad_(True)
    vec = torch.tensor([[0.0, 0.002, 0.0, 0.3, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss, _ = view_synthesis_loss(
        tgt, src, depth, pose_vector_to_matrix(vec) @ true, K, tgt_mask, src_mask
    )
    loss.backward()
    assert depth.grad.abs().sum() > 0 and vec.grad.abs().sum() > 0


def test_spectral_shape_errors():
    with pytest.raises(ValueError, match="equal"):
        spectral_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        spectral_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.ones(1, 3, 8, 8))


def test_erode_mask():
    from facesfm.losses.spectral import erode_mask

    m = torch.zeros(1, 1, 7, 9)
    m[..., 1:6, 2:9] = 1.0  # touches the right image border
    e = erode_mask(m, 1)
    expected = torch.zeros_like(m)
    expected[..., 2:5, 3:9] = 1.0  # the image border is not eroded
    assert torch.equal(e, expected)
    assert torch.equal(erode_mask(m, 0), m)


def _plane_pair(H=36, W=48, f=45.0, Z=400.0):
    """Target and source views of a textured fronto-parallel plane (texture fixed on the
    plane, in mm), rendered analytically, and the true src_T_tgt."""
    K = torch.tensor(intrinsics(f, W, H))
    true = torch.tensor([0.0, 0.03, 0.01, 12.0, -4.0, 6.0], dtype=torch.float64)
    T = pose_vector_to_matrix(true)
    R, t = T[:3, :3], T[:3, 3]

    def tex(X):
        return (
            0.5
            + 0.2 * torch.sin(X[..., 0] / 25) * torch.cos(X[..., 1] / 30)
            + 0.15 * torch.sin((X[..., 0] + 2 * X[..., 1]) / 40)
        )

    uv = pixel_grid(H, W, dtype=torch.float64)
    rays = torch.cat([uv, torch.ones(H, W, 1, dtype=torch.float64)], -1) @ torch.linalg.inv(K).T
    tgt = tex(rays * Z)
    n_s = R[:, 2]  # the plane z_tgt = Z seen from the source: n_s . X_s = Z + n_s . t
    X_s = rays * ((Z + n_s @ t) / (rays @ n_s))[..., None]
    src = tex((X_s - t) @ R)  # back in target coordinates: R^T (X_s - t)
    depth = torch.full((1, 1, H, W), Z, dtype=torch.float64)
    return tgt[None, None], src[None, None], depth, K, true


def test_view_synthesis_recovers_pose_by_optimisation():
    tgt, src, depth, K, true = _plane_pair()
    at_true, _ = view_synthesis_loss(tgt, src, depth, pose_vector_to_matrix(true)[None], K)
    assert at_true.item() < 1e-3  # only bilinear interpolation error remains
    scale = torch.tensor([1.0, 1, 1, 100, 100, 100], dtype=torch.float64)  # mm as 1/100
    x = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([x], max_iter=60, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss, _ = view_synthesis_loss(tgt, src, depth, pose_vector_to_matrix(x * scale), K)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    est = (x * scale).detach()[0]
    # a plane leaves rotation about y and translation along x nearly interchangeable;
    # the optimum is still within 0.1 degree and 0.5 mm of the truth (measured: 0.04, 0.34)
    assert (est[:3] - true[:3]).abs().max() < math.radians(0.1)
    assert (est[3:] - true[3:]).abs().max() < 0.5
    assert closure().item() <= at_true.item() + 1e-6
