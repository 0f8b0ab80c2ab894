"""Swing breakout (SPEC 2): close above the previous bars' resistance on a volume surge, in an uptrend.

close > max high of the previous `resistance_bars` bars (the signal bar excluded) AND volume >=
volume_surge x mean volume of the previous 20 bars AND close > EMA(ema_period). Market entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from core import indicators as ind
from core.domain import StrategyName
from core.settings import StrategySettings, SwingSettings
from core.strategies.base import (
    COMMON_FEATURES,
    MAX_BRIDGED_GAP,
    PARTITION,
    SEGMENT,
    detection_frame,
    plan_exprs,
)


@dataclass(frozen=True)
class SwingStrategy:
    config: SwingSettings
    rsi_period: int = 14
    atr_period: int = 14
    volume_avg_bars: int = 20
    max_gap: timedelta = MAX_BRIDGED_GAP
    name: StrategyName = StrategyName.SWING
    feature_names: tuple[str, ...] = ("breakout_pct", "volume_ratio", "dist_ema", *COMMON_FEATURES)

    @classmethod
    def from_settings(cls, s: StrategySettings) -> SwingStrategy:
        return cls(s.swing, s.rsi_period, s.atr_period, s.volume_avg_bars, s.max_bridged_gap)

    @property
    def frame_key(self) -> tuple[timedelta, int, int]:
        return (self.max_gap, self.rsi_period, self.atr_period)

    def detect(self, bars: pl.DataFrame) -> pl.DataFrame:
        return self.detect_on(*detection_frame(bars, *self.frame_key))

    def detect_on(self, tf: str, frame: pl.LazyFrame) -> pl.DataFrame:
        out = frame
        c = self.config
        out = out.with_columns(
            ind.rolling_high(c.resistance_bars, include_current=False).over(PARTITION).alias("_resistance"),
            ind.volume_average(self.volume_avg_bars).over(PARTITION).alias("_vol_avg"),
            ind.ema("close", c.ema_period).over(PARTITION).alias("_ema"),
        ).with_columns(
            (pl.col("close") / pl.col("_resistance") - 1).alias("breakout_pct"),
            (pl.col("volume") / pl.col("_vol_avg")).alias("volume_ratio"),
            (pl.col("close") / pl.col("_ema") - 1).alias("dist_ema"),
        )
        signal = (
            (pl.col("close") > pl.col("_resistance"))
            # compared as volume >= k * average (not the ratio) so "exactly 2x" is exact in floats
            & (pl.col("_vol_avg") > 0)
            & (pl.col("volume") >= c.volume_surge * pl.col("_vol_avg"))
            & (pl.col("close") > pl.col("_ema"))
        )
        return out.with_columns(
            signal.fill_null(False).alias("signal"),
            *plan_exprs(
                entry_type="market",
                tp_pct=c.take_profit,
                sl_pct=c.stop_loss,
                trailing_pct=c.trailing_stop,
                max_hold=c.max_hold,
            ),
        ).drop(SEGMENT, "_resistance", "_vol_avg", "_ema").collect()
