"""Swing detector: close > max high of the previous 20 bars AND volume >= 2x the previous-20 average
AND close > EMA(50), on real and hand-built candles."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from core.domain import OrderType
from core.settings import load_settings
from core.strategies.base import checked_detect
from core.strategies.registry import detect_all, signals_from_frame
from core.strategies.swing import SwingStrategy
from tests.strategy_candles import H, bars_from_closes, real_candles, utc
from tests.test_indicators import ref_ema


@pytest.fixture(scope="module")
def swing() -> SwingStrategy:
    return SwingStrategy.from_settings(load_settings().strategy)


def _breakout(last_volume: float, *, n: int = 60) -> pl.DataFrame:
    """n bars rising 0.1 per bar from 100 at volume 10, then one bar closing 2 above at `last_volume`."""
    closes = [100.0 + 0.1 * i for i in range(n)] + [100.0 + 0.1 * (n - 1) + 2.0]
    bars = bars_from_closes(closes)
    vols = [10.0] * n + [last_volume]
    return bars.with_columns(pl.Series("volume", vols))


def test_swing_when_real_btc_breakout_then_fires_at_known_bar_only(swing):
    # Arrange: BTC 2020-12-31 00:00 .. 2021-01-06 06:00 (151 real hours; EMA(50) warm after 50)
    bars = real_candles(["BTC"], utc(2020, 12, 31), utc(2021, 1, 6, 6))
    out = checked_detect(swing, bars)
    t = utc(2021, 1, 6, 4)
    prev20 = bars.filter(pl.col("ts").is_between(t - 20 * H, t - H))
    # Resistance: max high of 2021-01-05 08:00 .. 2021-01-06 03:00 = 34360.00 (01-05 22:00).
    assert prev20.height == 20 and prev20.get_column("high").max() == 34360.0
    row = out.filter(pl.col("ts") == t).row(0, named=True)
    # close 35325.91 > 34360.00: breakout = 35325.91 / 34360 - 1 = 0.0281
    assert row["close"] == 35325.91 and row["breakout_pct"] == pytest.approx(35325.91 / 34360.0 - 1)
    # volume 12735.42 vs mean of the previous 20 volumes (4399.9) -> 2.894x >= 2
    vol_avg = sum(prev20.get_column("volume").to_list()) / 20
    assert row["volume_ratio"] == pytest.approx(row["volume"] / vol_avg) and 2.89 < row["volume_ratio"] < 2.90
    # EMA(50) from the loop reference: close is 8.3% above it
    ema = ref_ema(bars.get_column("close").to_list(), 50)[bars.get_column("ts").to_list().index(t)]
    assert row["dist_ema"] == pytest.approx(35325.91 / ema - 1) and row["dist_ema"] > 0
    assert row["signal"] is True
    # 2021-01-05 18:00 breaks out too (close 33372.84, 1.58% above its resistance, above EMA) but volume
    # 6647.01 is only 1.52x its average -> no signal.
    r18 = out.filter(pl.col("ts") == utc(2021, 1, 5, 18)).row(0, named=True)
    assert r18["breakout_pct"] > 0 and r18["dist_ema"] > 0 and 1.51 < r18["volume_ratio"] < 1.52
    assert r18["signal"] is False
    fired = out.filter(pl.col("signal") & (pl.col("ts") >= utc(2021, 1, 5))).get_column("ts").to_list()
    assert fired == [t]


def test_swing_when_volume_exactly_2x_then_fires(swing):
    # previous 20 volumes all 10 -> average 10; last volume 20 = exactly 2x
    last = swing.detect(_breakout(20.0)).row(-1, named=True)
    assert last["volume_ratio"] == 2.0 and last["breakout_pct"] > 0 and last["dist_ema"] > 0
    assert last["signal"] is True


def test_swing_when_volume_just_below_2x_then_no_signal(swing):
    assert swing.detect(_breakout(19.99)).row(-1, named=True)["signal"] is False


def test_swing_when_close_equals_resistance_then_no_signal(swing):
    # close must be strictly above the previous highs: last close = previous max high
    bars = _breakout(50.0)
    prev_max = bars.get_column("high")[-21:-1].max()
    bars = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 60).then(prev_max).otherwise(pl.col(c)).alias(c) for c in ("high", "close")
    )
    assert swing.detect(bars).row(-1, named=True)["signal"] is False


def test_swing_when_close_below_ema50_then_no_signal(swing):
    # 60 bars falling 130 -> 100.5, 20 flat bars at 100, then a breakout to 101 on 3x volume: above the
    # 20-bar resistance (100) but the EMA(50) still carries the decline (> 101).
    closes = [130.0 - 0.5 * i for i in range(60)] + [100.0] * 20 + [101.0]
    bars = bars_from_closes(closes).with_columns(pl.Series("volume", [10.0] * 80 + [30.0]))
    last = swing.detect(bars).row(-1, named=True)
    assert last["breakout_pct"] > 0 and last["volume_ratio"] == 3.0 and last["dist_ema"] < 0
    assert last["signal"] is False


def test_swing_when_breakout_right_after_gap_over_24h_then_no_signal(swing):
    bars = _breakout(20.0)
    ts = bars.get_column("ts").to_list()
    gapped = bars.with_columns(pl.Series("ts", ts[:-1] + [ts[-1] + timedelta(hours=30)]))
    assert swing.detect(gapped).get_column("signal").sum() == 0


def test_swing_when_signal_then_market_plan_with_trailing_stop():
    rows = detect_all(_breakout(20.0), load_settings()).filter(pl.col("strategy") == "swing")
    (sig,) = signals_from_frame(rows)
    p = sig.plan
    assert p.entry_type is OrderType.MARKET and p.entry_prices == (sig.price,)
    assert (p.take_profit_pct, p.stop_loss_pct, p.trailing_stop_pct) == (0.15, 0.05, 0.07)
    assert p.entry_expiry is None and p.range_support is None
