"""Statistics the studies share: Spearman correlation and paired percentile-bootstrap intervals."""

from __future__ import annotations

import numpy as np


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 values or a
    constant input."""
    from scipy.stats import rankdata

    a, b = rankdata(np.asarray(y_true, float)), rankdata(np.asarray(y_pred, float))
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def bootstrap_draws(statistic, n: int, n_boot: int = 1000, seed: int = 0,
                    batch: int | None = None) -> np.ndarray:
    """``statistic`` on ``n_boot`` resamples (with replacement) of ``n`` items, the same resamples
    for every quantity it returns (paired): ``statistic(idx)`` takes a (b x n) index array and
    returns (b x m) values; the result is (n_boot x m)."""
    if n < 1:
        raise ValueError("nothing to resample")
    rng = np.random.default_rng(seed)
    batch = batch or max(1, 2_000_000 // n)
    return np.concatenate([np.asarray(statistic(rng.integers(0, n, (min(batch, n_boot - done), n))))
                           for done in range(0, n_boot, batch)])


def percentile_interval(draws, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite ``draws`` (NaN, NaN when none is finite)."""
    x = np.asarray(draws, float)
    x = x[np.isfinite(x)]
    if not len(x):
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(x, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
