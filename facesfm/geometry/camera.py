"""Pinhole cameras in the OpenCV convention, for numpy arrays and torch tensors alike.

Frames and units used everywhere in facesfm:

* World frame: the face model's own frame, in millimetres; +y up, the face looks down +z.
* Camera frame (OpenCV): x right, y down, z forward (into the scene).
* ``cam_T_world`` is a 4x4 rigid transform: ``X_cam = R @ X_world + t``.
* Pixel coordinates ``uv``: u to the right, v down, and the *centre* of pixel (row r, col c)
  sits at ``(u, v) = (c, r)`` (OpenCV). A principal point at the image centre is therefore
  ``((W - 1) / 2, (H - 1) / 2)``.
* ``K`` is the 3x3 intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "backproject",
    "camera_center",
    "intrinsics",
    "invert_pose",
    "look_at",
    "project",
    "transform",
]


def intrinsics(focal: float, width: int, height: int) -> np.ndarray:
    """K for a camera with square pixels and the principal point at the image centre."""
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def _stack_last(like, parts):
    """Stack along a new last axis with the library of ``like`` (numpy or torch).

    torch is imported only when a tensor comes in, so numpy-only users (render workers) do
    not pay for importing it.
    """
    if isinstance(like, np.ndarray):
        return np.stack(parts, axis=-1)
    import torch

    return torch.stack(parts, dim=-1)


def _matmul_T(x, m):
    """x @ m.T for numpy or torch."""
    return x @ m.swapaxes(-1, -2) if isinstance(x, np.ndarray) else x @ m.transpose(-1, -2)


def transform(b_T_a, x_a):
    """Apply a rigid transform (..., 4, 4) to points (..., N, 3) expressed in frame a."""
    R = b_T_a[..., :3, :3]
    t = b_T_a[..., None, :3, 3]
    return _matmul_T(x_a, R) + t


def project(K, x_cam):
    """Project camera-frame points (..., N, 3) with K (..., 3, 3) to pixels (..., N, 2).

    Points with z <= 0 give inf/nan; callers mask them by depth.
    """
    fx = K[..., 0, 0, None]
    fy = K[..., 1, 1, None]
    cx = K[..., 0, 2, None]
    cy = K[..., 1, 2, None]
    z = x_cam[..., 2]
    u = fx * x_cam[..., 0] / z + cx
    v = fy * x_cam[..., 1] / z + cy
    return _stack_last(x_cam, [u, v])


def backproject(K, uv, depth):
    """Lift pixels (..., N, 2) with camera-frame depth z (..., N) to camera-frame points."""
    fx = K[..., 0, 0, None]
    fy = K[..., 1, 1, None]
    cx = K[..., 0, 2, None]
    cy = K[..., 1, 2, None]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    return _stack_last(uv, [x, y, depth])


def invert_pose(b_T_a):
    """Inverse of rigid transforms (..., 4, 4)."""
    R = b_T_a[..., :3, :3]
    t = b_T_a[..., :3, 3:]
    Rt = R.swapaxes(-1, -2) if isinstance(b_T_a, np.ndarray) else R.transpose(-1, -2)
    out = b_T_a * 0
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -(Rt @ t)
    out[..., 3, 3] = 1.0
    return out


def camera_center(cam_T_world):
    """Camera centres in world coordinates (..., 3)."""
    return invert_pose(cam_T_world)[..., :3, 3]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None):
    """``cam_T_world`` (4x4, OpenCV axes) of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear upwards in the image (towards -v); default +y.
    """
    if up is None:
        up = (0.0, 1.0, 0.0)
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))  # image right = forward x up
    n = np.linalg.norm(x)
    if n < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x /= n
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T
