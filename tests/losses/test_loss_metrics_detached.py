"""Every loss returns (scalar loss with a graph, metrics without one)."""

import torch

from facesfm.losses import (
    depth_consistency_loss,
    landmark_ba_loss,
    landmark_detection_loss,
    smoothness_loss,
    spectral_loss,
    view_synthesis_loss,
)
from facesfm.networks.landmark import LandmarkOutput


def test_metrics_are_detached_scalars():
    torch.manual_seed(0)
    K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 2.0
    img = torch.rand(1, 3, 12, 16, requires_grad=True)
    d = (400 + 10 * torch.rand(1, 1, 12, 16)).requires_grad_(True)
    uv = (10 * torch.rand(3, 5, 2)).requires_grad_(True)
    calls = [
        spectral_loss(img, torch.rand(1, 3, 12, 16)),
        view_synthesis_loss(img, torch.rand(1, 3, 12, 16), d, T, K),
        depth_consistency_loss(d, d.detach() * 1.01, T, K),
        smoothness_loss(d, img),
        landmark_ba_loss(
            K, torch.eye(4).expand(3, 4, 4), uv, torch.ones(3, 5), 400 + d[0, 0, 0, :5].expand(3, 5)
        ),
        landmark_detection_loss(
            LandmarkOutput(
                uv[:1], torch.zeros(1, 5, requires_grad=True), torch.zeros(1, 5, requires_grad=True)
            ),
            torch.zeros(1, 5, 2),
            torch.ones(1, 5),
            scale=16.0,
        ),
    ]
    for loss, metrics in calls:
        assert loss.dim() == 0 and loss.requires_grad and torch.isfinite(loss)
        assert metrics and all(
            v.dim() == 0 and not v.requires_grad and v.grad_fn is None for v in metrics.values()
        )
