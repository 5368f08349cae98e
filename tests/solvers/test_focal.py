"""The shared focal length estimated from point tracks (facesfm.solvers.focal)."""

from types import SimpleNamespace

import numpy as np
import pytest

from facesfm.errors import InputError
from facesfm.geometry.camera import intrinsics
from facesfm.solvers.focal import FocalConfig, estimate_focal, scaled_focal
from facesfm.solvers.landmark_ba import BAConfig, Landmarks
from facesfm.solvers.synthetic import make_face_problem


def _scene(focal_px: float, distance_mm: float, seed: int = 0):
    """A yaw sweep seen at ``focal_px``: the first 68 points as landmarks, the rest as tracks,
    and the true poses."""
    face = make_face_problem(frames=25, landmarks=368, seed=seed, noise_px=0.3,
                             focal_px=focal_px, distance_mm=distance_mm)
    uv, w = face.problem.uv.numpy(), face.problem.weight.numpy()
    lm = Landmarks(uv[:, :68], w[:, :68], np.arange(68), "synthetic")
    tracks = SimpleNamespace(uv=uv[:, 68:], weight=w[:, 68:])
    return lm, tracks, face.truth.poses.numpy()


@pytest.mark.parametrize("true_f", [300.0, 900.0])
def test_recovers_the_focal_length_from_a_guess_far_off(true_f):
    lm, tracks, poses = _scene(true_f, true_f)
    guess = intrinsics(1.2 * 384, 384, 384)
    est = estimate_focal(guess, lm, tracks, poses, BAConfig())
    assert est.status == "estimated", est.summary()
    assert est.focal == pytest.approx(true_f, rel=0.05)
    assert est.ba is not None and est.ba.rms_px < 0.6
    trials = est.summary()["trials"]
    assert min(trials, key=lambda t: t[1])[0] == pytest.approx(est.focal)


def test_a_subset_of_the_frames_finds_it_too():
    lm, tracks, poses = _scene(500.0, 500.0)
    est = estimate_focal(intrinsics(1.2 * 384, 384, 384), lm, tracks, poses, BAConfig(),
                         FocalConfig(max_frames=9))
    assert est.status == "estimated" and est.focal == pytest.approx(500.0, rel=0.05)
    with pytest.raises(InputError):
        FocalConfig(max_frames=2)


def test_a_minimum_beyond_the_searched_range_is_not_an_estimate():
    lm, tracks, poses = _scene(900.0, 900.0)
    est = estimate_focal(intrinsics(100.0, 384, 384), lm, tracks, poses, BAConfig())
    assert est.status == "at bound" and not est.ok and np.isnan(est.focal) and est.ba is None


def test_a_cost_that_hardly_changes_is_not_an_estimate():
    lm, tracks, poses = _scene(500.0, 500.0)
    est = estimate_focal(intrinsics(460.0, 384, 384), lm, tracks, poses, BAConfig(),
                         FocalConfig(min_rise=1e6))
    assert est.status == "flat" and not est.ok


def test_a_failed_trial_counts_as_no_minimum_there(monkeypatch):
    """A trial whose bundle adjustment fails (nothing triangulates at an extreme focal
    length) is skipped, not the end of the estimate."""
    from facesfm.solvers import focal
    from facesfm.solvers.problem import SolverError

    real = focal.track_bundle_adjust

    def fragile(K, *a, **k):
        if K[0, 0] < 0.5 * 1.2 * 384:
            raise SolverError("degenerate")
        return real(K, *a, **k)

    monkeypatch.setattr(focal, "track_bundle_adjust", fragile)
    lm, tracks, poses = _scene(500.0, 500.0)
    est = estimate_focal(intrinsics(1.2 * 384, 384, 384), lm, tracks, poses, BAConfig())
    assert est.status == "estimated" and est.focal == pytest.approx(500.0, rel=0.05)
    trials = est.summary()["trials"]
    assert trials[0][1] is None and all(t[1] is not None for t in trials[2:])
    monkeypatch.setattr(focal, "track_bundle_adjust",
                        lambda *a, **k: (_ for _ in ()).throw(SolverError("degenerate")))
    with pytest.raises(InputError, match="failed at every trial"):
        estimate_focal(intrinsics(1.2 * 384, 384, 384), lm, tracks, poses, BAConfig())


def test_no_tracks_is_a_one_line_error():
    lm, tracks, poses = _scene(500.0, 500.0)
    none = SimpleNamespace(uv=tracks.uv, weight=np.zeros_like(tracks.weight))
    with pytest.raises(InputError, match="no photometric tracks"):
        estimate_focal(intrinsics(460.0, 384, 384), lm, none, poses, BAConfig())


def test_scaled_focal_keeps_the_principal_point():
    K = np.array([[400.0, 0, 100.5], [0, 410.0, 80.25], [0, 0, 1]])
    S = scaled_focal(K, 1.5)
    assert S[0, 0] == 600.0 and S[1, 1] == 615.0 and S[0, 2] == 100.5 and S[1, 2] == 80.25
    assert K[0, 0] == 400.0  # not changed in place


@pytest.mark.parametrize("bad", [{"low": 1.5}, {"high": 0.9}, {"grid": 2},
                                 {"tolerance": 0.0}, {"max_tracks": 0},
                                 {"search_px": 0}, {"kernel_px": 0.0}, {"kernel": "cauchy"}])
def test_bad_options_are_refused(bad):
    with pytest.raises(InputError):
        FocalConfig(**bad)


def test_every_trial_uses_the_estimates_kernel_not_the_solves(monkeypatch):
    """The trials' cost differs by hundredths of a percent between focal lengths, so wrong
    matches must lose their pull: each trial's bundle adjustment takes the focal config's
    kernel in place of the one it was given."""
    from facesfm.solvers import focal
    from facesfm.solvers.landmark_ba import KernelKind

    seen = []
    real = focal.track_bundle_adjust

    def spy(K, lm, tracks, dm, poses, ba, *a, **k):
        seen.append((ba.kernel, ba.kernel_px))
        return real(K, lm, tracks, dm, poses, ba, *a, **k)

    monkeypatch.setattr(focal, "track_bundle_adjust", spy)
    lm, tracks, poses = _scene(500.0, 500.0)
    est = estimate_focal(intrinsics(1.2 * 384, 384, 384), lm, tracks, poses,
                         BAConfig(kernel=KernelKind.HUBER, kernel_px=2.0),
                         FocalConfig(max_frames=9))
    # 9 frames: -1.2% (all 25: +0.03%)
    assert est.ok and est.focal == pytest.approx(500.0, rel=0.03)
    assert seen and set(seen) == {(KernelKind.CAUCHY, 0.25)}
