import itertools

import numpy as np
import pytest

from facesfm.eval.detector import uncertainty_stats


def test_spreads_that_order_the_errors_score_one_and_rising_quartiles():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.5, 4.0, 400)
    err = 1.3 * sigma  # the spread says everything about the error
    st = uncertainty_stats(err, sigma)
    assert st["sigma_error_spearman"] == pytest.approx(1.0)
    q = st["error_by_sigma_quartile"]
    assert len(q) == 4 and all(a < b for a, b in itertools.pairwise(q))
    assert st["sigma_median_px"] == pytest.approx(np.median(sigma))
    # errors falling with sigma: -1, quartiles falling
    st = uncertainty_stats(5.0 - sigma, sigma)
    assert st["sigma_error_spearman"] == pytest.approx(-1.0)
    assert st["error_by_sigma_quartile"][0] > st["error_by_sigma_quartile"][3]


def test_spreads_unrelated_to_the_errors_score_about_zero():
    rng = np.random.default_rng(1)
    st = uncertainty_stats(rng.exponential(2.0, 20000), rng.uniform(0.5, 4.0, 20000))
    assert abs(st["sigma_error_spearman"]) < 0.03
    q = st["error_by_sigma_quartile"]
    assert max(q) - min(q) < 0.15  # every quartile near the mean error, 2.0


def test_tied_errors_take_their_average_rank():
    # errors in two levels, split exactly at the median spread: with average ranks for the
    # ties the rank correlation of a balanced step with a uniform ranking is sqrt(3) / 2;
    # breaking the ties in any order other than sigma's would give a different figure
    sigma = np.random.default_rng(2).permutation(np.linspace(0.5, 4.0, 1000))
    err = np.where(sigma > np.median(sigma), 2.0, 1.0)
    st = uncertainty_stats(err, sigma)
    assert st["sigma_error_spearman"] == pytest.approx(np.sqrt(3) / 2, abs=2e-3)
    assert st["error_by_sigma_quartile"] == [1.0, 1.0, 2.0, 2.0]
    # no order to agree with: 0, not NaN
    assert uncertainty_stats(np.ones(10), sigma[:10])["sigma_error_spearman"] == 0.0


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        uncertainty_stats(np.ones(5), np.ones(6))
    with pytest.raises(ValueError, match="at least 4"):
        uncertainty_stats(np.ones(3), np.ones(3))
