"""Piecewise-linear interpolation of scattered 2D samples (the landmark depth maps)."""

import numpy as np
import pytest
from scipy.interpolate import griddata
from scipy.spatial import QhullError

from facesfm.geometry.multiview import linear_interpolate


def test_it_is_griddata_linear():
    rng = np.random.default_rng(0)
    pts = rng.uniform(100, 300, (200, 2))
    z = rng.uniform(400, 500, 200)
    rr, cc = np.mgrid[80:320:3, 80:320:3]
    q = np.stack([cc.ravel(), rr.ravel()], 1).astype(np.float64)
    ours, ref = linear_interpolate(pts, z, q), griddata(pts, z, q, method="linear")
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))  # NaN outside the hull
    assert np.isnan(ours).any() and np.isfinite(ours).any()
    np.testing.assert_allclose(ours[np.isfinite(ours)], ref[np.isfinite(ref)], atol=1e-9)


def test_a_plane_is_reproduced_and_samples_are_kept():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 50, (30, 2))

    def plane(p):
        return 3.0 * p[:, 0] - 2.0 * p[:, 1] + 7.0

    q = rng.uniform(10, 40, (500, 2))
    out = linear_interpolate(pts, plane(pts), q)
    ok = np.isfinite(out)
    assert ok.mean() > 0.8
    np.testing.assert_allclose(out[ok], plane(q[ok]), atol=1e-9)
    np.testing.assert_allclose(linear_interpolate(pts, plane(pts), pts), plane(pts), atol=1e-9)


def test_points_on_a_line_are_refused():
    with pytest.raises(QhullError):
        linear_interpolate(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), np.ones(3),
                           np.zeros((1, 2)))
