"""Tests for the false-reject-rate threshold of mvtec_tutorial.thresholds: ranks, a simulation, the region rule."""
import math

import numpy as np
import pytest
from scipy import stats

from mvtec_tutorial import metrics, thresholds

N_SIMULATIONS = 4000


@pytest.mark.parametrize(("n_validation", "target_rate"), [(12, 0.0), (20, 0.1), (50, 0.05), (30, 0.2)])
@pytest.mark.parametrize("distribution", [stats.expon(), stats.norm(loc=3, scale=0.5), stats.pareto(b=3)])
def test_bound_covers_the_true_false_reject_rate_in_simulation(n_validation, target_rate, distribution):
    """Draw validation scores, choose the threshold, compare the bound with the rate 1 - F(t) of the true F."""
    rng = np.random.default_rng(n_validation)
    draws = distribution.rvs(size=(N_SIMULATIONS, n_validation), random_state=rng)
    covered = 0
    for scores in draws:
        choice = thresholds.false_reject_threshold(scores, target_rate=target_rate, confidence=0.9)
        covered += distribution.sf(choice.threshold) <= choice.upper_bound
    coverage, monte_carlo_error = covered / N_SIMULATIONS, math.sqrt(0.9 * 0.1 / N_SIMULATIONS)
    # The bound is exact for continuous scores: coverage is 0.9, not merely at least 0.9.
    assert abs(coverage - 0.9) < 4 * monte_carlo_error


def test_rank_chosen_and_reachable_rates_listed():
    values = np.random.default_rng(0).permutation(np.arange(1.0, 11.0))
    choice = thresholds.false_reject_threshold(values, target_rate=0.25)  # 2.5 of 10 -> 2 allowed
    assert (choice.threshold, choice.n_rejected, choice.rate) == (8.0, 2, 0.2)
    np.testing.assert_allclose(choice.reachable_rates, np.arange(10) / 10)
    assert choice.upper_bound == pytest.approx(stats.beta.ppf(0.95, 3, 8))


def test_without_rejection_the_bound_has_its_closed_form():
    # P(all n normal statistics below t) = F(t)^n: the bound solves (1 - p)^n = 1 - confidence.
    for n in (1, 12, 299):
        assert thresholds.false_reject_bound(n, 0) == pytest.approx(1 - 0.05 ** (1 / n))
    assert thresholds.false_reject_bound(299, 0) < 0.01 < thresholds.false_reject_bound(298, 0)


def test_ties_count_what_lies_above():
    choice = thresholds.false_reject_threshold(np.array([1.0, 2.0, 2.0, 2.0]), target_rate=0.5)
    assert choice.threshold == 2.0 and choice.n_rejected == 0
    assert "0 of 4 validation images" in choice.describe()


@pytest.mark.parametrize("seed", range(3))
def test_per_image_region_thresholds_reproduce_the_region_rule(seed):
    maps = np.random.default_rng(seed).random((6, 12, 12)).astype(np.float32)
    per_image = thresholds.per_image_region_thresholds(maps, 4)
    assert per_image.max() == thresholds.min_defect_area_threshold(maps, 4)
    for t in np.unique(per_image):
        np.testing.assert_array_equal(metrics.classify(maps, t, min_defect_area=4), per_image > t)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(values=np.array([]), target_rate=0.1), "non-empty"),
    (dict(values=np.array([1.0, np.nan]), target_rate=0.1), "finite"),
    (dict(values=np.ones(3), target_rate=1.0), "target_rate"),
])
def test_bad_input_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        thresholds.false_reject_threshold(**kwargs)


def test_a_threshold_below_every_image_promises_nothing():
    with pytest.raises(ValueError, match="n_rejected"):
        thresholds.false_reject_bound(5, 5)
