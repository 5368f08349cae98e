import math

import pytest
import torch

from facesfm.losses.landmark_detection import landmark_detection_loss
from facesfm.networks.landmark import LandmarkOutput


def _out(uv, logits, log_sigma=None):
    return LandmarkOutput(uv=uv, visibility_logits=logits, log_sigma=log_sigma)


def test_regression_value_and_invisible_ignored():
    gt = torch.tensor([[[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]], dtype=torch.float64)
    pred = gt.clone()
    pred[0, 0] += torch.tensor([3.0, 4.0], dtype=torch.float64)  # 5 px off
    pred[0, 2] += 100.0  # invisible: ignored
    vis = torch.tensor([[True, True, False]])
    logits = torch.tensor([[20.0, 20.0, -20.0]], dtype=torch.float64)
    loss, m = landmark_detection_loss(_out(pred, logits), gt, vis, scale=100.0)
    bce = math.log1p(math.exp(-20.0))  # every logit is right with margin 20
    assert loss.item() == pytest.approx((25.0 / 100.0**2) / 2 + 0.1 * bce, rel=1e-9)
    assert m["px_error"].item() == pytest.approx(2.5)
    assert m["nme"].item() == pytest.approx(0.025)
    assert m["visibility_accuracy"].item() == 1.0
    wrong = torch.tensor([[20.0, -20.0, -20.0]], dtype=torch.float64)
    _, m2 = landmark_detection_loss(_out(pred, wrong), gt, vis, scale=100.0)
    assert m2["visibility_accuracy"].item() == pytest.approx(2 / 3)
    assert m2["visibility"].item() > 6.0


def test_gaussian_nll_is_minimal_at_calibrated_sigma():
    gt = torch.zeros(1, 1, 2, dtype=torch.float64)
    pred = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)  # |r| = 5 px
    vis = torch.ones(1, 1)
    best = math.log(5.0 / math.sqrt(2.0))
    ls = torch.tensor([[best]], dtype=torch.float64, requires_grad=True)
    loss, m = landmark_detection_loss(
        _out(pred, torch.zeros(1, 1, dtype=torch.float64), ls), gt, vis, scale=64.0
    )
    loss.backward()
    assert abs(ls.grad.item()) < 1e-10
    assert m["sigma_px"].item() == pytest.approx(5.0 / math.sqrt(2.0))
    for d in (-0.3, 0.3):
        other = torch.tensor([[best + d]], dtype=torch.float64)
        assert (
            landmark_detection_loss(
                _out(pred, torch.zeros(1, 1, dtype=torch.float64), other), gt, vis, scale=64.0
            )[0]
            > loss
        )


def test_detection_loss_gradcheck():
    g = torch.Generator().manual_seed(0)
    uv = (10 * torch.rand(2, 4, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    logits = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ls = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    gt = 10 * torch.rand(2, 4, 2, generator=g, dtype=torch.float64)
    vis = torch.rand(2, 4, generator=g) > 0.3

    def f(uv, logits, ls):
        return landmark_detection_loss(_out(uv, logits, ls), gt, vis, scale=32.0)[0]

    assert torch.autograd.gradcheck(f, (uv, logits, ls))


def test_detection_loss_shape_errors():
    out = _out(torch.zeros(1, 3, 2), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="uv_gt"):
        landmark_detection_loss(out, torch.zeros(1, 4, 2), torch.ones(1, 3), scale=10.0)
    with pytest.raises(ValueError, match="visible"):
        landmark_detection_loss(out, torch.zeros(1, 3, 2), torch.ones(3), scale=10.0)
