import numpy as np
import pytest

from facesfm.errors import InputError
from facesfm.geometry.camera import camera_center, intrinsics, project, transform
from facesfm.render.config import TrajectoryConfig
from facesfm.render.trajectory import make_trajectory, sweep_yaws

K = intrinsics(500.0, 384, 384)


def test_default_sweep_is_the_papers():
    """61 cameras every 2 degrees from -60 to +60, 500 mm from the target, looking at it
    with world +y up in the image."""
    target = np.array([3.0, -10.0, 5.0])
    tr = make_trajectory(TrajectoryConfig(), seed=0, target=target)
    assert len(tr) == 61 and tr.cam_T_world.shape == (61, 4, 4)
    np.testing.assert_allclose(tr.yaw_deg, np.arange(-60, 61, 2), atol=1e-12)
    np.testing.assert_array_equal(tr.index, np.arange(61))
    C = camera_center(tr.cam_T_world)
    np.testing.assert_allclose(np.linalg.norm(C - target, axis=1), 500.0, atol=1e-9)
    # yaw is the azimuth around +y: positive yaw puts the camera on the +x side
    np.testing.assert_allclose(np.degrees(np.arctan2(C[:, 0] - 3, C[:, 2] - 5)), tr.yaw_deg,
                               atol=1e-9)
    np.testing.assert_allclose(C[:, 1], -10.0, atol=1e-9)
    # the target projects onto the principal point; a point above it projects above it
    uv = project(K, transform(tr.cam_T_world, np.stack([target, target + [0, 50, 0]])))
    np.testing.assert_allclose(uv[:, 0], np.broadcast_to([191.5, 191.5], (61, 2)), atol=1e-9)
    assert (uv[:, 1, 1] < uv[:, 0, 1] - 40).all()
    R = tr.cam_T_world[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


def test_frames_and_step_options():
    assert len(sweep_yaws(TrajectoryConfig(step=4.0))) == 31
    np.testing.assert_allclose(sweep_yaws(TrajectoryConfig(frames=5, yaw_min=-40, yaw_max=40)),
                               [-40, -20, 0, 20, 40])
    np.testing.assert_allclose(sweep_yaws(TrajectoryConfig(frames=1)), [0.0])


def test_subsets_pick_the_same_poses_as_the_full_sweep():
    jit = {"roll_jitter": 5.0, "distance_jitter": 20.0, "yaw_jitter": 0.3}
    full = make_trajectory(TrajectoryConfig(**jit), seed=7)
    every = make_trajectory(TrajectoryConfig(every=3, **jit), seed=7)
    idx = make_trajectory(TrajectoryConfig(indices=(60, 0, 31), **jit), seed=7)
    np.testing.assert_array_equal(every.index, np.arange(0, 61, 3))
    np.testing.assert_array_equal(every.cam_T_world, full.cam_T_world[::3])
    np.testing.assert_array_equal(idx.cam_T_world, full.cam_T_world[[60, 0, 31]])
    np.testing.assert_array_equal(idx.yaw_deg, full.yaw_deg[[60, 0, 31]])


def test_jitter_is_seeded_bounded_and_monotonic():
    cfg = TrajectoryConfig(roll_jitter=5.0, distance_jitter=20.0, yaw_jitter=0.45)
    a = make_trajectory(cfg, seed=1)
    b = make_trajectory(cfg, seed=1)
    c = make_trajectory(cfg, seed=2)
    np.testing.assert_array_equal(a.cam_T_world, b.cam_T_world)
    assert np.abs(a.cam_T_world - c.cam_T_world).max() > 1.0
    assert np.abs(a.roll_deg).max() <= 5.0 and np.abs(a.roll_deg).max() > 2.0
    assert np.all(np.abs(a.distance - 500) <= 20) and np.ptp(a.distance) > 10
    assert np.all(np.diff(a.yaw_deg) > 0)
    assert np.abs(a.yaw_deg - np.arange(-60, 61, 2)).max() <= 0.45 * 2 + 1e-12
    C = camera_center(a.cam_T_world)
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), a.distance, atol=1e-9)
    # roll turns the camera about its optical axis: the target still projects to the centre,
    # and the image of "up" is rotated by the roll angle
    uv = project(K, transform(a.cam_T_world, np.array([[0.0, 0, 0], [0, 50, 0]])))
    np.testing.assert_allclose(uv[:, 0], np.broadcast_to([191.5, 191.5], (61, 2)), atol=1e-9)
    d = uv[:, 1] - uv[:, 0]
    ang = np.degrees(np.arctan2(d[:, 0], -d[:, 1]))  # 0 = straight up in the image
    np.testing.assert_allclose(ang, a.roll_deg, atol=1e-6)  # clockwise on screen


def test_pitch_sweep():
    tr = make_trajectory(TrajectoryConfig(pitch=-10, pitch_end=30, frames=5), seed=0)
    np.testing.assert_allclose(tr.pitch_deg, [-10, 0, 10, 20, 30])
    C = camera_center(tr.cam_T_world)
    np.testing.assert_allclose(np.degrees(np.arcsin(C[:, 1] / 500)), tr.pitch_deg, atol=1e-9)


@pytest.mark.parametrize("kwargs,word", [
    ({"indices": (0, 61)}, "indices"),
    ({"indices": (3, 3)}, "repeat"),
    ({"yaw_jitter": 0.5}, "yaw_jitter"),
    ({"step": 0.0}, "step"),
    ({"yaw_min": 10, "yaw_max": -10}, "yaw_max"),
    ({"every": 2, "indices": (1,)}, "either"),
    ({"pitch": 89.5}, "pitch"),
])
def test_bad_options_name_the_option(kwargs, word):
    with pytest.raises(InputError, match=word):
        make_trajectory(TrajectoryConfig(**kwargs), seed=0)


def test_varied_trajectories_differ_per_sequence_and_stay_valid():
    """--vary-trajectory: direction, range, speed, easing and pitch are drawn per sequence, so
    two seeds give different paths; every path stays monotonic in yaw, within the configured
    bounds, and keeps its frame count."""
    from facesfm.render.trajectory import VARIED

    cfg = TrajectoryConfig(**VARIED)
    trs = [make_trajectory(cfg, seed=s) for s in range(40)]
    assert {len(t) for t in trs} == {61}
    rising = [np.all(np.diff(t.yaw_deg) > 0) for t in trs]
    falling = [np.all(np.diff(t.yaw_deg) < 0) for t in trs]
    assert all(r or f for r, f in zip(rising, falling))
    assert 5 <= sum(rising) <= 35  # both directions occur
    spans = np.array([np.ptp(t.yaw_deg) for t in trs])
    assert spans.min() < 110 and spans.max() > 130 and spans.max() < 120 * 1.25 + 5
    centres = np.array([np.mean([t.yaw_deg[0], t.yaw_deg[-1]]) for t in trs])
    assert np.abs(centres).max() <= 10.0 + 1.0 and np.std(centres) > 2.0
    pitch0 = np.array([t.pitch_deg[0] for t in trs])
    pitch1 = np.array([t.pitch_deg[-1] for t in trs])
    assert np.abs(pitch0).max() <= 8.0 and np.abs(pitch1).max() <= 8.0
    assert np.std(pitch1 - pitch0) > 2.0
    # eased sweeps are uneven: the middle steps are larger than the end steps on average
    steps = np.stack([np.abs(np.diff(t.yaw_deg)) for t in trs])
    assert steps[:, 25:35].mean() > 1.2 * steps[:, :5].mean()
    # the cameras still look at the target (the origin) from the configured distance band
    for t in trs[:5]:
        C = camera_center(t.cam_T_world)
        assert np.all(np.abs(np.linalg.norm(C, axis=1) - 500.0) <= 25.0 + 1e-9)
        uv = project(K, transform(t.cam_T_world, np.zeros((1, 3))))
        assert np.abs(uv[:, 0] - 191.5).max() < 1e-6


def test_varied_trajectory_is_seeded_and_leaves_the_plain_sweep_alone():
    from facesfm.render.trajectory import VARIED

    cfg = TrajectoryConfig(**VARIED)
    np.testing.assert_array_equal(make_trajectory(cfg, 3).cam_T_world,
                                  make_trajectory(cfg, 3).cam_T_world)
    plain = make_trajectory(TrajectoryConfig(), seed=3)
    np.testing.assert_array_equal(plain.yaw_deg, sweep_yaws(TrajectoryConfig()))
    fall = make_trajectory(TrajectoryConfig(direction="falling"), seed=3)
    np.testing.assert_array_equal(fall.yaw_deg, plain.yaw_deg[::-1])


@pytest.mark.parametrize("bad", [{"direction": "sideways"}, {"speed_jitter": 1.0},
                                 {"ease": 1.0}, {"yaw_shift": -1.0}, {"pitch_spread": -2.0}])
def test_variation_options_are_checked(bad):
    with pytest.raises(InputError, match=next(iter(bad))):
        TrajectoryConfig(**bad)
