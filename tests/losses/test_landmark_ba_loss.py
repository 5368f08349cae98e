import math

import numpy as np
import pytest
import torch

from facesfm.geometry.camera import intrinsics, look_at, project, transform
from facesfm.losses.landmark_ba import (
    all_pairs,
    landmark_ba_loss,
    landmark_reprojection,
    sample_depth_at,
)
from facesfm.networks.pose import pose_vector_to_matrix


def _scene(F=4, N=30, seed=0):
    """Landmarks on a face-sized blob, F cameras orbiting the head at 500 mm."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 3)) * np.array([40.0, 50.0, 20.0]) + np.array([0.0, 0.0, 60.0])
    angles = np.linspace(-0.5, 0.5, F)
    T = np.stack(
        [
            look_at(np.array([500 * math.sin(a), 20.0, 500 * math.cos(a)]), np.zeros(3))
            for a in angles
        ]
    )
    K = intrinsics(600.0, 192, 192)
    Xc = transform(T, np.broadcast_to(X, (F, N, 3)))
    uv = project(K, Xc)
    t = lambda a: torch.tensor(np.ascontiguousarray(a), dtype=torch.float64)
    return t(K), t(T), t(uv), t(Xc[..., 2])


def _reference(K, T, uv, w, depth, distance):
    """Loop-by-loop numpy version of equation 2 (weights w_a * w_b)."""
    K, T, uv, w, depth = (x.numpy() for x in (K, T, uv, w, depth))
    F, N = w.shape
    num = den = 0.0
    for a in range(F):
        for b in range(F):
            if a == b:
                continue
            bTa = T[b] @ np.linalg.inv(T[a])
            for i in range(N):
                x = np.linalg.inv(K) @ np.array([uv[a, i, 0], uv[a, i, 1], 1.0]) * depth[a, i]
                y = bTa[:3, :3] @ x + bTa[:3, 3]
                p = (K @ y)[:2] / y[2]
                d2 = ((p - uv[b, i]) ** 2).sum()
                rho = math.sqrt(d2 + 1e-6) - 1e-3 if distance == "l2" else d2
                ww = w[a, i] * w[b, i]
                num += ww * rho
                den += ww
    return num / den


def test_all_pairs():
    p = all_pairs(3)
    assert p.tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]


@pytest.mark.parametrize("distance", ["l2", "squared"])
def test_zero_on_exact_data_and_positive_when_pose_perturbed(distance):
    K, T, uv, depth = _scene()
    w = torch.ones(uv.shape[:2], dtype=torch.float64)
    loss, m = landmark_ba_loss(K, T, uv, w, depth, distance=distance)
    assert loss.item() < 1e-9 and m["rmse_px"].item() < 1e-8
    T2 = T.clone()
    T2[2] = (
        pose_vector_to_matrix(
            torch.tensor([0.0, math.radians(1.0), 0.0, 0, 0, 0], dtype=torch.float64)
        )
        @ T[2]
    )
    loss2, m2 = landmark_ba_loss(K, T2, uv, w, depth, distance=distance)
    # 1 degree at f=600 px moves landmarks by ~10 px in the pairs that involve frame 2
    assert m2["rmse_px"].item() > 3.0
    assert loss2.item() > (1.0 if distance == "l2" else 10.0)


@pytest.mark.parametrize("distance", ["l2", "squared"])
def test_matches_loop_reference_with_noise_and_partial_visibility(distance):
    K, T, uv, depth = _scene(F=3, N=12, seed=1)
    g = torch.Generator().manual_seed(0)
    uv = uv + torch.randn(uv.shape, generator=g, dtype=torch.float64)
    depth = depth * (1 + 0.02 * torch.randn(depth.shape, generator=g, dtype=torch.float64))
    w = torch.rand(depth.shape, generator=g, dtype=torch.float64) * (
        torch.rand(depth.shape, generator=g) > 0.3
    )
    loss, m = landmark_ba_loss(K, T, uv, w, depth, distance=distance)
    assert loss.item() == pytest.approx(_reference(K, T, uv, w, depth, distance), rel=1e-10)
    assert not m["rmse_px"].requires_grad


def test_invisible_landmark_does_not_contribute():
    K, T, uv, depth = _scene(F=3, N=5)
    w = torch.ones(3, 5, dtype=torch.float64)
    w[1, 2] = 0.0  # landmark 2 not visible in frame 1: its detection there is garbage
    uv_bad = uv.clone()
    uv_bad[1, 2] += 50.0
    loss, _ = landmark_ba_loss(K, T, uv_bad, w, depth)
    assert loss.item() < 1e-9
    w[1, 2] = 1.0
    assert landmark_ba_loss(K, T, uv_bad, w, depth)[0].item() > 1.0
    # boolean visibility works as weights
    vis = torch.ones(3, 5, dtype=torch.bool)
    vis[1, 2] = False
    assert landmark_ba_loss(K, T, uv_bad, vis, depth)[0].item() < 1e-9


def test_per_frame_intrinsics_batch_and_pairs():
    K, T, uv, depth = _scene(F=3, N=6, seed=2)
    g = torch.Generator().manual_seed(1)
    uv = uv + torch.randn(uv.shape, generator=g, dtype=torch.float64)
    w = torch.rand(3, 6, generator=g, dtype=torch.float64)
    Kf = K.expand(3, 3, 3)
    l1, _ = landmark_ba_loss(K, T, uv, w, depth)
    l2, _ = landmark_ba_loss(Kf, T, uv, w, depth)
    torch.testing.assert_close(l1, l2)
    # a batch of two sequences: the loss is the pooled weighted mean
    lb, _ = landmark_ba_loss(
        K,
        torch.stack([T, T]),
        torch.stack([uv, uv]),
        torch.stack([w, w]),
        torch.stack([depth, depth]),
    )
    torch.testing.assert_close(lb, l1)
    # one pair only
    pairs = torch.tensor([[0, 2]])
    lp, _ = landmark_ba_loss(K, T, uv, w, depth, pairs=pairs)
    uv_ab, z, _ = landmark_reprojection(K, T, uv, depth, pairs)
    ww = w[0] * w[2]
    d = torch.sqrt(((uv_ab[0] - uv[2]) ** 2).sum(-1) + 1e-6) - 1e-3
    torch.testing.assert_close(lp, (ww * d).sum() / ww.sum())
    assert (z > 0).all()


def test_relative_poses_give_same_loss():
    K, T, uv, depth = _scene(F=3, N=8, seed=3)
    w = torch.ones(3, 8, dtype=torch.float64)
    uv = uv + 0.5
    rel = T @ torch.linalg.inv(T[0])  # world = frame 0's camera
    torch.testing.assert_close(
        landmark_ba_loss(K, T, uv, w, depth)[0], landmark_ba_loss(K, rel, uv, w, depth)[0]
    )


def test_points_behind_camera_are_dropped():
    K, T, uv, depth = _scene(F=2, N=4)
    T = T.clone()
    T[1] = T[0]
    T[1, 0, 3] += 2.0  # camera 1: camera 0 moved sideways by 2 mm
    uv = uv.clone()
    uv[1] = uv[0]  # with wrong detections: every pair has a residual
    w = torch.ones(2, 4, dtype=torch.float64)
    depth = depth.clone()
    depth[:, 0] = -5.0  # landmark 0 lifted behind both cameras
    loss, _ = landmark_ba_loss(K, T, uv, w, depth)
    _, z, _ = landmark_reprojection(K, T, uv, depth)
    assert (z[:, 0] < 0).all() and (z[:, 1:] > 0).all()
    w0 = w.clone()
    w0[:, 0] = 0.0
    torch.testing.assert_close(loss, landmark_ba_loss(K, T, uv, w0, depth)[0])
    assert loss.item() > 0.1


def test_landmark_ba_gradcheck():
    K, T, uv, depth = _scene(F=3, N=4, seed=4)
    g = torch.Generator().manual_seed(2)
    uv = (uv + torch.randn(uv.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    depth = depth.clone().requires_grad_(True)
    w = (0.5 + torch.rand(3, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    vec = torch.zeros(3, 6, dtype=torch.float64, requires_grad=True)
    K = K.clone().requires_grad_(True)
    for distance in ("l2", "squared"):

        def f(uv, depth, w, vec, K, distance=distance):
            return landmark_ba_loss(
                K, pose_vector_to_matrix(vec) @ T, uv, w, depth, distance=distance
            )[0]

        assert torch.autograd.gradcheck(f, (uv, depth, w, vec, K), eps=1e-6, atol=1e-6)


def test_sample_depth_at_is_exact_on_linear_maps():
    H, W = 9, 11
    v, u = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    depth = torch.stack([400 + 2 * u + 3 * v, 500 - u + 0.5 * v])  # (2, H, W)
    uv = torch.tensor(
        [[[0.0, 0.0], [3.25, 4.5], [10.0, 8.0]], [[1.5, 2.5], [7.0, 0.75], [5.0, 5.0]]],
        dtype=torch.float64,
    )
    d = sample_depth_at(depth, uv)
    expected = torch.stack(
        [400 + 2 * uv[0, :, 0] + 3 * uv[0, :, 1], 500 - uv[1, :, 0] + 0.5 * uv[1, :, 1]]
    )
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(sample_depth_at(depth[:, None], uv), d)


def test_shape_errors():
    K, T, uv, depth = _scene(F=3, N=5)
    w = torch.ones(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="cam_T_world"):
        landmark_ba_loss(K, T[:2], uv, w, depth)
    with pytest.raises(ValueError, match="depth"):
        landmark_ba_loss(K, T, uv, w, depth[:, :4])
    with pytest.raises(ValueError, match="weights"):
        landmark_ba_loss(K, T, uv, w[:2], depth)
    with pytest.raises(ValueError, match="K must be"):
        landmark_ba_loss(K.expand(2, 3, 3), T, uv, w, depth)
    with pytest.raises(ValueError, match="distance"):
        landmark_ba_loss(K, T, uv, w, depth, distance="l1")


def test_float32_is_accurate_enough_for_training():
    K, T, uv, depth = _scene(F=6, N=68, seed=5)
    g = torch.Generator().manual_seed(3)
    uv = uv + 0.7 * torch.randn(uv.shape, generator=g, dtype=torch.float64)
    w = torch.rand(depth.shape, generator=g, dtype=torch.float64)
    ref, _ = landmark_ba_loss(K, T, uv, w, depth)
    l32, _ = landmark_ba_loss(K.float(), T.float(), uv.float(), w.float(), depth.float())
    assert l32.dtype == torch.float32
    assert l32.item() == pytest.approx(ref.item(), rel=1e-5)
    uv_ab64, _, _ = landmark_reprojection(K, T, uv, depth)
    uv_ab32, _, _ = landmark_reprojection(K.float(), T.float(), uv.float(), depth.float())
    assert (uv_ab32.double() - uv_ab64).abs().max() < 5e-4  # px


def test_bad_pairs_rejected():
    K, T, uv, depth = _scene(F=3, N=5)
    w = torch.ones(3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="outside"):
        landmark_ba_loss(K, T, uv, w, depth, pairs=torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="pairs must be"):
        landmark_ba_loss(K, T, uv, w, depth, pairs=torch.tensor([0, 1]))
    assert all_pairs(1).shape == (0, 2)


def test_gradients_reach_depth_and_pose_networks():
    """Wiring as in training: DepthNet depth sampled at landmarks, PoseNet poses k_T_0."""
    from facesfm.networks import DepthNet, DepthNetConfig, PoseNet, PoseNetConfig

    torch.manual_seed(0)
    depth_net = DepthNet(DepthNetConfig(channels=(4, 8, 8, 8, 8, 8), num_scales=1))
    pose_net = PoseNet(PoseNetConfig(channels=(4, 8, 8, 8, 8)))
    imgs = torch.rand(3, 3, 64, 64)
    K = torch.tensor(intrinsics(200.0, 64, 64), dtype=torch.float32)
    uv = (32 + 8 * torch.randn(3, 10, 2)).clamp(2, 61)
    depth = sample_depth_at(depth_net(imgs)[0], uv)
    cam_T_0 = pose_net(imgs[:1].expand(3, -1, -1, -1), imgs).src_T_tgt  # k_T_0, 0_T_0 ~ I
    loss, _ = landmark_ba_loss(K, cam_T_0, uv, torch.ones(3, 10), depth)
    loss.backward()
    assert depth_net.heads[0].weight.grad.abs().sum() > 0
    assert pose_net.head.weight.grad.abs().sum() > 0
