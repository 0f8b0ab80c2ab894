"""How sure we are: block-bootstrap confidence intervals and the Deflated Sharpe Ratio (pure numpy/scipy).

- Bootstrap: circular moving-block bootstrap (Politis & Romano 1992). Returns and time-ordered events are
  serially dependent (overlapping trades, volatility clusters), so whole blocks of consecutive
  observations are resampled; `block_len=1` is the ordinary iid bootstrap. Intervals are percentile
  intervals. The default block length is n^(1/3) (the usual rate for the block bootstrap of a mean).
- Deflated Sharpe Ratio (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio: Correcting for
  Selection Bias, Backtest Overfitting and Non-Normality", JPM 40(5)): the Probabilistic Sharpe Ratio
  of the observed Sharpe against the Sharpe the best of `n_trials` unskilled configurations would show,

      SR0 = sqrt(V[SR]) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e))),   g = Euler-Mascheroni
      DSR = Z( (SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2) )

  with SR, SR0 and V[SR] per observation (not annualised) and kurt the raw (non-excess) kurtosis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class Interval:
    point: float
    low: float
    high: float
    n_boot: int  # replicates the interval was taken from (those where the statistic was defined)


def default_block_len(n: int) -> int:
    return max(1, round(n ** (1 / 3)))


def block_bootstrap_indices(n: int, block_len: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) row indices: ceil(n / block_len) circular blocks of consecutive rows per replicate."""
    if n < 1 or block_len < 1 or n_boot < 1:
        raise ValueError(f"need n, block_len, n_boot >= 1 (got {n}, {block_len}, {n_boot})")
    block_len = min(block_len, n)
    k = -(-n // block_len)
    starts = rng.integers(0, n, size=(n_boot, k))
    idx = (starts[:, :, None] + np.arange(block_len)[None, None, :]) % n
    return idx.reshape(n_boot, k * block_len)[:, :n]


def bootstrap_interval(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    block_len: int | None = None,
    seed: int = 0,
) -> Interval:
    """Percentile (1 - alpha) interval of statistic(*arrays) under the block bootstrap (arrays in time order).

    Replicates where the statistic is undefined (nan, e.g. an AUC resample with one class) are dropped.
    """
    cols = [np.asarray(a) for a in arrays]
    n = cols[0].shape[0]
    if any(c.shape[0] != n for c in cols):
        raise ValueError("arrays must have the same length")
    if n < 2:
        raise ValueError(f"need at least 2 observations, got {n}")
    idx = block_bootstrap_indices(n, block_len or default_block_len(n), n_boot, np.random.default_rng(seed))
    reps = np.array([statistic(*(c[i] for c in cols)) for i in idx], dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    point = float(statistic(*cols))
    if reps.size == 0:
        return Interval(point, math.nan, math.nan, 0)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Interval(point, float(lo), float(hi), int(reps.size))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; nan with one class."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(p)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def stratified_auc(y: np.ndarray, p: np.ndarray, group: np.ndarray) -> float:
    """AUC over (positive, negative) pairs of the same group only: the pair-count-weighted mean of the
    groups' AUCs. Pooling strategies with different base rates in one AUC would reward telling the
    strategies apart, not ranking trades; nan when no group has both classes."""
    num = den = 0.0
    for gv in np.unique(group):
        m = group == gv
        a = auc(y[m], p[m])
        if math.isfinite(a):
            pairs = float(np.asarray(y[m]).astype(bool).sum()) * float((~np.asarray(y[m]).astype(bool)).sum())
            num, den = num + a * pairs, den + pairs
    return num / den if den else math.nan


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def sharpe(returns: np.ndarray) -> float:
    """Mean over standard deviation (ddof=1) per observation; nan when the returns do not vary."""
    r = np.asarray(returns, dtype=np.float64)
    sd = r.std(ddof=1) if r.size > 1 else 0.0
    return float(r.mean() / sd) if sd > 0 else math.nan


def auc_interval(y: np.ndarray, p: np.ndarray, **kw: object) -> Interval:
    return bootstrap_interval(auc, y, p, **kw)  # type: ignore[arg-type]


def brier_interval(y: np.ndarray, p: np.ndarray, **kw: object) -> Interval:
    return bootstrap_interval(brier, y, p, **kw)  # type: ignore[arg-type]


def sharpe_interval(returns: np.ndarray, periods_per_year: float = 1.0, **kw: object) -> Interval:
    """Block-bootstrap interval of the Sharpe ratio, scaled by sqrt(periods_per_year)."""
    iv = bootstrap_interval(sharpe, returns, **kw)  # type: ignore[arg-type]
    k = math.sqrt(periods_per_year)
    return Interval(iv.point * k, iv.low * k, iv.high * k, iv.n_boot)


def probabilistic_sharpe_ratio(sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurt: float = 3.0) -> float:
    """P(true SR > sr_benchmark) given the observed per-period SR over n_obs returns (Bailey & LdP 2012)."""
    if n_obs < 2:
        raise ValueError(f"need n_obs >= 2, got {n_obs}")
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if var <= 0:
        raise ValueError(f"skew {skew} / kurtosis {kurt} with SR {sr} give a non-positive variance")
    return float(stats.norm.cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var)))


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """SR0: the expected maximum per-period Sharpe of n_trials unskilled configurations (0 for one trial)."""
    if n_trials < 1:
        raise ValueError(f"need n_trials >= 1, got {n_trials}")
    if n_trials == 1:
        return 0.0
    z = stats.norm.ppf
    return math.sqrt(sr_variance) * (
        (1 - EULER_GAMMA) * float(z(1 - 1 / n_trials)) + EULER_GAMMA * float(z(1 - 1 / (n_trials * math.e)))
    )


def deflated_sharpe_ratio(
    sr: float, n_obs: int, n_trials: int, sr_variance: float, skew: float = 0.0, kurt: float = 3.0
) -> float:
    """DSR: PSR against the expected best Sharpe of n_trials tries (all Sharpe values per period)."""
    return probabilistic_sharpe_ratio(sr, expected_max_sharpe(n_trials, sr_variance), n_obs, skew, kurt)


def deflated_sharpe_from_returns(returns: np.ndarray, n_trials: int, sr_variance: float | None = None) -> float:
    """DSR of a return series; skew and raw kurtosis from the series. Without the trials' Sharpe variance,
    V[SR] defaults to the estimation variance of one Sharpe under normality, 1/(T-1) (each trial no better
    than noise)."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    sr = sharpe(r)
    if not math.isfinite(sr):
        return math.nan
    var = sr_variance if sr_variance is not None else 1.0 / (n - 1)
    return deflated_sharpe_ratio(sr, n, n_trials, var, float(stats.skew(r)), float(stats.kurtosis(r, fisher=False)))


def uncertainty_metrics(
    y: np.ndarray,
    p: np.ndarray,
    returns: np.ndarray | None,
    n_trials: int,
    periods_per_year: float,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """What to log beside the OOS metrics: AUC, Brier and (annualised) Sharpe with 95% block-bootstrap
    intervals, and the DSR given the configurations tried. Arrays in time order."""
    out: dict[str, float] = {}
    for name, fn in (("auc", auc_interval), ("brier", brier_interval)):
        iv = fn(y, p, n_boot=n_boot, seed=seed)
        out |= {name: iv.point, f"{name}_ci_low": iv.low, f"{name}_ci_high": iv.high}
    if returns is not None and np.asarray(returns).size > 2:
        iv = sharpe_interval(returns, periods_per_year, n_boot=n_boot, seed=seed)
        out |= {"sharpe": iv.point, "sharpe_ci_low": iv.low, "sharpe_ci_high": iv.high}
        out |= {"deflated_sharpe": deflated_sharpe_from_returns(returns, n_trials), "n_trials": float(n_trials)}
    return out
