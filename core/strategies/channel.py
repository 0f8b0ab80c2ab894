"""Channel (range) trading (SPEC 2): buy near the support of a horizontal range that has held.

Over the last `window_bars` bars (the signal bar included): support = min low, resistance = max high,
width = (resistance - support) / support in [min_width, max_width]. A support touch is a bar whose low is
within touch_tolerance x (resistance - support) of the support (resistance: high within that distance of
the resistance); touches are counted greedily from the oldest bar of the window, and a touch counts only
if it comes >= touch_separation_bars after the previous counted one. Support and resistance each need
>= min_touches_each and together >= min_touches_total (SPEC, literally). Entry (market, filled at the
next bar) when close is in the bottom entry_zone of the range; target the lower edge of the top
target_zone; stop stop_below_support under support; only if reward/risk >= min_reward_risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from core import indicators as ind
from core.domain import StrategyName
from core.settings import ChannelSettings, StrategySettings
from core.strategies.base import (
    COMMON_FEATURES,
    MAX_BRIDGED_GAP,
    PARTITION,
    SEGMENT,
    detection_frame,
    plan_exprs,
)

_CHUNK_ROWS = 8192  # bounds the (rows x window) window copy to ~5 MB: cache-sized, no fresh pages per call


def count_separated_touches(
    values: np.ndarray, thresholds: np.ndarray, window: int, separation: int, *, below: bool
) -> np.ndarray:
    """For every bar t with a finite threshold (its window of `window` bars ending at t lies in one
    stretch), count the bars of that window whose value is <= threshold (below=True) or >= threshold,
    keeping only touches >= `separation` bars after the previously counted one. -1 where not computed.

    Vectorised across bars: the only Python loop is over the window's positions (72 by default).
    """
    n = values.shape[0]
    counts = np.full(n, -1, dtype=np.int64)
    if n < window:
        return counts
    windows = sliding_window_view(values, window)  # row r holds values[r : r + window] (a view, no copy)
    # Only bars with a finite threshold get a count (NaN: -1), so only their windows are compared; that
    # is about a quarter of the bars on the shipped 1h data.
    wanted = np.flatnonzero(np.isfinite(thresholds[window - 1 :])) + window - 1
    for lo in range(0, wanted.size, _CHUNK_ROWS):
        ends = wanted[lo : lo + _CHUNK_ROWS]
        win = windows[ends - (window - 1)]  # a copy of just these windows
        thr = thresholds[ends, None]
        touch = win <= thr if below else win >= thr
        raw = touch.sum(axis=1)
        counts[ends] = raw  # with 0 or 1 touch the separation rule changes nothing
        many = np.flatnonzero(raw > 1)
        if many.size == 0:
            continue
        touch = touch[many]
        count = np.zeros(many.size, dtype=np.int64)
        last = np.full(many.size, -separation, dtype=np.int64)
        for j in range(window):
            hit = touch[:, j] & (j - last >= separation)
            count += hit
            last = np.where(hit, j, last)
        counts[ends[many]] = count
    return counts


@dataclass(frozen=True)
class ChannelStrategy:
    config: ChannelSettings
    rsi_period: int = 14
    atr_period: int = 14
    max_gap: timedelta = MAX_BRIDGED_GAP
    name: StrategyName = StrategyName.CHANNEL
    feature_names: tuple[str, ...] = (
        "width_pct",
        "range_position",
        "touches_support",
        "touches_resistance",
        "reward_risk",
        *COMMON_FEATURES,
    )

    @classmethod
    def from_settings(cls, s: StrategySettings) -> ChannelStrategy:
        return cls(s.channel, s.rsi_period, s.atr_period, s.max_bridged_gap)

    @property
    def frame_key(self) -> tuple[timedelta, int, int]:
        return (self.max_gap, self.rsi_period, self.atr_period)

    def detect(self, bars: pl.DataFrame) -> pl.DataFrame:
        return self.detect_on(*detection_frame(bars, *self.frame_key))

    def detect_on(self, tf: str, frame: pl.LazyFrame) -> pl.DataFrame:
        c = self.config
        w = c.window_bars
        out = frame.with_columns(
            ind.rolling_low(w).over(PARTITION).alias("_support"),
            ind.rolling_high(w).over(PARTITION).alias("_resistance"),
        ).collect()
        span = pl.col("_resistance") - pl.col("_support")
        tol = c.touch_tolerance * span
        # Touches are counted only where they can decide something: a range of valid width with the
        # close in its entry zone (null elsewhere): about a quarter of the bars.
        candidate = (span / pl.col("_support")).is_between(c.min_width, c.max_width) & (
            pl.col("close") <= pl.col("_support") + c.entry_zone * span
        )
        thresholds = out.select(
            pl.when(candidate).then(pl.col("_support") + tol).fill_null(np.nan).alias("s"),
            pl.when(candidate).then(pl.col("_resistance") - tol).fill_null(np.nan).alias("r"),
        )
        sep = c.touch_separation_bars
        ts_count = count_separated_touches(
            out.get_column("low").to_numpy(), thresholds.get_column("s").to_numpy(), w, sep, below=True
        )
        tr_count = count_separated_touches(
            out.get_column("high").to_numpy(), thresholds.get_column("r").to_numpy(), w, sep, below=False
        )
        close = pl.col("close")
        target = pl.col("_resistance") - c.target_zone * span
        stop = pl.col("_support") * (1 - c.stop_below_support)
        out = out.with_columns(
            pl.Series("touches_support", ts_count).replace(-1, None).cast(pl.Float64),
            pl.Series("touches_resistance", tr_count).replace(-1, None).cast(pl.Float64),
            (span / pl.col("_support")).alias("width_pct"),
            pl.when(span > 0).then((close - pl.col("_support")) / span).alias("range_position"),
            (target / close - 1).alias("_tp"),
            (1 - stop / close).alias("_sl"),
        ).with_columns((pl.col("_tp") / pl.col("_sl")).alias("reward_risk"))
        t_s, t_r = pl.col("touches_support"), pl.col("touches_resistance")
        signal = (
            pl.col("width_pct").is_between(c.min_width, c.max_width)
            & (t_s >= c.min_touches_each)
            & (t_r >= c.min_touches_each)
            & (t_s + t_r >= c.min_touches_total)
            & (pl.col("range_position") <= c.entry_zone)
            & (pl.col("_tp") > 0)
            & (pl.col("reward_risk") >= c.min_reward_risk)
        )
        return out.with_columns(
            signal.fill_null(False).alias("signal"),
            *plan_exprs(
                entry_type="market",
                tp_pct=pl.col("_tp"),
                sl_pct=pl.col("_sl"),
                max_hold=c.max_hold,
                support=pl.col("_support"),
                resistance=pl.col("_resistance"),
            ),
        ).drop(SEGMENT, "_support", "_resistance", "_tp", "_sl")
