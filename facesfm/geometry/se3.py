"""SO(3) and SE(3) exponential/logarithm maps, adjoints and Jacobians, batched, in torch.

Conventions:

* A rotation vector ``w`` (..., 3) maps to ``R = exp([w]x)``.
* A twist ``xi`` (..., 6) is ordered ``(v, w)``: translation part first, rotation second
  (as in Theseus and PyPose). ``se3_exp(xi)`` is a 4x4 rigid transform.
* Poses are perturbed on the left: ``T <- se3_exp(xi) @ T``. For ``cam_T_world`` this is a
  perturbation expressed in the camera frame, and ``d(T X)/d xi`` at ``xi = 0`` is
  ``[I, -[T X]x]``.

Every function takes its device and dtype from its input and is safe in float64 at and near
zero angle (second-order Taylor branches written in ``theta**2`` so that autograd's first and
second derivatives at exactly zero are right).
"""

from __future__ import annotations

import torch

__all__ = [
    "hat",
    "rotation_angle",
    "se3_adjoint",
    "se3_exp",
    "se3_log",
    "so3_exp",
    "so3_left_jacobian",
    "so3_left_jacobian_inv",
    "so3_log",
    "so3_right_jacobian",
    "vee",
]

# Below this squared angle, use Taylor series (errors ~theta^6, far below float64 eps).
_SMALL2 = 1e-6


def _check_last(x: torch.Tensor, n: int, name: str) -> None:
    if x.shape[-1] != n:
        raise ValueError(f"{name}: expected last dimension {n}, got shape {tuple(x.shape)}")


def hat(w: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrices (..., 3, 3) with ``hat(w) @ x == cross(w, x)``; w: (..., 3)."""
    _check_last(w, 3, "hat")
    z = torch.zeros_like(w[..., 0])
    x, y, zz = w.unbind(-1)
    return torch.stack(
        [
            torch.stack([z, -zz, y], -1),
            torch.stack([zz, z, -x], -1),
            torch.stack([-y, x, z], -1),
        ],
        -2,
    )


def vee(W: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat`: (..., 3, 3) -> (..., 3) (uses the antisymmetric part)."""
    return 0.5 * torch.stack(
        [W[..., 2, 1] - W[..., 1, 2], W[..., 0, 2] - W[..., 2, 0], W[..., 1, 0] - W[..., 0, 1]],
        -1,
    )


def _coeffs(w: torch.Tensor):
    """theta^2 and the series A=sin t/t, B=(1-cos t)/t^2, C=(t-sin t)/t^3, safe at 0."""
    t2 = (w * w).sum(-1)
    small = t2 < _SMALL2
    t2s = torch.where(small, torch.ones_like(t2), t2)  # keeps sqrt/divisions finite
    t = torch.sqrt(t2s)
    A = torch.where(small, 1.0 - t2 / 6.0 + t2 * t2 / 120.0, torch.sin(t) / t)
    B = torch.where(small, 0.5 - t2 / 24.0 + t2 * t2 / 720.0, (1.0 - torch.cos(t)) / t2s)
    C = torch.where(small, 1.0 / 6.0 - t2 / 120.0 + t2 * t2 / 5040.0, (t - torch.sin(t)) / (t2s * t))
    return t2, small, A, B, C


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from rotation vectors (..., 3) (Rodrigues)."""
    _check_last(w, 3, "so3_exp")
    _, _, A, B, _ = _coeffs(w)
    W = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(W.shape)
    return eye + A[..., None, None] * W + B[..., None, None] * (W @ W)


def so3_left_jacobian(w: torch.Tensor) -> torch.Tensor:
    """Left Jacobian J_l(w) (..., 3, 3): ``exp(w + dw) = exp(J_l(w) dw) exp(w)`` to first order."""
    _check_last(w, 3, "so3_left_jacobian")
    _, _, _, B, C = _coeffs(w)
    W = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(W.shape)
    return eye + B[..., None, None] * W + C[..., None, None] * (W @ W)


def so3_right_jacobian(w: torch.Tensor) -> torch.Tensor:
    """Right Jacobian J_r(w) = J_l(-w) (..., 3, 3)."""
    return so3_left_jacobian(-w)


def so3_left_jacobian_inv(w: torch.Tensor) -> torch.Tensor:
    """Inverse of the left Jacobian (..., 3, 3)."""
    _check_last(w, 3, "so3_left_jacobian_inv")
    t2, small, A, B, _ = _coeffs(w)
    # D = (1 - A / (2B)) / t^2 = 1/12 + t^2/720 + ...
    t2s = torch.where(small, torch.ones_like(t2), t2)
    D = torch.where(small, 1.0 / 12.0 + t2 / 720.0 + t2 * t2 / 30240.0, (1.0 - A / (2.0 * B)) / t2s)
    W = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(W.shape)
    return eye - 0.5 * W + D[..., None, None] * (W @ W)


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """Rotation vectors (..., 3) of rotation matrices (..., 3, 3), angle in [0, pi].

    Accurate near 0 (series) and near pi (axis from the symmetric part of R).
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"so3_log: expected (..., 3, 3), got {tuple(R.shape)}")
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos = ((tr - 1.0) * 0.5).clamp(-1.0, 1.0)
    s = vee(R)  # = sin(theta) * axis
    sin = s.norm(dim=-1)
    theta = torch.atan2(sin, cos)
    small = theta < 1e-4
    near_pi = cos < -0.9
    # generic: theta / sin(theta) * s; small: (1 + theta^2/6) * s
    sin_safe = torch.where(small | near_pi, torch.ones_like(sin), sin)
    k = torch.where(small, 1.0 + theta * theta / 6.0, theta / sin_safe)
    w = k[..., None] * s
    if bool(near_pi.any()):
        # R + R^T = 2 cos I + 2 (1 - cos) a a^T: take the column with the largest diagonal.
        S = 0.5 * (R + R.transpose(-1, -2))
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        M = (S - cos[..., None, None] * eye) / (1.0 - cos).clamp_min(1e-12)[..., None, None]
        idx = torch.diagonal(M, dim1=-2, dim2=-1).argmax(-1)
        col = torch.gather(M, -1, idx[..., None, None].expand(*M.shape[:-1], 1))[..., 0]
        axis = col / col.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        # pick the sign that agrees with the antisymmetric part
        sign = torch.where((axis * s).sum(-1) < 0, -1.0, 1.0).to(R.dtype)
        w_pi = axis * (sign * theta)[..., None]
        w = torch.where(near_pi[..., None], w_pi, w)
    return w


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    """Rigid transforms (..., 4, 4) from twists (..., 6) ordered (v, w)."""
    _check_last(xi, 6, "se3_exp")
    v, w = xi[..., :3], xi[..., 3:]
    R = so3_exp(w)
    t = (so3_left_jacobian(w) @ v[..., None])[..., 0]
    top = torch.cat([R, t[..., None]], -1)
    bottom = torch.zeros(*xi.shape[:-1], 1, 4, dtype=xi.dtype, device=xi.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


def se3_log(T: torch.Tensor) -> torch.Tensor:
    """Twists (..., 6) ordered (v, w) of rigid transforms (..., 4, 4)."""
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"se3_log: expected (..., 4, 4), got {tuple(T.shape)}")
    w = so3_log(T[..., :3, :3])
    v = (so3_left_jacobian_inv(w) @ T[..., :3, 3:])[..., 0]
    return torch.cat([v, w], -1)


def se3_adjoint(T: torch.Tensor) -> torch.Tensor:
    """Adjoint (..., 6, 6) for (v, w) twists: ``T exp(xi) T^-1 = exp(Ad(T) xi)``."""
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"se3_adjoint: expected (..., 4, 4), got {tuple(T.shape)}")
    R = T[..., :3, :3]
    tR = hat(T[..., :3, 3]) @ R
    Z = torch.zeros_like(R)
    top = torch.cat([R, tR], -1)
    bot = torch.cat([Z, R], -1)
    return torch.cat([top, bot], -2)


def rotation_angle(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians, (...,)) between rotations (..., 3, 3)."""
    return so3_log(Ra.transpose(-1, -2) @ Rb).norm(dim=-1)
