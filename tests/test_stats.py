import math

import pytest

from drirl.stats import bootstrap_ci, rate_metric


def test_bootstrap_all_ones():
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)


def test_bootstrap_single_value():
    assert bootstrap_ci([0.3]) == (0.3, 0.3)


def test_bootstrap_contains_mean():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    low, high = bootstrap_ci(values)
    assert low <= 0.7
    assert high >= 0.7


def test_bootstrap_interval_inside_range():
    low, high = bootstrap_ci([0, 1] * 10)
    assert low >= 0.0
    assert high <= 1.0
    assert low < high


def test_bootstrap_width_shrinks_with_n():
    small = bootstrap_ci([0, 1] * 5)
    large = bootstrap_ci([0, 1] * 500)
    assert large[1] - large[0] < small[1] - small[0]


def test_bootstrap_same_seed_same_interval():
    values = [0.1, 0.5, 0.9, 0.3, 0.7]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)


def test_bootstrap_seed_changes_interval():
    values = [0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.8]
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


def test_bootstrap_higher_confidence_wider():
    values = [0, 1, 1, 0, 1] * 4
    narrow = bootstrap_ci(values, confidence=0.5)
    wide = bootstrap_ci(values, confidence=0.99)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


def test_bootstrap_large_sample():
    # n large enough that the resampled means are drawn in several chunks.
    low, high = bootstrap_ci([0, 1] * 5000, resamples=500)
    assert 0.48 < low < 0.5
    assert 0.5 < high < 0.52


def test_bootstrap_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])


def test_bootstrap_nan_raises():
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([0.5, math.nan])


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_bootstrap_bad_confidence(confidence):
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0, 1], confidence=confidence)


def test_bootstrap_bad_resamples():
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_ci([0, 1], resamples=0)


def test_rate_metric_value_and_n():
    metric = rate_metric([True, False, True, True])
    assert metric.value == 0.75
    assert metric.n == 4


def test_rate_metric_interval():
    metric = rate_metric([True, False, True, True])
    assert metric.ci_low <= metric.value
    assert metric.ci_high >= metric.value


def test_rate_metric_accepts_floats():
    assert rate_metric([1.0, 0.0]).value == 0.5


def test_rate_metric_empty_raises():
    with pytest.raises(ValueError):
        rate_metric([])
