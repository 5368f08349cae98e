"""Long sequences: the joint stages run on evenly spread keyframes and every other frame is
registered to their reconstruction (:mod:`facesfm.solve.register`). On a jittered path
(roll, distance and uneven steps), where a pose interpolated between keyframes is off, each
registered frame gets its own camera back; the outputs hold every frame, marked."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from facesfm.geometry.se3 import se3_exp
from facesfm.solve import register
from facesfm.solve.register import interpolate_poses, joint_keyframes


def _rot_deg(A, B):
    R = A[..., :3, :3] @ np.swapaxes(B[..., :3, :3], -1, -2)
    return np.degrees(np.arccos(np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def test_keyframes_are_evenly_spread_and_keep_both_ends():
    assert joint_keyframes(61, 61) is None
    assert joint_keyframes(10, None) is None
    key = joint_keyframes(601, 61)
    assert key.sum() == 61 and key[0] and key[-1]
    np.testing.assert_array_equal(np.flatnonzero(key), np.arange(0, 601, 10))
    gaps = np.diff(np.flatnonzero(joint_keyframes(100, 7)))
    assert gaps.max() - gaps.min() <= 1


def test_interpolation_is_exact_on_a_screw_motion():
    """Poses of a constant twist per frame: the geodesic between keyframes gives every frame
    between them exactly; the keyframes keep their own poses."""
    xi = torch.tensor([1.0, -2.0, 0.5, 0.01, 0.03, -0.02], dtype=torch.float64)
    T0 = se3_exp(torch.tensor([5.0, 1.0, 480.0, 0.1, -0.2, 0.05], dtype=torch.float64))
    truth = torch.stack([se3_exp(k * xi) @ T0 for k in range(13)]).numpy()
    key = np.array([0, 4, 9, 12])
    out = interpolate_poses(truth[key], key, 13)
    np.testing.assert_allclose(out, truth, atol=1e-9)
    np.testing.assert_array_equal(out[key], truth[key])


@pytest.fixture(scope="module")
def jittered(tmp_path_factory):
    """25 frames over +-24 degrees, 256x256, with per-frame roll, distance and step jitter."""
    from facesfm.faces.builtin import BuiltinFaceModel
    from facesfm.render.config import RenderConfig, TrajectoryConfig
    from facesfm.render.writer import render_sequence

    mesh, coeffs = BuiltinFaceModel().sample(3)
    out = tmp_path_factory.mktemp("register") / "seq"
    traj = TrajectoryConfig(yaw_min=-24.0, yaw_max=24.0, frames=25, roll_jitter=3.0,
                            distance_jitter=15.0, yaw_jitter=0.3)
    render_sequence(mesh, out, RenderConfig(width=256, height=256, focal=340.0, landmarks=200,
                                            trajectory=traj), seed=3,
                    face_info={"source": "builtin", "seed": 3, "coeffs": coeffs})
    return out


def _config(tracks: bool, **kw):
    from facesfm.solve.config import SolveConfig
    from facesfm.solve.tracks import TrackConfig

    return SolveConfig(oracle_landmarks=True, oracle_depth=True, poses_init="gt-perturbed",
                       tracks=TrackConfig(enabled=tracks, neighbours=8), **kw)


def test_registered_frames_get_their_own_cameras(jittered, tmp_path):
    """Exact landmarks: every registered frame's camera is the truth, although its start
    (interpolated between keyframes) is off by the path's jitter."""
    from facesfm.solve.pipeline import run_solve

    said = []
    res = run_solve(jittered, tmp_path / "out", _config(False, joint_frames=9),
                    echo=said.append)
    assert any("run on 9 keyframes" in s and "other 16 are registered" in s for s in said)
    assert len(res.frames.names) == 25 and res.kept.all()
    key = res.keyframes
    assert key.sum() == 9 and np.array_equal(np.flatnonzero(key), np.arange(0, 25, 3))
    reg = res.registration
    assert np.array_equal(reg.frames, np.flatnonzero(~key))
    start_err = _rot_deg(reg.start, res.poses_gt[~key])
    ev = res.evaluation.poses_optimised.rotation_deg
    assert start_err.mean() > 0.5, start_err
    assert ev.max() < 0.01, ev
    assert len(res.depth.depth) == 9  # the joint stages' depth maps
    # the initial poses (learned-vs-optimised) of registered frames: the keyframes' initial
    # poses interpolated, not the bundle-adjusted ones
    np.testing.assert_allclose(
        res.poses_initial, interpolate_poses(res.poses_initial[key], np.flatnonzero(key), 25),
        atol=1e-9)
    assert _rot_deg(res.poses_initial[~key], res.poses_gt[~key]).mean() > 1.0
    cams = json.loads((tmp_path / "out" / "cameras.json").read_text())
    assert [f["keyframe"] for f in cams["frames"]] == key.tolist()
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["keyframes"] == [n for n, k in zip(res.frames.names, key) if k]
    assert rep["registration"]["frames"] == 16 and rep["registration"]["skipped"] == []


def test_registration_with_tracks_matches_the_keyframes_accuracy(jittered, tmp_path):
    """With --tracks the registered frames also fit skin patches matched from their
    neighbouring keyframes, and end as close to the truth as the keyframes. (On this
    256 px path the tracks themselves leave the joint solve about 0.22 degrees off, with all
    25 frames in it too.)"""
    from facesfm.solve.pipeline import run_solve

    res = run_solve(jittered, tmp_path / "out", _config(True, joint_frames=9), echo=None)
    key = res.keyframes
    ev = res.evaluation.poses_optimised.rotation_deg
    assert np.median(res.registration.track_points) > 20
    assert ev[~key].mean() < ev[key].mean() + 0.05, ev
    assert ev.max() < 0.4, ev


def test_a_frame_that_cannot_be_registered_is_skipped_by_name(jittered, tmp_path,
                                                              monkeypatch):
    """A registered frame left with too few observations is dropped, named in a warning; the
    frames after it keep their own cameras (positions shift by one)."""
    from facesfm.solve.pipeline import run_solve

    real = register.register_frames

    def one_fails(*a, **kw):
        out = real(*a, **kw)
        out.failed[3] = True  # frame 5: the fourth of those between keyframes
        return out

    monkeypatch.setattr(register, "register_frames", one_fails)
    said = []
    res = run_solve(jittered, tmp_path / "out", _config(False, joint_frames=9),
                    echo=said.append)
    assert any("fewer than 6 observations" in s and "000005.png" in s for s in said), said
    assert len(res.frames.names) == 24 and "000005.png" not in res.frames.names
    assert res.registration.skipped == ("000005.png",)
    assert res.evaluation.poses_optimised.rotation_deg.max() < 0.01
    assert res.keyframes.sum() == 9 and len(res.registration.frames) == 15
    assert not res.kept[5] and res.kept.sum() == 24


def test_joint_frames_setting():
    from facesfm.errors import InputError
    from facesfm.solve.config import build_solve_config

    assert build_solve_config().joint_frames == 61
    assert build_solve_config(sets=["joint_frames=null"]).joint_frames is None
    with pytest.raises(InputError, match="joint_frames must be >= 2"):
        build_solve_config(sets=["joint_frames=1"])


def test_a_frame_whose_landmarks_no_pose_explains_is_skipped(jittered, tmp_path):
    """Frame 5's landmarks shuffled among themselves (a detection gone wrong on one frame of
    a video): no pose explains them, its RMS is far above the keyframes', and it is skipped
    by name instead of written with a camera fitted to garbage."""
    import shutil

    from facesfm.solve.pipeline import run_solve

    seq = tmp_path / "seq"
    shutil.copytree(jittered, seq)
    z = dict(np.load(seq / "landmarks.npz"))
    perm = np.random.default_rng(1).permutation(z["uv"].shape[1])
    z["uv"][5] = z["uv"][5][perm]
    np.savez_compressed(seq / "landmarks.npz", **z)
    said = []
    res = run_solve(seq, tmp_path / "out", _config(False, joint_frames=9), echo=said.append)
    assert any("could not be registered" in s and "000005.png" in s for s in said), said
    assert "000005.png" not in res.frames.names and len(res.frames.names) == 24
    assert res.evaluation.poses_optimised.rotation_deg.max() < 0.01


def test_a_long_sequence_is_detected_in_two_passes(seq9):
    """With more frames than joint_frames, every frame is first detected with one crop view,
    and the keyframes again with all the detector's views: their landmarks are those of a
    one-pass detection, the other frames keep the one-view pass's. Sequences that fit, and
    other landmark sources, are detected once."""
    from facesfm.solve.config import SolveConfig
    from facesfm.solve.inputs import load_input
    from facesfm.solve.stages import detect_landmarks, first_pass_views, redetect_keyframes
    from facesfm.training.inference import load_networks
    from facesfm.weights import shipped_landmark_checkpoint

    ckpt = shipped_landmark_checkpoint("builtin")
    nets = load_networks(None, ckpt)
    assert nets.landmark_views > 1
    frames = load_input(seq9)
    cfg = SolveConfig(landmark_checkpoint=str(ckpt), joint_frames=4)
    views = first_pass_views(frames, cfg, nets)
    assert views == 1
    first = detect_landmarks(frames, cfg, nets, views)
    joint = np.zeros(len(frames.names), bool)
    joint[[0, 3, 5, 8]] = True
    both = redetect_keyframes(frames, joint, first, nets)
    once = detect_landmarks(frames, cfg, nets)
    np.testing.assert_allclose(both.uv[joint], once.uv[joint], atol=1e-3)
    np.testing.assert_allclose(both.weight[joint], once.weight[joint], rtol=1e-3)
    np.testing.assert_array_equal(both.uv[~joint], first.uv[~joint])
    assert np.abs(first.uv[joint] - once.uv[joint]).max() > 0.05  # the passes differ
    assert first_pass_views(frames, replace(cfg, joint_frames=None), nets) is None
    assert first_pass_views(frames, replace(cfg, joint_frames=9), nets) is None
    assert first_pass_views(frames, replace(cfg, landmarks_from="oracle"), nets) is None
