import math

import pytest
import torch

from facesfm.losses.smoothness import smoothness_loss


def test_constant_depth_is_smooth():
    d = torch.full((2, 1, 8, 9), 500.0, dtype=torch.float64)
    loss, m = smoothness_loss(d, torch.rand(2, 3, 8, 9, dtype=torch.float64))
    assert loss.item() == 0.0 and m["grad_x"].item() == 0.0


def test_linear_disparity_ramp_on_flat_image():
    H, W = 6, 10
    u = torch.arange(W, dtype=torch.float64)
    disp = (1.0 / 600) + 1e-5 * u  # disparity linear in u
    depth = (1.0 / disp).expand(1, 1, H, W)
    loss, m = smoothness_loss(depth, torch.full((1, 3, H, W), 0.5, dtype=torch.float64))
    expected = 1e-5 / disp.mean().item()
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert m["grad_y"].item() == pytest.approx(0.0, abs=1e-15)


def test_edge_aware_weighting_and_scale_invariance():
    H, W = 5, 8
    depth = torch.full((1, 1, H, W), 500.0, dtype=torch.float64)
    depth[..., 4:] = 400.0  # a depth step between columns 3 and 4
    flat = torch.zeros(1, 3, H, W, dtype=torch.float64)
    edge = flat.clone()
    edge[..., 4:] = 1.0  # an image edge at the same place
    disp = 1.0 / depth
    step = (disp[0, 0, 0, 4] - disp[0, 0, 0, 3]).item() / disp.mean().item()
    l_flat, _ = smoothness_loss(depth, flat)
    l_edge, _ = smoothness_loss(depth, edge)
    assert l_flat.item() == pytest.approx(step * H / (H * (W - 1)), rel=1e-12)
    assert l_edge.item() == pytest.approx(l_flat.item() * math.exp(-1.0), rel=1e-12)
    assert smoothness_loss(7.0 * depth, edge)[0].item() == pytest.approx(l_edge.item(), rel=1e-12)


def test_mask_restricts_to_face():
    H, W = 6, 8
    depth = torch.full((1, 1, H, W), 500.0, dtype=torch.float64)
    depth[..., :, 6:] = 2000.0  # background far away
    mask = torch.ones(1, 1, H, W, dtype=torch.bool)
    mask[..., :, 6:] = False
    img = torch.rand(1, 3, H, W, dtype=torch.float64)
    assert smoothness_loss(depth, img, mask)[0].item() == 0.0
    assert smoothness_loss(depth, img)[0].item() > 0.0


def test_smoothness_gradcheck():
    g = torch.Generator().manual_seed(0)
    d = (400 + 100 * torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    img = torch.rand(1, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 1, 4, 5, dtype=torch.bool)
    mask[0, 0, 0, 0] = False
    assert torch.autograd.gradcheck(lambda d, i: smoothness_loss(d, i, mask)[0], (d, img))


def test_smoothness_shape_errors():
    with pytest.raises(ValueError, match="depth"):
        smoothness_loss(torch.ones(1, 2, 4, 4), torch.ones(1, 3, 4, 4))
    with pytest.raises(ValueError, match="image"):
        smoothness_loss(torch.ones(1, 1, 4, 4), torch.ones(1, 3, 4, 5))
