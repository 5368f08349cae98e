import math

import pytest
import torch

from facesfm.errors import InputError
from facesfm.networks import (
    DepthNet,
    DepthNetConfig,
    LandmarkNet,
    LandmarkNetConfig,
    LandmarkOutput,
    PoseNet,
    PoseNetConfig,
    axis_angle_to_matrix,
    ba_weights,
    count_parameters,
    pose_vector_to_matrix,
)
from facesfm.networks.landmark import soft_argmax_2d

# shipped weights of all networks together must stay <= 20 MB (float32)
BUDGET_PARAMS = 20 * 1024 * 1024 // 4


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {
        "paper68": LandmarkNet(LandmarkNetConfig()),
        "paper800": LandmarkNet(LandmarkNetConfig(num_landmarks=800)),
        "heat800": LandmarkNet(LandmarkNetConfig(variant="heatmap", num_landmarks=800)),
        "depth": DepthNet(),
        "pose": PoseNet(),
    }


def test_parameter_budget(nets):
    counts = {k: count_parameters(v) for k, v in nets.items()}
    print("parameter counts:", counts)
    worst = max(counts["paper800"], counts["heat800"]) + counts["depth"] + counts["pose"]
    assert worst <= BUDGET_PARAMS
    assert 1.0e6 < counts["paper68"] < 2.0e6 and counts["paper800"] < 2.5e6
    assert counts["heat800"] < 1.5e6 and counts["depth"] < 2.0e6 and counts["pose"] < 1.0e6


@pytest.mark.parametrize(
    "key,size", [("paper68", 128), ("paper800", 192), ("heat800", 128), ("heat800", 96)]
)
def test_landmark_output_shapes(nets, key, size):
    net = nets[key]
    N = net.cfg.num_landmarks
    with torch.no_grad():
        out = net(torch.rand(2, 1, size, size + 32))
    assert isinstance(out, LandmarkOutput)
    assert out.uv.shape == (2, N, 2) and out.visibility_logits.shape == (2, N)
    if net.cfg.variant == "paper":
        assert out.log_sigma is None
        # initialised to predict the image centre
        centre = torch.tensor([(size + 32 - 1) / 2, (size - 1) / 2])
        assert (out.uv - centre).abs().max() < 0.05 * size
    else:
        assert out.log_sigma.shape == (2, N) and torch.isfinite(out.log_sigma).all()
        # near-uniform heatmaps at init: the spread of a uniform grid of stride-4 cells
        h, w = size // 4, (size + 32) // 4
        var = 0.5 * 16 * ((w * w - 1) + (h * h - 1)) / 12 + 0.25
        torch.testing.assert_close(
            out.log_sigma, torch.full_like(out.log_sigma, 0.5 * math.log(var)), rtol=0, atol=0.01
        )
    assert (out.uv[..., 0] >= 0).all() and (out.uv[..., 0] <= size + 31).all()


def test_landmark_rgb_input_is_converted_to_gray(nets):
    net = nets["paper68"]
    rgb = torch.rand(1, 3, 64, 64)
    gray = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
    with torch.no_grad():
        torch.testing.assert_close(net(rgb).uv, net(gray).uv)


def test_paper_variant_structure(nets):
    net = nets["paper800"]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    fcs = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 4 and len(pools) == 4 and len(fcs) == 3
    assert convs[0].in_channels == 1 and fcs[-1].out_features == 3 * 800


def test_soft_argmax_on_peaked_heatmaps():
    logits = torch.full((1, 2, 6, 8), -50.0, dtype=torch.float64)
    logits[0, 0, 2, 5] = 50.0  # a single hot cell
    logits[0, 1, 1, 3] = 50.0  # two equally hot cells: the mean
    logits[0, 1, 1, 4] = 50.0
    uv, log_sigma = soft_argmax_2d(logits, stride=4)
    torch.testing.assert_close(uv[0, 0], torch.tensor([20.0, 8.0], dtype=torch.float64))
    torch.testing.assert_close(uv[0, 1], torch.tensor([14.0, 4.0], dtype=torch.float64))
    # one cell: only the floor min_sigma^2; two cells 4 px apart: + var_u / 2 = 4 / 2
    assert log_sigma[0, 0].item() == pytest.approx(math.log(0.5), abs=1e-12)
    assert log_sigma[0, 1].item() == pytest.approx(0.5 * math.log(0.5 * 4.0 + 0.25), abs=1e-12)
    uv2, _ = soft_argmax_2d(logits, stride=4, offset=1.5)
    torch.testing.assert_close(uv2, uv + 1.5)


def test_ba_weights():
    out = LandmarkOutput(
        uv=torch.zeros(1, 3, 2),
        visibility_logits=torch.tensor([[0.0, 100.0, -100.0]]),
        log_sigma=torch.tensor([[math.log(2.0), 0.0, 0.0]]),
    )
    w = ba_weights(out)
    torch.testing.assert_close(w, torch.tensor([[0.5 / 4.0, 1.0, 0.0]]))
    out.log_sigma = None
    torch.testing.assert_close(ba_weights(out), torch.tensor([[0.5, 1.0, 0.0]]))


def test_depth_outputs_in_bounds(nets):
    net = nets["depth"]
    cfg = net.cfg
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        outs = net(x)
    assert [o.shape for o in outs] == [(2, 1, 64 // 2**s, 96 // 2**s) for s in range(4)]
    mid = 0.5 * (cfg.min_depth_mm + cfg.max_depth_mm)
    for o in outs:  # near the middle of the range at init
        assert (o - mid).abs().max() < 0.05 * (cfg.max_depth_mm - cfg.min_depth_mm)
    # even driven hard, the output stays inside [dmin, dmax]
    small = DepthNet(DepthNetConfig(num_scales=2, min_depth_mm=300.0, max_depth_mm=700.0))
    with torch.no_grad():
        small.heads[0].bias.fill_(1e4)
        small.heads[1].bias.fill_(-1e4)
        o0, o1 = small(1000 * x)
    assert o0.min() >= 300.0 and o0.max() <= 700.0 and o0.max() > 699.0
    assert o1.min() >= 300.0 and o1.min() < 301.0


def test_pose_small_at_init_and_matrix_consistent(nets):
    net = nets["pose"]
    tgt, src = torch.rand(2, 2, 3, 64, 64)
    with torch.no_grad():
        out = net(tgt, src)
    assert out.vector.shape == (2, 6) and out.src_T_tgt.shape == (2, 4, 4)
    # GroupNorm keeps the pooled features O(1), so the start is within a degree (training
    # motions are 8-14 degrees); the plain encoder starts within half a degree
    assert out.vector[:, :3].norm(dim=-1).max() < math.radians(1.0)
    assert out.vector[:, 3:].norm(dim=-1).max() < 2.0  # mm
    torch.manual_seed(0)
    plain = PoseNet(PoseNetConfig(use_norm=False, difference_input=False))
    with torch.no_grad():
        v = plain(tgt, src).vector
    assert v[:, :3].norm(dim=-1).max() < math.radians(0.5) and v[:, 3:].norm(dim=-1).max() < 2.0
    torch.testing.assert_close(out.src_T_tgt, pose_vector_to_matrix(out.vector))
    R = out.src_T_tgt[:, :3, :3]
    torch.testing.assert_close(
        R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), rtol=0, atol=1e-6
    )


def test_pose_pivot_rotates_about_head_centre():
    net = PoseNet(PoseNetConfig(pivot_depth_mm=500.0))
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0, 0.0]))  # 0.2 rad about y
        out = net(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    c = torch.tensor([0.0, 0.0, 500.0, 1.0])
    torch.testing.assert_close(out.src_T_tgt[0] @ c, c, rtol=0, atol=1e-4)  # the pivot stays put
    assert out.vector[0, 1].item() == pytest.approx(0.2, abs=1e-6)


def test_axis_angle_to_matrix():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(v)
    torch.testing.assert_close(
        R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3)
    )
    # rotates its own axis to itself, and by |v| around it
    torch.testing.assert_close((R @ v[..., None])[..., 0], v)
    angle = torch.arccos(((R.diagonal(dim1=-2, dim2=-1).sum(-1)) - 1) / 2)
    torch.testing.assert_close(angle, v.norm(dim=-1))
    Rz = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    torch.testing.assert_close(
        Rz @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
        torch.tensor([0.0, 1, 0], dtype=torch.float64),
    )
    # gradient is finite and correct at and near zero
    for v0 in (torch.zeros(1, 3), 1e-5 * torch.ones(1, 3), torch.tensor([[0.3, -0.2, 0.5]])):
        v0 = v0.double().requires_grad_(True)
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (v0,))


@pytest.mark.parametrize("which", ["landmark", "heat", "depth", "pose"])
def test_stride_errors_name_the_size(nets, which):
    with pytest.raises(InputError, match=r"100x96.*multiple"):
        if which == "landmark":
            nets["paper68"](torch.rand(1, 1, 100, 96))
        elif which == "heat":
            nets["heat800"](torch.rand(1, 1, 100, 96))
        elif which == "depth":
            nets["depth"](torch.rand(1, 3, 100, 96))
        else:
            nets["pose"](torch.rand(1, 3, 100, 96), torch.rand(1, 3, 100, 96))
    with pytest.raises(ValueError, match="expected a"):
        nets["depth"](torch.rand(1, 1, 64, 64))


def test_float64_and_gradients_flow(nets):
    for key in ("heat800", "depth", "pose"):
        net = {
            "heat800": LandmarkNet(LandmarkNetConfig(variant="heatmap", num_landmarks=68)),
            "depth": DepthNet(),
            "pose": PoseNet(),
        }[key].double()
        x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
        if key == "heat800":
            out = net(x[:, :1])
            loss = out.uv.sum() + out.visibility_logits.sum() + out.log_sigma.sum()
            assert out.uv.dtype == torch.float64
        elif key == "depth":
            outs = net(x)
            assert outs[0].dtype == torch.float64
            loss = sum(o.mean() for o in outs)
        else:
            out = net(x, x.flip(-1))
            assert out.src_T_tgt.dtype == torch.float64
            loss = out.vector.sum()
        loss.backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), key
        assert sum(float(g.abs().sum() > 0) for g in grads) >= 0.9 * len(grads), key


def test_kaiming_initialisation(nets):
    conv = nets["depth"].enc[3][0].conv1  # a 3x3 conv with GroupNorm after it
    fan_out = conv.out_channels * 9
    std = conv.weight.std().item()
    assert std == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1)


def test_configs_round_trip_and_reject_bad_values():
    from facesfm.config import from_dict, to_dict
    from facesfm.errors import InputError as CfgError

    for cls, data in [
        (
            LandmarkNetConfig,
            {"variant": "heatmap", "num_landmarks": 200, "channels": [8, 16, 24, 32]},
        ),
        (DepthNetConfig, {"min_depth_mm": 300.0, "max_depth_mm": 800.0, "num_scales": 3}),
        (PoseNetConfig, {"pivot_depth_mm": 500.0, "channels": [8, 16, 32, 64, 96]}),
    ]:
        cfg = from_dict(cls, data)
        assert from_dict(cls, to_dict(cfg)) == cfg
    assert from_dict(LandmarkNetConfig, {"channels": [8, 16, 24, 32]}).channels == (8, 16, 24, 32)
    with pytest.raises(CfgError, match="unknown"):
        from_dict(DepthNetConfig, {"dmin": 1.0})
    with pytest.raises(ValueError, match="num_landmarks"):
        LandmarkNetConfig(num_landmarks=801)
    with pytest.raises(ValueError, match="variant"):
        LandmarkNetConfig(variant="resnet")
    with pytest.raises(ValueError, match="min_depth_mm"):
        DepthNetConfig(min_depth_mm=900.0, max_depth_mm=800.0)


def test_no_hard_coded_device():
    """Everything runs on the meta device: no tensor is created on a fixed device inside."""
    from facesfm.geometry.warp import inverse_warp
    from facesfm.losses import (
        depth_consistency_loss,
        landmark_ba_loss,
        smoothness_loss,
        spectral_loss,
    )

    dev = torch.device("meta")
    K = torch.eye(3, device=dev)
    T = torch.eye(4, device=dev)
    img = torch.rand(2, 3, 32, 32, device=dev)
    d = torch.rand(2, 1, 32, 32, device=dev)
    outs = [
        inverse_warp(img, d, T.expand(2, 4, 4), K).image,
        landmark_ba_loss(
            K,
            T.expand(3, 4, 4),
            torch.rand(3, 5, 2, device=dev),
            torch.rand(3, 5, device=dev),
            torch.rand(3, 5, device=dev),
        )[0],
        smoothness_loss(d, img)[0],
        spectral_loss(img, img)[0],
        depth_consistency_loss(d, d, T.expand(2, 4, 4), K)[0],
        LandmarkNet(LandmarkNetConfig(variant="heatmap")).to(dev)(img).uv,
        LandmarkNet().to(dev)(img).uv,
        DepthNet().to(dev)(img)[0],
        PoseNet().to(dev)(img, img).src_T_tgt,
    ]
    assert all(o.device == dev for o in outs)


class _BlobFinder(torch.nn.Module):
    """Stand-in detector: landmark 0 = intensity centroid of the left half of its input,
    landmark 1 = of the right half; visible; log_sigma 0 (1 px)."""

    def forward(self, x):
        g = x.mean(1)
        B, H, W = g.shape
        vv, uu = torch.meshgrid(torch.arange(H, dtype=x.dtype), torch.arange(W, dtype=x.dtype),
                                indexing="ij")
        uv = []
        for half in (uu < W / 2, uu >= W / 2):
            w = g * half
            s = w.sum((1, 2))
            uv.append(torch.stack([(w * uu).sum((1, 2)) / s, (w * vv).sum((1, 2)) / s], -1))
        from facesfm.networks import LandmarkOutput

        return LandmarkOutput(uv=torch.stack(uv, 1), visibility_logits=torch.full((B, 2), 5.0).to(x),
                              log_sigma=torch.zeros(B, 2).to(x))


def _two_blob_frames():
    """Two 192x192 frames, each with two Gaussian blobs (sigma 3 px) at known positions:
    (truth (2, 2, 2) uv, images (2, 3, 192, 192))."""
    H = W = 192
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                            torch.arange(W, dtype=torch.float64), indexing="ij")
    truth = torch.tensor([[[70.3, 101.7], [121.6, 88.2]], [[60.0, 60.0], [140.5, 130.25]]],
                         dtype=torch.float64)
    img = torch.zeros(2, 3, H, W, dtype=torch.float64)
    for b in range(2):
        for u, v in truth[b]:
            img[b] += torch.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * 3.0**2))
    return truth, img


def test_detect_landmarks_maps_both_passes_back_to_frame_pixels():
    from facesfm.networks import detect_landmarks

    truth, img = _two_blob_frames()
    net = _BlobFinder()
    one = detect_landmarks(net, img, (64, 64))
    two = detect_landmarks(net, img, (64, 64), crop_margin=1.5)
    # the blobs are symmetric, so each pass finds them up to resampling blur; the crop pass
    # sees them 3x larger in relative terms and must map back just as exactly
    assert (one.uv - truth).abs().max() < 0.3
    assert (two.uv - truth).abs().max() < 0.3
    # spreads in frame pixels: 1 network px is W/64 frame px in pass one and side/64 in two
    torch.testing.assert_close(one.log_sigma, torch.full((2, 2), math.log(3.0),
                                                         dtype=torch.float64))
    side = 1.5 * (truth.amax(1) - truth.amin(1)).amax(1)
    torch.testing.assert_close(two.log_sigma[:, 0], torch.log(side / 64), atol=0.02, rtol=0)


def test_detect_landmarks_fuses_shifted_and_zoomed_crop_views():
    from facesfm.networks import detect_landmarks
    from facesfm.networks.landmark import CROP_VIEWS

    truth, img = _two_blob_frames()
    net = _BlobFinder()
    V = len(CROP_VIEWS)
    many = detect_landmarks(net, img, (64, 64), crop_margin=1.5, crop_views=V)
    # every view is mapped back to frame pixels before fusing: the fused position is exact
    assert (many.uv - truth).abs().max() < 0.3
    # the fused spread is the mean of the views' log spreads (1 network px = side_v / 64)
    side = 1.5 * (truth.amax(1) - truth.amin(1)).amax(1)
    zoom = torch.tensor([z for z, _, _ in CROP_VIEWS], dtype=torch.float64)
    want = torch.log(side[:, None] * zoom[None] / 64).mean(1)
    torch.testing.assert_close(many.log_sigma[:, 0], want, atol=0.02, rtol=0)
    # one view is the single crop pass
    one = detect_landmarks(net, img, (64, 64), crop_margin=1.5, crop_views=1)
    two = detect_landmarks(net, img, (64, 64), crop_margin=1.5)
    torch.testing.assert_close(one.uv, two.uv)
    with pytest.raises(ValueError, match="crop_views"):
        detect_landmarks(net, img, (64, 64), crop_margin=1.5, crop_views=V + 1)


class _ZoomBiasedFinder(_BlobFinder):
    """Blob finder that is exact while the two blobs are < 15 network px apart (the whole
    frame), and otherwise (the crops) off by +6 network px in u, claiming a spread of 0.01 px
    where they are > 22.5 px apart (the views zoomed in) and 10 px elsewhere."""

    def forward(self, x):
        out = super().forward(x)
        d = (out.uv[:, 1, 0] - out.uv[:, 0, 0])[:, None].expand_as(out.log_sigma)
        out.uv = out.uv + torch.stack([torch.where(d < 15, 0.0, 6.0), 0 * d], -1)
        out.log_sigma = torch.where(d > 22.5, math.log(0.01), math.log(10.0)).to(x)
        return out


def test_crop_views_are_weighted_by_their_inverse_variance():
    from facesfm.networks import detect_landmarks
    from facesfm.networks.landmark import CROP_VIEWS

    H = W = 192
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                            torch.arange(W, dtype=torch.float64), indexing="ij")
    img = torch.exp(-((uu - 80.0) ** 2 + (vv - 96.0) ** 2) / 18.0)
    img = img + torch.exp(-((uu - 112.0) ** 2 + (vv - 96.0) ** 2) / 18.0)
    img = img[None, None].expand(1, 3, H, W).contiguous()
    V = 7
    zoom = [z for z, _, _ in CROP_VIEWS[:V]]
    assert sorted(zoom) == [0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1]
    out = detect_landmarks(_ZoomBiasedFinder(), img, (64, 64), crop_margin=3.0, crop_views=V)
    # crops of side 3 x 32 = 96 frame px; in the 0.9 view the blobs are 23.7 network px apart
    # (confident), in the others 21.3 or 19.4 (unsure). The bias of 6 network px is
    # 6 x 96 x zoom / 64 frame px: the confident view alone gives 8.1, a plain mean of the
    # seven views would give 9.0
    err = out.uv[0, :, 0] - torch.tensor([80.0, 112.0], dtype=torch.float64)
    torch.testing.assert_close(err, torch.full((2,), 8.1, dtype=torch.float64), atol=0.1,
                               rtol=0)


def test_local_visibility_reads_features_under_each_heatmap():
    cfg = LandmarkNetConfig(variant="heatmap", num_landmarks=5, channels=(8, 8, 16, 16),
                            head_channels=8, local_visibility=True)
    torch.manual_seed(0)
    net = LandmarkNet(cfg)
    x = torch.rand(2, 1, 64, 64)
    out = net(x)
    assert out.visibility_logits.shape == (2, 5)
    # the local term reaches the logits: its weights get gradients, and changing them
    # changes the visibility without moving the landmarks
    out.visibility_logits.sum().backward()
    assert net.vis_local.weight.grad.abs().sum() > 0
    with torch.no_grad():
        net.vis_local.bias += 1.0
        again = net(x)
    torch.testing.assert_close(again.visibility_logits, out.visibility_logits.detach() + 1.0)
    torch.testing.assert_close(again.uv, out.uv.detach())
    assert LandmarkNet(LandmarkNetConfig(variant="heatmap")).vis_local is None
