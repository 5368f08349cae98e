"""The report's mesh views and top view follow the cameras, not the world axes: a solve's
world is the mean face's or the first camera's frame, where +y need not be up."""

import numpy as np
from scipy.spatial.transform import Rotation

from facesfm.geometry.camera import look_at
from facesfm.solve.outputs import look_point, view_frame


def _sweep(head, up, front, side):
    """Cameras on a 120-degree arc 500 mm from ``head``, looking at it, image-up ``up``."""
    return np.stack([look_at(head + 500 * (np.cos(a) * front + np.sin(a) * side), head, up)
                     for a in np.radians(np.linspace(-60, 60, 13))])


def test_views_follow_the_cameras_in_any_world_frame():
    for seed in range(3):
        R = Rotation.random(random_state=seed).as_matrix()  # any world orientation
        up, front, side = R @ [0.0, -1.0, 0.0], R @ [0.0, 0.0, -1.0], R @ [1.0, 0.0, 0.0]
        head = np.array([10.0, 20.0, 500.0]) @ R.T
        poses = _sweep(head, up, front, side)
        np.testing.assert_allclose(look_point(poses), head, atol=1e-9)
        f, u = view_frame(poses, head)
        np.testing.assert_allclose(f, front, atol=1e-9)
        np.testing.assert_allclose(u, up, atol=1e-9)


def test_look_point_of_parallel_axes_is_the_mean_centre():
    poses = np.stack([np.eye(4)] * 3)
    poses[:, 0, 3] = [-10.0, 0.0, 10.0]
    np.testing.assert_allclose(look_point(poses), 0.0, atol=1e-12)
