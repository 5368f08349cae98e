"""SO(3)/SE(3) maps: round trips, Jacobians against finite differences, gradcheck."""

import math

import torch

from facesfm.geometry import se3
from facesfm.geometry.camera import invert_pose

G = torch.Generator().manual_seed(0)


def _rand(n, k, scale=1.0):
    return torch.randn(n, k, generator=G, dtype=torch.float64) * scale


def test_exp_log_round_trip_including_small_and_near_pi_angles():
    w = torch.cat([_rand(50, 3), _rand(5, 3, 1e-9), torch.zeros(1, 3)])
    axis = _rand(5, 3)
    axis = axis / axis.norm(dim=1, keepdim=True)
    w = torch.cat([w[w.norm(dim=1) < 3.0], axis * (math.pi - 1e-7), axis * 3.1])
    R = se3.so3_exp(w)
    eye = torch.eye(3, dtype=torch.float64)
    assert (R @ R.transpose(1, 2) - eye).abs().max() < 1e-13
    assert (torch.linalg.det(R) - 1).abs().max() < 1e-13
    assert (se3.so3_log(R) - w).abs().max() < 1e-6  # near-pi axis recovery is ~1e-7 accurate
    xi = torch.cat([_rand(30, 3, 50.0), _rand(30, 3)], 1)
    xi = xi[xi[:, 3:].norm(dim=1) < 3.0]
    assert (se3.se3_log(se3.se3_exp(xi)) - xi).abs().max() < 1e-10


def test_exp_matches_matrix_exponential():
    xi = torch.cat([_rand(10, 3, 20.0), _rand(10, 3)], 1)
    A = torch.zeros(10, 4, 4, dtype=torch.float64)
    A[:, :3, :3] = se3.hat(xi[:, 3:])
    A[:, :3, 3] = xi[:, :3]
    assert (torch.linalg.matrix_exp(A) - se3.se3_exp(xi)).abs().max() < 1e-11


def test_left_jacobian_matches_finite_differences_and_inverse():
    w = torch.cat([_rand(6, 3), _rand(1, 3, 1e-5)])
    Jl = se3.so3_left_jacobian(w)
    h = 1e-6
    for k in range(3):
        dw = torch.zeros(3, dtype=torch.float64)
        dw[k] = h
        # exp(w + dw) exp(w)^T = exp(J_l dw)
        D = (se3.so3_log(se3.so3_exp(w + dw) @ se3.so3_exp(w).transpose(1, 2))
             - se3.so3_log(se3.so3_exp(w - dw) @ se3.so3_exp(w).transpose(1, 2))) / (2 * h)
        assert (D - Jl[:, :, k]).abs().max() < 1e-8
    eye = torch.eye(3, dtype=torch.float64)
    assert (se3.so3_left_jacobian_inv(w) @ Jl - eye).abs().max() < 1e-12
    assert (se3.so3_right_jacobian(w) - Jl.transpose(1, 2)).abs().max() < 1e-14


def test_adjoint_and_inverse():
    T = se3.se3_exp(torch.cat([_rand(5, 3, 30.0), _rand(5, 3)], 1))
    xi = torch.cat([_rand(5, 3), _rand(5, 3, 0.3)], 1)
    lhs = T @ se3.se3_exp(xi) @ invert_pose(T)
    rhs = se3.se3_exp((se3.se3_adjoint(T) @ xi[..., None])[..., 0])
    assert (lhs - rhs).abs().max() < 1e-11
    eye = torch.eye(4, dtype=torch.float64)
    assert (T @ invert_pose(T) - eye).abs().max() < 1e-13
    # the angle between Ra and Ra exp(theta * axis) is theta, up to (almost) pi
    theta = torch.tensor([0.0, 1e-7, 0.3, 2.0, math.pi - 1e-6], dtype=torch.float64)
    axis = torch.nn.functional.normalize(_rand(5, 3), dim=1)
    Ra = T[:1, :3, :3].expand(5, 3, 3)
    Rb = Ra @ se3.so3_exp(theta[:, None] * axis)
    assert (se3.rotation_angle(Ra, Rb) - theta).abs().max() < 1e-6


def test_gradcheck_exp_log_and_second_derivative_at_zero():
    xi = torch.cat([_rand(3, 3, 2.0), _rand(3, 3)], 1).requires_grad_()
    assert torch.autograd.gradcheck(se3.se3_exp, (xi,))
    T = se3.se3_exp(xi.detach())
    assert torch.autograd.gradcheck(se3.se3_log, (T.requires_grad_(),))
    z = torch.zeros(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(se3.se3_exp, (z,))
    assert torch.autograd.gradgradcheck(se3.se3_exp, (z,))
    w = torch.tensor([[1e-5, -2e-5, 3e-6]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(se3.so3_exp, (w,))
    assert torch.autograd.gradcheck(se3.so3_left_jacobian, (w,))
