"""Resection (each frame's pose against fixed points): its Jacobian is exact, it recovers the
poses of noise-free views from a start several degrees and centimetres off, its Cauchy kernel
keeps it there with gross outliers among the observations, and a frame with too few points
keeps its start."""

import numpy as np
import torch

from facesfm.geometry.camera import project, transform
from facesfm.geometry.se3 import se3_exp
from facesfm.solvers.problem import CauchyKernel
from facesfm.solvers.resection import _jacobian, _residuals, resect

K = np.array([[500.0, 0, 192], [0, 500.0, 196], [0, 0, 1]])


def _views(n_frames=6, n_points=80, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 40, (n_points, 3))
    poses = []
    for yaw in np.radians(np.linspace(-50, 50, n_frames)):
        c, s = np.cos(yaw), np.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        T[:3, 3] = [3.0, -5.0, 480.0]
        poses.append(T)
    poses = np.stack(poses)
    uv = np.stack([project(K, transform(T, X)) for T in poses])
    return X, poses, uv


def _rot_deg(A, B):
    R = A[..., :3, :3] @ np.swapaxes(B[..., :3, :3], -1, -2)
    return np.degrees(np.arccos(np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def _moved(poses, rot_deg, trans_mm, seed):
    rng = np.random.default_rng(seed)
    xi = np.zeros((len(poses), 6))
    axis = rng.normal(size=(len(poses), 3))
    xi[:, 3:] = np.radians(rot_deg) * axis / np.linalg.norm(axis, axis=1, keepdims=True)
    d = rng.normal(size=(len(poses), 3))
    xi[:, :3] = trans_mm * d / np.linalg.norm(d, axis=1, keepdims=True)
    return se3_exp(torch.as_tensor(xi)).numpy() @ poses


def test_jacobian_matches_finite_differences():
    X, poses, uv = _views(3, 10)
    Kt = torch.as_tensor(K).expand(3, 3, 3)
    T = torch.as_tensor(_moved(poses, 4.0, 10.0, 1))
    Xt = torch.as_tensor(np.broadcast_to(X, (3, 10, 3)).copy())
    w = torch.ones(3, 10, dtype=torch.float64)
    _, p, _ = _residuals(Kt, T, Xt, torch.as_tensor(uv), w)
    J = _jacobian(Kt, p)
    eps = 1e-6
    for c in range(6):
        d = torch.zeros(3, 6, dtype=torch.float64)
        d[:, c] = eps
        rp, _, _ = _residuals(Kt, se3_exp(d) @ T, Xt, torch.as_tensor(uv), w)
        rm, _, _ = _residuals(Kt, se3_exp(-d) @ T, Xt, torch.as_tensor(uv), w)
        fd = (rp - rm) / (2 * eps)
        assert torch.allclose(J[..., c], fd, rtol=1e-6, atol=1e-6), c


def test_recovers_poses_from_a_far_start():
    X, poses, uv = _views()
    start = _moved(poses, 8.0, 30.0, 2)
    assert _rot_deg(start, poses).min() > 7.9
    out = resect(K, X, uv, np.ones(uv.shape[:2]), start)
    assert _rot_deg(out.poses, poses).max() < 1e-5  # arccos resolution: 1e-6
    assert np.abs(out.poses[:, :3, 3] - poses[:, :3, 3]).max() < 1e-4
    assert out.rms_px.max() < 1e-6
    assert out.converged.all()
    assert (out.observed == 80).all()


def test_cauchy_kernel_holds_against_outliers():
    """A fifth of the observations moved 40 px: plain least squares is pulled off, the Cauchy
    kernel is not."""
    X, poses, uv = _views(seed=3)
    rng = np.random.default_rng(4)
    bad = rng.random(uv.shape[:2]) < 0.2
    uv_bad = uv + bad[..., None] * rng.normal(0, 40, uv.shape)
    start = _moved(poses, 3.0, 10.0, 5)
    w = np.ones(uv.shape[:2])
    plain = resect(K, X, uv_bad, w, start)
    robust = resect(K, X, uv_bad, w, start, kernel=CauchyKernel(1.0))
    assert _rot_deg(plain.poses, poses).mean() > 0.2
    assert _rot_deg(robust.poses, poses).max() < 0.02


def test_unseen_and_missing_points_do_not_count():
    """NaN points and zero weights are no observations; a frame left with two keeps its
    start pose and reports them."""
    X, poses, uv = _views()
    start = _moved(poses, 2.0, 5.0, 6)
    Xf = np.broadcast_to(X, uv.shape[:2] + (3,)).copy()
    w = np.ones(uv.shape[:2])
    Xf[1, :40] = np.nan
    w[2, 2:] = 0.0
    uv_off = uv.copy()
    uv_off[1, :40] += 100.0  # would pull frame 1 off if the NaN points counted
    out = resect(K, Xf, uv_off, w, start)
    assert out.observed[1] == 40 and out.observed[2] == 2
    np.testing.assert_array_equal(out.poses[2], start[2])
    keep = [0, 1, 3, 4, 5]
    assert _rot_deg(out.poses[keep], poses[keep]).max() < 1e-5  # arccos resolution: 1e-6
