import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from facesfm.geometry.camera import invert_pose
from facesfm.networks import axis_angle_to_matrix
from facesfm.solvers import BackwardMode
from facesfm.solvers.landmark_ba import KernelKind
from facesfm.training.ba_layer import refine_poses
from facesfm.training.config import TRAINING_BA
from facesfm.training.metrics import depth_errors, landmark_errors, relative_rotation_errors
from facesfm.training.sfm import chain_poses, consecutive_pairs


def _rot(axis, deg, dtype=torch.float64):
    v = torch.tensor(axis, dtype=dtype) * math.radians(deg)
    return axis_angle_to_matrix(v)


def test_landmark_errors_visible_only_and_f1():
    gt = torch.zeros(1, 4, 2, dtype=torch.float64)
    uv = gt.clone()
    uv[0, 0] = torch.tensor([3.0, 0.0])
    uv[0, 1] = torch.tensor([0.0, 4.0])
    uv[0, 2] = torch.tensor([3.0, 4.0])
    uv[0, 3] = torch.tensor([1000.0, 0.0])  # not visible: ignored
    vis = torch.tensor([[True, True, True, False]])
    logits = torch.tensor([[1.0, 1.0, -1.0, 1.0]])  # tp 2, fn 1, fp 1
    m = landmark_errors(uv, logits, gt, vis)
    assert m["lm_mean_px"] == pytest.approx(4.0)
    assert m["lm_median_px"] == pytest.approx(4.0)
    assert m["vis_precision"] == pytest.approx(2 / 3)
    assert m["vis_recall"] == pytest.approx(2 / 3)
    assert m["vis_f1"] == pytest.approx(2 / 3)


def test_depth_errors_median_scaled_on_mask():
    g = torch.Generator().manual_seed(0)
    gt = 400 + 100 * torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:6, 2:6] = True
    pred = 2.0 * gt
    pred[~mask] = 1e6  # off the face: must not count
    m = depth_errors(pred, gt, mask)
    assert m["depth_abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["depth_mm"] == pytest.approx(0.0, abs=1e-9)
    assert m["depth_abs_rel_raw"] == pytest.approx(1.0, abs=1e-12)
    pred2 = gt.clone()
    pred2[0, 0, 2, 2] += 10.0  # one pixel 10 mm off (median unchanged)
    m2 = depth_errors(pred2, gt, mask)
    assert m2["depth_mm"] == pytest.approx(10.0 / 16 / 2, rel=1e-6)


def test_relative_rotation_error_ignores_the_world_frame():
    F = 4
    gt = torch.eye(4, dtype=torch.float64).repeat(F, 1, 1)
    for f in range(F):
        gt[f, :3, :3] = _rot([0, 1, 0], 10.0 * f)
        gt[f, :3, 3] = torch.tensor([0, 0, 500.0])
    W = torch.eye(4, dtype=torch.float64)
    W[:3, :3] = _rot([1, 0.3, 0.2], 37.0)
    W[:3, 3] = torch.tensor([5.0, -3.0, 20.0])
    pred = gt @ W  # another world frame
    assert relative_rotation_errors(pred, gt).abs().max() < 1e-9
    pred[2, :3, :3] = _rot([0, 0, 1], 1.0) @ pred[2, :3, :3]
    err = relative_rotation_errors(pred, gt)
    assert err[1] == pytest.approx(1.0, abs=1e-9)
    assert err[0] < 1e-9 and err[2] < 1e-9


def test_chain_poses_reproduces_relative_gt_poses():
    F = 5
    T = torch.eye(4, dtype=torch.float64).repeat(1, F, 1, 1)
    for f in range(F):
        T[0, f, :3, :3] = _rot([0.1, 1, 0], 7.0 * f)
        T[0, f, :3, 3] = torch.tensor([3.0 * f, -1.0, 480.0 + f])
    rel = T[:, 1:] @ invert_pose(T[:, :-1])  # (f+1)_T_f
    chained = chain_poses(rel)
    want = T @ invert_pose(T[:, :1])
    assert torch.allclose(chained, want, atol=1e-10)
    assert consecutive_pairs(3).tolist() == [[0, 1], [1, 2], [1, 0], [2, 1]]


def _gt_problem(tiny_data):
    from facesfm.data.dataset import SequenceDataset

    ds = SequenceDataset(tiny_data, window=None, landmarks=68, dtype=torch.float64)
    s = ds[0]
    T = s.cam_T_world @ invert_pose(s.cam_T_world[:1])  # world = camera 0
    X = s.xyz  # (N, 3) world
    Xc = (s.cam_T_world[:, None, :3, :3] @ X[None, :, :, None])[..., 0] + s.cam_T_world[
        :, None, :3, 3
    ]
    return s, T, Xc[..., 2]


def test_ba_layer_recovers_gt_poses_from_perturbed_init(tiny_data):
    s, T, z = _gt_problem(tiny_data)
    F = T.shape[0]
    rng = np.random.default_rng(0)
    init = T.clone()
    for f in range(1, F):
        P = torch.eye(4, dtype=torch.float64)
        P[:3, :3] = _rot(rng.normal(size=3).tolist(), 2.0)
        P[:3, 3] = torch.tensor(rng.normal(scale=5.0, size=3))
        init[f] = P @ T[f]
    assert relative_rotation_errors(init, T).max() > 1.0
    w = s.visible.to(torch.float64)
    ba = replace(TRAINING_BA, max_iterations=30, kernel=KernelKind.NONE,
                 backward=BackwardMode.NONE)
    poses, m = refine_poses(s.K[None], s.uv[None], w[None], z[None], init[None], ba)
    assert m["ba_failures"] == 0
    assert m["ba_rms_px"] < 1e-3
    assert relative_rotation_errors(poses[0], T).max() < 0.01  # degrees
    assert (poses[0, :, :3, 3] - T[:, :3, 3]).norm(dim=-1).max() < 0.05  # mm


def test_ba_layer_gradient_reaches_depth(tiny_data):
    """Scaling every landmark depth by c scales the refined translations by c (world = camera
    0), so the derivative of sum(t) along the direction `depth` is sum(t): an exact check of
    the implicit gradient through the solver."""
    s, T, z = _gt_problem(tiny_data)
    w = s.visible.to(torch.float64)
    depth = z.clone().requires_grad_(True)
    ba = replace(TRAINING_BA, max_iterations=30, kernel=KernelKind.NONE,
                 backward=BackwardMode.IMPLICIT)
    poses, m = refine_poses(s.K[None], s.uv[None], w[None], depth[None], T[None], ba)
    assert m["ba_failures"] == 0
    total = poses[0, :, :3, 3].sum()
    total.backward()
    g = depth.grad
    assert torch.isfinite(g).all()
    directional = (g * depth.detach()).sum()
    assert float(directional) == pytest.approx(float(total.detach()), rel=1e-4, abs=1e-3)
