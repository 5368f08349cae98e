import numpy as np
import pytest
import torch

from facesfm.geometry.camera import (
    backproject,
    camera_center,
    intrinsics,
    invert_pose,
    look_at,
    project,
    transform,
)


def test_intrinsics_principal_point_is_image_centre_in_opencv_pixels():
    K = intrinsics(500.0, 384, 256)
    assert K[0, 2] == 191.5 and K[1, 2] == 127.5 and K[0, 0] == K[1, 1] == 500.0


def test_look_at_frontal_camera_keeps_world_up_up_and_right_right():
    T = look_at(np.array([0.0, 0.0, 500.0]), np.zeros(3))
    assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3)) and np.isclose(np.linalg.det(T[:3, :3]), 1)
    K = intrinsics(500.0, 384, 384)
    uv = project(K, transform(T, np.array([[0.0, 0.0, 0.0], [10.0, 20.0, 0.0]])))
    assert np.allclose(uv[0], [191.5, 191.5])
    # world +x (subject's left, viewer's right) to the right, world +y up (smaller v)
    assert np.allclose(uv[1], [191.5 + 10.0, 191.5 - 20.0])
    assert np.allclose(camera_center(T), [0.0, 0.0, 500.0])


def test_look_at_rejects_viewing_along_up():
    with pytest.raises(ValueError):
        look_at(np.array([0.0, 500.0, 0.0]), np.zeros(3))


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_project_backproject_roundtrip_and_inverse(lib):
    rng = np.random.default_rng(0)
    K = intrinsics(500.0, 384, 384)
    T = look_at(np.array([300.0, 50.0, 400.0]), np.array([0.0, 10.0, 0.0]))
    X = rng.normal(scale=60.0, size=(50, 3))
    if lib == "torch":
        K, T, X = (torch.as_tensor(a, dtype=torch.float64) for a in (K, T, X))
    Xc = transform(T, X)
    uv = project(K, Xc)
    back = backproject(K, uv, Xc[..., 2])
    assert np.allclose(np.asarray(back), np.asarray(Xc), atol=1e-9)
    Xw = transform(invert_pose(T), Xc)
    assert np.allclose(np.asarray(Xw), np.asarray(X), atol=1e-9)


def test_batched_shapes():
    K = np.broadcast_to(intrinsics(500.0, 64, 64), (4, 3, 3))
    T = np.stack([look_at(np.array([0.0, 0.0, 500.0 + i]), np.zeros(3)) for i in range(4)])
    X = np.zeros((4, 7, 3))
    assert project(K, transform(T, X)).shape == (4, 7, 2)
    assert invert_pose(T).shape == (4, 4, 4)
