"""DCA dip buyer (SPEC 2): a sharp drop from the recent high into oversold RSI, bought with a limit grid.

drop = (max high over the last `lookback` - close) / that max >= min_drop AND RSI(14) < rsi_max.
The lookback window ends at the signal bar and includes it (4h on 1h bars = bars t-3 .. t).
Model features: drop_pct, volume_ratio and dist_ema (close / EMA(dca.ema_period) - 1, trend context).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from core import indicators as ind
from core.domain import StrategyName, bars_in
from core.settings import DcaSettings, StrategySettings
from core.strategies.base import (
    COMMON_FEATURES,
    MAX_BRIDGED_GAP,
    PARTITION,
    SEGMENT,
    detection_frame,
    plan_exprs,
)


@dataclass(frozen=True)
class DcaStrategy:
    config: DcaSettings
    rsi_period: int = 14
    atr_period: int = 14
    volume_avg_bars: int = 20
    max_gap: timedelta = MAX_BRIDGED_GAP
    name: StrategyName = StrategyName.DCA
    feature_names: tuple[str, ...] = ("drop_pct", "volume_ratio", "dist_ema", *COMMON_FEATURES)

    @classmethod
    def from_settings(cls, s: StrategySettings) -> DcaStrategy:
        return cls(s.dca, s.rsi_period, s.atr_period, s.volume_avg_bars, s.max_bridged_gap)

    @property
    def frame_key(self) -> tuple[timedelta, int, int]:
        return (self.max_gap, self.rsi_period, self.atr_period)

    def detect(self, bars: pl.DataFrame) -> pl.DataFrame:
        return self.detect_on(*detection_frame(bars, *self.frame_key))

    def detect_on(self, tf: str, out: pl.LazyFrame) -> pl.DataFrame:
        c = self.config
        lookback = bars_in(c.lookback, tf)
        max_high = ind.rolling_high(lookback)
        out = out.with_columns(
            ((max_high - pl.col("close")) / max_high).over(PARTITION).alias("drop_pct"),
            (pl.col("volume") / ind.volume_average(self.volume_avg_bars)).over(PARTITION).alias("volume_ratio"),
            (pl.col("close") / ind.ema("close", c.ema_period) - 1).over(PARTITION).alias("dist_ema"),
        )
        return out.with_columns(
            ((pl.col("drop_pct") >= c.min_drop) & (pl.col("rsi") < c.rsi_max)).fill_null(False).alias("signal"),
            *plan_exprs(
                entry_type="limit",
                tp_pct=c.take_profit,
                sl_pct=c.stop_loss,
                max_hold=c.max_hold,
                expiry=c.grid_expiry,
                grid_spacing=c.grid_spacing,
                grid_levels=c.grid_levels,
            ),
        ).drop(SEGMENT).collect()
