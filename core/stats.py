"""Rates with sample counts and percentile-bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drirl.components import Metric

# Resampled means are drawn in chunks of at most this many indices, so a large sample does
# not allocate a (resamples x n) index matrix at once.
_MAX_CHUNK_ELEMENTS = 4_000_000


def _as_array(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(
            "values is empty, but a confidence interval needs at least one value"
        )
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise ValueError(
            f"values contains a non-finite number ({bad}). Remove NaN and infinite values first"
        )
    return array


def bootstrap_ci(
    values: Sequence[float],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Compute a percentile-bootstrap confidence interval of the mean of ``values``.

    The interval is deterministic for a given ``seed``. One value gives ``(v, v)``. An empty
    sequence or a non-finite value raises ValueError, because no interval describes them.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(
            f"confidence must be in the open interval (0, 1), got {confidence}"
        )
    array = _as_array(values)
    n = array.size
    if n == 1:
        return float(array[0]), float(array[0])

    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows_per_chunk):
        stop = min(resamples, start + rows_per_chunk)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = array[indices].mean(axis=1)

    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def rate_metric(
    flags: Sequence[bool | float],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Metric:
    """Return the mean of ``flags`` as a Metric with its count and bootstrap interval.

    ``flags`` are booleans or numbers (1.0 for a hit, 0.0 for a miss). An empty sequence raises
    ValueError.
    """
    array = _as_array([float(flag) for flag in flags])
    low, high = bootstrap_ci(
        array, resamples=resamples, confidence=confidence, seed=seed
    )
    return Metric(
        value=float(array.mean()), n=int(array.size), ci_low=low, ci_high=high
    )
