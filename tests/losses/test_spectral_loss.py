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
    # column `shift` lands on the source's first column; its SSIM window reads the zero padding
    # beyond it, so keep it out (SSIM is a 3x3 statistic, masks are per pixel)
    tgt_mask[..., : shift + 1] = False
    src_mask = torch.zeros(1, 1, H, W, dtype=torch.bool)
    src_mask[..., : W - shift - 4] = True  # "face" ends 4 px before the image content does
    loss, m = view_synthesis_loss(tgt, src, depth, true, K, tgt_mask, src_mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert m["valid_fraction"].item() == pytest.approx((W - shift - 5) / W)
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
