import pytest
import torch

from facesfm.geometry.camera import intrinsics
from facesfm.geometry.warp import backproject_depth, pixel_grid
from facesfm.losses.depth_consistency import depth_consistency_loss
from facesfm.networks.pose import pose_vector_to_matrix

H, W, FOCAL = 16, 20, 40.0


def _K():
    return torch.tensor(intrinsics(FOCAL, W, H))


def _plane_depth(K, n, d, cam_T_plane=None):
    """Depth map (1, 1, H, W) of the plane n.X = d (given in the camera frame)."""
    uv = pixel_grid(H, W, dtype=torch.float64)
    rays = torch.cat([uv, torch.ones(H, W, 1, dtype=torch.float64)], -1) @ torch.linalg.inv(K).T
    return (d / (rays @ n))[None, None]


def _tilted_scene():
    K = _K()
    n_t = torch.tensor([0.2, -0.1, 1.0], dtype=torch.float64)
    n_t = n_t / n_t.norm()
    d_t = 450.0
    T = pose_vector_to_matrix(
        torch.tensor([0.02, -0.04, 0.01, 6.0, -3.0, 5.0], dtype=torch.float64)
    )
    R, t = T[:3, :3], T[:3, 3]
    # the same plane in the source frame: n_s = R n_t, d_s = d_t + n_s . t
    n_s = R @ n_t
    d_s = d_t + n_s @ t
    return K, _plane_depth(K, n_t, d_t), _plane_depth(K, n_s, d_s), T[None]


def test_zero_for_consistent_fronto_parallel_translation():
    K = _K()
    T = torch.eye(4, dtype=torch.float64)[None].clone()
    T[0, :3, 3] = torch.tensor([3.0, -2.0, 10.0], dtype=torch.float64)
    tgt = torch.full((1, 1, H, W), 400.0, dtype=torch.float64)
    src = torch.full((1, 1, H, W), 410.0, dtype=torch.float64)
    loss, m = depth_consistency_loss(tgt, src, T, K)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    assert m["scale_ratio"].item() == pytest.approx(1.0, abs=1e-12)
    assert 0.5 < m["valid_fraction"].item() < 1.0


def test_tilted_plane_is_nearly_consistent_and_bump_is_not():
    K, tgt, src, T = _tilted_scene()
    loss, m = depth_consistency_loss(tgt, src, T, K)
    # only the bilinear interpolation of a (1/z-linear) plane depth differs
    assert loss.item() < 1e-5
    assert m["scale_ratio"].item() == pytest.approx(1.0, abs=1e-5)
    bumped = src.clone()
    bumped[..., 4:10, 6:12] += 20.0
    assert depth_consistency_loss(tgt, bumped, T, K)[0].item() > 20 * loss.item() + 2e-3


def test_invariant_to_global_depth_scale():
    K, tgt, src, T = _tilted_scene()
    g = torch.Generator().manual_seed(0)
    src = src * (1 + 0.05 * torch.rand(src.shape, generator=g, dtype=torch.float64))
    base, m = depth_consistency_loss(tgt, src, T, K)
    assert base.item() > 1e-3
    # scaling the source depth alone: absorbed by the ratio r
    l1, m1 = depth_consistency_loss(tgt, 2.5 * src, T, K)
    assert l1.item() == pytest.approx(base.item(), rel=1e-12)
    assert m1["scale_ratio"].item() == pytest.approx(m["scale_ratio"].item() / 2.5, rel=1e-12)
    # scaling the whole scene (both depths and the translation)
    Ts = T.clone()
    Ts[:, :3, 3] *= 3.0
    l2, _ = depth_consistency_loss(3.0 * tgt, 3.0 * src, Ts, K)
    assert l2.item() == pytest.approx(base.item(), rel=1e-10)


def test_masks_and_batch():
    K, tgt, src, T = _tilted_scene()
    bumped = src.clone()
    bumped[..., :, :5] += 40.0  # a bad band on the left of the source
    tgt_b = torch.cat([tgt, tgt])
    src_b = torch.cat([src, bumped])
    T_b = T.expand(2, 4, 4)
    full, _ = depth_consistency_loss(tgt_b, src_b, T_b, K)
    src_mask = torch.ones(2, 1, H, W, dtype=torch.bool)
    src_mask[..., :, :7] = False  # hides the band (and bilinear reads next to it)
    masked, _ = depth_consistency_loss(tgt_b, src_b, T_b, K, src_mask=src_mask)
    assert masked.item() < 1e-5 < full.item()
    tgt_mask = torch.zeros(2, 1, H, W, dtype=torch.bool)
    none, m = depth_consistency_loss(tgt_b, src_b, T_b, K, tgt_mask=tgt_mask)
    assert none.item() == 0.0 and m["valid_fraction"].item() == 0.0


def test_depth_consistency_gradcheck():
    K = torch.tensor(intrinsics(6.0, 5, 4))
    g = torch.Generator().manual_seed(1)
    tgt = (50 + 5 * torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    src = (50 + 5 * torch.rand(1, 1, 4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    vec = torch.tensor(
        [[0.01, 0.02, -0.01, 0.4, -0.3, 0.5]], dtype=torch.float64, requires_grad=True
    )

    def f(tgt, src, vec):
        return depth_consistency_loss(tgt, src, pose_vector_to_matrix(vec), K)[0]

    assert torch.autograd.gradcheck(f, (tgt, src, vec), eps=1e-6, atol=1e-7)


def test_backproject_used_consistently():
    # the synthesised depth equals the z of the moved back-projected points
    K, tgt, src, T = _tilted_scene()
    X = backproject_depth(K, tgt).reshape(-1, 3) @ T[0, :3, :3].T + T[0, :3, 3]
    from facesfm.geometry.warp import inverse_warp

    w = inverse_warp(src, tgt, T, K)
    torch.testing.assert_close(w.projected_depth.reshape(-1), X[:, 2])


def test_depth_consistency_shape_errors():
    K = _K()
    with pytest.raises(ValueError, match="depths"):
        depth_consistency_loss(
            torch.ones(1, 1, H, W), torch.ones(1, 1, H, W + 1), torch.eye(4)[None], K
        )
    with pytest.raises(ValueError, match="tgt_mask"):
        depth_consistency_loss(
            torch.ones(1, 1, H, W),
            torch.ones(1, 1, H, W),
            torch.eye(4)[None],
            K,
            tgt_mask=torch.ones(1, H, W),
        )
