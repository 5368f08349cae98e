"""Similarity transforms between point sets: :class:`Sim3` and Umeyama's least-squares fit.

A :class:`Sim3` maps points of a *source* frame (a reconstruction, an estimated trajectory)
into a *target* frame: ``x_tgt = s * R @ x_src + t``; points are (N, 3) float64 (mm in this
package). Used by the solvers (scaling a factorisation to the mean face), the solve's
trajectory plots and the evaluation's alignment to ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Sim3", "as_points", "rms_radius", "umeyama"]


def as_points(x, name: str) -> np.ndarray:
    """``x`` as a (N, 3) float64 array, or a ValueError naming ``name``."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3) points, got shape {a.shape}")
    return a


@dataclass(frozen=True)
class Sim3:
    """A similarity transform ``x -> s * R @ x + t``.

    R: (3, 3) float64 rotation (det +1), t: (3,) float64 in the target frame's units (mm),
    s: positive scale (1 for a rigid transform).
    """

    R: np.ndarray
    t: np.ndarray
    s: float = 1.0

    def __post_init__(self):
        if np.shape(self.R) != (3, 3) or np.shape(self.t) != (3,):
            raise ValueError(
                f"Sim3 needs R (3, 3) and t (3,), got {np.shape(self.R)}, {np.shape(self.t)}"
            )
        if not self.s > 0:
            raise ValueError(f"Sim3 scale must be positive, got {self.s}")

    @staticmethod
    def identity() -> Sim3:
        return Sim3(np.eye(3), np.zeros(3), 1.0)

    @staticmethod
    def from_matrix(T: np.ndarray) -> Sim3:
        """From a 4x4 matrix ``[[s R, t], [0, 1]]`` (s recovered as det(sR)^(1/3))."""
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"Sim3.from_matrix needs a 4x4 matrix, got {T.shape}")
        A = T[:3, :3]
        det = np.linalg.det(A)
        if det <= 0:
            raise ValueError("Sim3.from_matrix: the 3x3 block is not a scaled rotation (det <= 0)")
        s = float(np.cbrt(det))
        U, _, Vt = np.linalg.svd(A / s)  # re-orthonormalise against round-off
        return Sim3(U @ Vt, T[:3, 3].copy(), s)

    def matrix(self) -> np.ndarray:
        """(4, 4) matrix ``[[s R, t], [0, 1]]``."""
        T = np.eye(4)
        T[:3, :3] = self.s * self.R
        T[:3, 3] = self.t
        return T

    def apply(self, x) -> np.ndarray:
        """Map source points (..., 3) to the target frame."""
        x = np.asarray(x, dtype=np.float64)
        return self.s * x @ self.R.T + self.t

    def inverse(self) -> Sim3:
        Rt = self.R.T
        return Sim3(Rt, -(Rt @ self.t) / self.s, 1.0 / self.s)

    def __matmul__(self, other: Sim3) -> Sim3:
        """Composition: ``(self @ other).apply(x) == self.apply(other.apply(x))``."""
        return Sim3(self.R @ other.R, self.s * self.R @ other.t + self.t, self.s * other.s)

    def rotation_angle_deg(self) -> float:
        """Angle of R in degrees, in [0, 180] (atan2 form: accurate near 0 and 180)."""
        R = self.R
        sin = 0.5 * np.linalg.norm([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
        return float(np.degrees(np.arctan2(sin, (np.trace(R) - 1.0) / 2.0)))


def umeyama(src, dst, with_scale: bool = True, weights=None) -> Sim3:
    """Least-squares similarity mapping ``src`` onto ``dst`` (Umeyama 1991).

    Minimises ``sum_i w_i |dst_i - (s R src_i + t)|^2`` over rotations R (det +1), t and, when
    ``with_scale``, s > 0 (else s = 1).

    src, dst: (N, 3) corresponding points (N >= 3, not all collinear for a unique R).
    weights:  optional (N,) non-negative weights.
    Returns the :class:`Sim3` from the src frame to the dst frame.
    """
    src = as_points(src, "umeyama src")
    dst = as_points(dst, "umeyama dst")
    if src.shape != dst.shape:
        raise ValueError(f"umeyama: src {src.shape} and dst {dst.shape} differ in shape")
    if len(src) < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {len(src)}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(src),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("umeyama: weights must be (N,), non-negative, not all zero")
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    cov = (xd * w[:, None]).T @ xs  # (3, 3) cross-covariance dst x src
    U, D, Vt = np.linalg.svd(cov)
    S = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2] = -1.0  # best proper rotation, not a reflection
    R = (U * S) @ Vt
    if with_scale:
        var_s = float(w @ np.sum(xs * xs, axis=1))
        if var_s <= 0:
            raise ValueError("umeyama: source points are all identical; scale is undefined")
        s = float(np.dot(D, S) / var_s)
    else:
        s = 1.0
    t = mu_d - s * R @ mu_s
    return Sim3(R, t, s)


def rms_radius(x: np.ndarray) -> float:
    """RMS distance of the points (N, 3) from their centroid (0 for none)."""
    return float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())) if len(x) else 0.0
