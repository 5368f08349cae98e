"""Start poses from landmark tracks: the template's depth reflection and scale come from the
semantic IDs only, whatever other IDs the tracks carry. The mean-face pose of each frame
(template_poses): its reprojection Jacobian is exact, and frames of the template itself get
their cameras back."""

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from facesfm.errors import InputError
from facesfm.geometry.camera import intrinsics, look_at, project, transform
from facesfm.solvers.baselines import SEMANTIC_LANDMARKS, template_landmarks
from facesfm.solvers.initial_poses import (
    _reprojection,
    _reprojection_jacobian,
    landmark_poses,
    template_poses,
)
from facesfm.solvers.landmark_ba import Landmarks

K = np.array([[500.0, 0, 192], [0, 500.0, 192], [0, 0, 1]])


def _tracks(ids, X):
    """Landmarks of the points X (N, 3) seen by 7 cameras turning about the face (yaw
    -30..30 deg, 500 mm away)."""
    uv, poses = [], []
    for yaw in np.radians(np.linspace(-30, 30, 7)):
        c, s = np.cos(yaw), np.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        T[:3, 3] = [0, 0, 500]
        poses.append(T)
        uv.append(project(K, transform(T, X)))
    return Landmarks(np.stack(uv), np.ones((7, len(ids))), np.asarray(ids), "test"), poses


def test_ids_beyond_the_template_keep_the_semantic_start():
    """MediaPipe-like IDs (far beyond the template) before 20 semantic ones: the start's
    relative rotations are the truth's within what weak perspective costs."""
    rng = np.random.default_rng(0)
    sem = template_landmarks(SEMANTIC_LANDMARKS)[:20]
    extra = sem[rng.integers(0, 20, 30)] + rng.normal(0, 5, (30, 3))
    ids = np.r_[1_000_000 + np.arange(30), np.arange(20)]
    lm, gt = _tracks(ids, np.r_[extra, sem])
    P = landmark_poses(K, lm)
    assert np.all(np.isfinite(P))
    for f in range(7):  # relative rotations to frame 0: the truth within weak perspective
        Rr = P[f, :3, :3] @ P[0, :3, :3].T
        Rg = gt[f][:3, :3] @ gt[0][:3, :3].T
        ang = np.degrees(np.arccos(np.clip((np.trace(Rr @ Rg.T) - 1) / 2, -1, 1)))
        assert ang < 6.0, (f, ang)  # measured <= 4.8 (weak perspective)


def test_too_few_semantic_ids_and_foreign_ids_is_an_error():
    """Without 6 semantic IDs the template by ID is the fallback; IDs it does not hold are
    refused with a line, not matched to the template's first rows by position."""
    rng = np.random.default_rng(1)
    X = rng.normal(0, 40, (40, 3))
    lm, _ = _tracks(np.r_[np.arange(3), 1_000_000 + np.arange(37)], X)
    with pytest.raises(InputError, match="semantic landmarks"):
        landmark_poses(K, lm)


def test_reprojection_jacobian_matches_finite_differences():
    rng = np.random.default_rng(0)
    K = intrinsics(500.0, 384, 384)
    X = rng.normal(scale=40.0, size=(20, 3))
    uv = rng.uniform(0, 384, size=(20, 2))
    for w in (np.array([0.3, -0.5, 0.2]), np.array([1e-9, 0.0, -2e-9]), np.zeros(3)):
        x = np.r_[w, 5.0, -8.0, 480.0]
        J = _reprojection_jacobian(x, X, uv, K)
        fd = np.stack([approx_fprime(x, lambda p, i=i: _reprojection(p, X, uv, K)[i], 1e-7)
                       for i in range(2 * len(X))])
        np.testing.assert_allclose(J, fd, rtol=1e-5, atol=1e-4)


def test_template_poses_recover_the_camera_of_the_template_itself():
    K = intrinsics(500.0, 384, 384)
    tmpl = template_landmarks(SEMANTIC_LANDMARKS)
    poses = np.stack([look_at(np.array([480 * np.sin(a), 30.0, 480 * np.cos(a)]), np.zeros(3))
                      for a in np.radians([-40, -10, 0, 25, 50])])
    uv = np.stack([project(K, transform(P, tmpl)) for P in poses])
    lm = Landmarks(uv, np.ones(uv.shape[:2]), np.arange(SEMANTIC_LANDMARKS), "test")
    est = template_poses(K, lm)
    np.testing.assert_allclose(est, poses, atol=1e-6)
