import numpy as np
import pytest
import torch

from facesfm.geometry.ssim import ssim


@pytest.mark.parametrize("window", ["box3", "gauss11"])
def test_ssim_of_image_with_itself_is_one(window):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64)
    s = ssim(x, x, window=window)
    assert s.shape == x.shape
    torch.testing.assert_close(s, torch.ones_like(s), rtol=0, atol=1e-12)


@pytest.mark.parametrize("window", ["box3", "gauss11"])
def test_ssim_decreases_with_noise(window):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 32, 32, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 1, 32, 32, generator=g, dtype=torch.float64)
    means = [ssim(x, (x + s * noise), window=window).mean().item() for s in (0.0, 0.02, 0.1, 0.3)]
    assert means[0] == pytest.approx(1.0, abs=1e-12)
    assert means[0] > means[1] > means[2] > means[3]
    # independent noise: SSIM ~ 2 var(x) / (2 var(x) + var(n)) (means equal, C1, C2 small)
    pred = 2 * x.var().item() / (2 * x.var().item() + 0.3**2)
    assert means[3] == pytest.approx(pred, abs=0.05)


def test_box3_matches_direct_formula_at_interior_pixel():
    rng = np.random.default_rng(2)
    x = rng.random((7, 9))
    y = rng.random((7, 9))
    s = ssim(torch.tensor(x)[None, None], torch.tensor(y)[None, None], window="box3")[0, 0]
    r, c = 3, 5
    px, py = x[r - 1 : r + 2, c - 1 : c + 2], y[r - 1 : r + 2, c - 1 : c + 2]
    mx, my = px.mean(), py.mean()
    vx, vy = px.var(), py.var()  # population variance, as a box filter gives
    cxy = ((px - mx) * (py - my)).mean()
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert s[r, c].item() == pytest.approx(expected, abs=1e-12)
    # reflection padding at the corner: the window mirrors row/col 1
    px = x[[1, 0, 1]][:, [1, 0, 1]]
    py = y[[1, 0, 1]][:, [1, 0, 1]]
    mx, my = px.mean(), py.mean()
    cxy = ((px - mx) * (py - my)).mean()
    expected = (
        (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (px.var() + py.var() + c2))
    )
    assert s[0, 0].item() == pytest.approx(expected, abs=1e-12)


def test_ssim_is_symmetric_and_bounded():
    torch.manual_seed(3)
    x, y = torch.rand(2, 2, 1, 16, 16, dtype=torch.float64)
    s = ssim(x, y)
    torch.testing.assert_close(s, ssim(y, x))
    assert (s <= 1 + 1e-12).all() and (s >= -1 - 1e-12).all()


@pytest.mark.parametrize("window", ["box3", "gauss11"])
def test_ssim_gradcheck(window):
    torch.manual_seed(4)
    h, w = (4, 5) if window == "box3" else (6, 7)  # smallest sizes the reflect padding allows
    x = torch.rand(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ssim(a, b, window=window), (x, y))


def test_ssim_errors():
    with pytest.raises(ValueError, match="equal"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="window"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), window="box5")
    with pytest.raises(ValueError, match="too small"):
        ssim(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), window="gauss11")


def test_ssim_keeps_dtype():
    x = torch.rand(1, 3, 8, 8)
    assert ssim(x, x).dtype == torch.float32
