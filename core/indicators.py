"""Technical indicators as polars expressions (TA-Lib definitions).

Every function returns a `pl.Expr` meant to be used inside `.over(<partition>)` (one symbol, or one
contiguous stretch of one symbol): the value at bar t depends only on bars <= t of that partition.
Warm-up bars are null, never a guess, so a rule using them cannot fire before the indicator exists.
"""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl

# Crypto trades around the clock: a year is 365 days of bars, for annualising volatility.
YEAR = timedelta(days=365)


def _bar_index() -> pl.Expr:
    """0, 1, 2, ... within the partition the caller applies `.over()` to."""
    return pl.int_range(pl.len(), dtype=pl.Int64)


def _seeded_ewm(x: pl.Expr, n: int, alpha: float, seed_at: int) -> pl.Expr:
    """TA-Lib style recursive average: null before `seed_at`, the SMA of the last n values of x at `seed_at`
    (TA-Lib's seed), then y_t = (1 - alpha) * y_{t-1} + alpha * x_t.

    `ewm_mean(adjust=False)` starts at its first non-null input, so feeding it the seed there and the raw
    values afterwards gives exactly the TA-Lib recursion, vectorised.
    """
    i = _bar_index()
    seeded = (
        pl.when(i < seed_at)
        .then(None)
        .when(i == seed_at)
        .then(x.rolling_mean(n, min_samples=n))
        .otherwise(x)
    )
    return seeded.ewm_mean(alpha=alpha, adjust=False, min_samples=1)


def ema(x: pl.Expr | str, n: int) -> pl.Expr:
    """TA-Lib EMA: first value at bar n-1 is the SMA of the first n values, then k = 2 / (n + 1)."""
    x = pl.col(x) if isinstance(x, str) else x
    return _seeded_ewm(x, n, 2.0 / (n + 1), n - 1)


def wilder_averages(close: pl.Expr | str = "close", n: int = 14) -> tuple[pl.Expr, pl.Expr]:
    """TA-Lib's average gain and average loss: at bar n the SMA of the first n changes, then Wilder
    smoothing (alpha = 1/n)."""
    close = pl.col(close) if isinstance(close, str) else close
    change = close.diff()
    avg_gain = _seeded_ewm(change.clip(lower_bound=0.0), n, 1.0 / n, n)
    avg_loss = _seeded_ewm((-change).clip(lower_bound=0.0), n, 1.0 / n, n)
    return avg_gain, avg_loss


def rsi_from_averages(avg_gain: pl.Expr, avg_loss: pl.Expr) -> pl.Expr:
    """RSI = 100 * avg_gain / (avg_gain + avg_loss) (TA-Lib's formula); 50 when both are zero
    (flat prices; TA-Lib returns 0 there, which would read as 'oversold' on a halted market)."""
    total = avg_gain + avg_loss
    return pl.when(total > 0).then(100.0 * avg_gain / total).when(total == 0).then(50.0).otherwise(None)


def rsi(close: pl.Expr | str = "close", n: int = 14) -> pl.Expr:
    """Wilder's RSI (TA-Lib). One expression; on big frames compute `wilder_averages` into columns first
    and then `rsi_from_averages` on those columns (the nested form recomputes each average)."""
    return rsi_from_averages(*wilder_averages(close, n))


def true_range(high: str = "high", low: str = "low", close: str = "close") -> pl.Expr:
    """TA-Lib TRANGE: max(high - low, |high - prev close|, |low - prev close|); null on the first bar."""
    prev = pl.col(close).shift(1)
    # max_horizontal skips nulls, so the first bar (no previous close) is nulled explicitly.
    tr = pl.max_horizontal(pl.col(high) - pl.col(low), (pl.col(high) - prev).abs(), (pl.col(low) - prev).abs())
    return pl.when(prev.is_null()).then(None).otherwise(tr)


def atr(n: int = 14, high: str = "high", low: str = "low", close: str = "close") -> pl.Expr:
    """TA-Lib ATR: first value at bar n is the SMA of TR[1..n], then Wilder smoothing (alpha = 1/n)."""
    return _seeded_ewm(true_range(high, low, close), n, 1.0 / n, n)


def rolling_high(n: int, col: str = "high", *, include_current: bool = True) -> pl.Expr:
    """Max of `col` over the last n bars (ending at t, or at t-1 when include_current is False)."""
    x = pl.col(col) if include_current else pl.col(col).shift(1)
    return x.rolling_max(n, min_samples=n)


def rolling_low(n: int, col: str = "low", *, include_current: bool = True) -> pl.Expr:
    x = pl.col(col) if include_current else pl.col(col).shift(1)
    return x.rolling_min(n, min_samples=n)


def volume_average(n: int = 20, col: str = "volume") -> pl.Expr:
    """Mean volume of the previous n bars, EXCLUDING the current one (SPEC 2), so a surge is compared
    with what came before it."""
    return pl.col(col).shift(1).rolling_mean(n, min_samples=n)


def log_return(close: str = "close") -> pl.Expr:
    return (pl.col(close) / pl.col(close).shift(1)).log()


def realised_volatility(n: int, bar: timedelta, close: str = "close") -> pl.Expr:
    """Sample std (ddof=1) of the last n one-bar log returns, annualised by sqrt(bars per 365-day year)."""
    per_year = YEAR / bar
    return log_return(close).rolling_std(n, min_samples=n, ddof=1) * math.sqrt(per_year)
