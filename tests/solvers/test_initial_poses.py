"""Start poses from landmark tracks: the template's depth reflection and scale come from the
semantic IDs only, whatever other IDs the tracks carry."""

import numpy as np
import pytest

from facesfm.errors import InputError
from facesfm.geometry.camera import project, transform
from facesfm.solvers.baselines import SEMANTIC_LANDMARKS, template_landmarks
from facesfm.solvers.initial_poses import landmark_poses
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
