"""DCA detector: drop from the 4h max high >= 5% AND RSI(14) < 30, on real and hand-built candles."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from core.domain import OrderType, StrategyName
from core.settings import load_settings
from core.strategies.base import checked_detect
from core.strategies.dca import DcaStrategy
from core.strategies.registry import detect_all, signals_from_frame
from tests.strategy_candles import H, make_bars, real_candles, utc
from tests.test_indicators import ref_ema, ref_rsi


@pytest.fixture(scope="module")
def dca() -> DcaStrategy:
    return DcaStrategy.from_settings(load_settings().strategy)


def _row(out: pl.DataFrame, ts) -> dict:
    return out.filter(pl.col("ts") == ts).row(0, named=True)


def _descending_to(last_close: float) -> pl.DataFrame:
    """16 bars falling 115 -> 100 (every change a loss: RSI 0), then 4 bars whose highs never exceed 100,
    the last closing at `last_close`."""
    rows = [(116.0 - i + 1, 116.0 - i + 1, 116.0 - i, 116.0 - i, 10.0) for i in range(1, 17)]  # closes 115..100
    rows += [(100, 100, 98, 98, 10), (98, 98, 97, 97, 10), (97, 97, 96, 96, 10), (96, 96, last_close, last_close, 10)]
    return make_bars(rows)


def test_dca_when_real_btc_crash_then_fires_at_known_bar_only(dca):
    # Arrange: BTC, 2020-12-31 00:00 .. 2021-01-04 12:00 (109 real hours)
    bars = real_candles(["BTC"], utc(2020, 12, 31), utc(2021, 1, 4, 12))
    # Act
    out = checked_detect(dca, bars)
    # Assert: 2021-01-04 10:00 fires. 4h window = bars 07:00..10:00, highs 33148.69, 32567.88, 32152.15,
    # 31227.33 -> max 33148.69; close 30270.76; drop = (33148.69 - 30270.76) / 33148.69 = 2877.93 / 33148.69
    # = 0.08682 >= 0.05; RSI(14) = 28.10 < 30 (the loop reference agrees).
    t = utc(2021, 1, 4, 10)
    window = bars.filter(pl.col("ts").is_between(t - 3 * H, t))
    assert window.get_column("high").max() == 33148.69
    row = _row(out, t)
    assert row["close"] == 30270.76
    assert row["drop_pct"] == pytest.approx(2877.93 / 33148.69)
    rsi_ref = ref_rsi(bars.get_column("close").to_list(), 14)[bars.get_column("ts").to_list().index(t)]
    assert row["rsi"] == pytest.approx(rsi_ref) and 28.0 < rsi_ref < 28.2
    assert row["signal"] is True
    # 09:00 does not: window 06:00..09:00, max high 33408.00 (06:00), close 31038.63 ->
    # drop = 2369.37 / 33408 = 0.0709 >= 5%, but RSI = 32.45 >= 30.
    row9 = _row(out, t - H)
    assert row9["drop_pct"] == pytest.approx(2369.37 / 33408.0)
    assert 32.4 < row9["rsi"] < 32.5 and row9["signal"] is False
    # 07:00 does not: window 04:00..07:00, max high 33600.00 (04:00), close 32068.84 ->
    # drop = 1531.16 / 33600 = 0.0456 < 5% (its RSI 40.2 does not matter).
    row7 = _row(out, t - 3 * H)
    assert row7["drop_pct"] == pytest.approx(1531.16 / 33600.0) and row7["signal"] is False
    # Only 10:00 fires in this slice.
    assert out.filter("signal").get_column("ts").to_list() == [t]


def test_dca_when_drop_exactly_5pct_then_fires(dca):
    # max high of the last 4 bars = 100 (bar 16), close 95: (100 - 95) / 100 = 0.05 >= 0.05; RSI = 0 (all losses)
    out = dca.detect(_descending_to(95.0))
    last = out.row(-1, named=True)
    assert last["drop_pct"] == 0.05 and last["rsi"] == 0.0
    assert last["signal"] is True


def test_dca_when_drop_just_below_5pct_then_no_signal(dca):
    # close 95.01: (100 - 95.01) / 100 = 0.0499 < 0.05
    out = dca.detect(_descending_to(95.01))
    assert out.row(-1, named=True)["signal"] is False


def _rsi_thirty(last_close: float) -> pl.DataFrame:
    # 14 changes: +1.75 x3 (gains 5.25), -0.5 x10 and a last drop to `last_close` (losses 5 + 100.25 - last).
    # With last_close 93: avg gain 5.25/14 = 0.375, avg loss 12.25/14 = 0.875, RSI = 100*0.375/1.25 = 30 exactly.
    closes = [100.0, 101.75, 103.5, 105.25] + [105.25 - 0.5 * k for k in range(1, 11)] + [last_close]
    rows, prev = [], closes[0]
    for c in closes:
        rows.append((prev, max(prev, c), min(prev, c), c, 10.0))
        prev = c
    return make_bars(rows)


def test_dca_when_rsi_exactly_30_then_no_signal(dca):
    out = dca.detect(_rsi_thirty(93.0))
    last = out.row(-1, named=True)
    # drop: window bars 11..14, max high = open of bar 11 = 101.75; (101.75 - 93) / 101.75 = 0.086 >= 5%
    assert last["drop_pct"] == pytest.approx(8.75 / 101.75)
    assert last["rsi"] == 30.0
    assert last["signal"] is False


def test_dca_when_rsi_just_below_30_then_fires(dca):
    # last close 92.99: losses 12.26 -> RSI = 100 * 5.25 / 17.51 = 29.98 < 30
    last = dca.detect(_rsi_thirty(92.99)).row(-1, named=True)
    assert last["rsi"] == pytest.approx(100 * 5.25 / 17.51)
    assert last["signal"] is True


def test_dca_when_window_spans_gap_over_24h_then_no_signal(dca):
    # Same bars as the exact-5% case, but the last two bars come 48h later: a new stretch starts there,
    # its RSI and 4h window are still warming up, so nothing fires.
    bars = _descending_to(95.0)
    ts = bars.get_column("ts").to_list()
    gapped = bars.with_columns(pl.Series("ts", ts[:18] + [t + timedelta(hours=48) for t in ts[18:]]))
    out = dca.detect(gapped)
    assert out.get_column("signal").to_list() == [False] * 20
    assert out.row(-1, named=True)["rsi"] is None


def test_dca_when_gap_under_24h_then_bridged_and_fires(dca):
    # A 3h exchange outage before the last bar is bridged (bars are treated as consecutive).
    bars = _descending_to(95.0)
    ts = bars.get_column("ts").to_list()
    gapped = bars.with_columns(pl.Series("ts", ts[:19] + [ts[19] + timedelta(hours=3)]))
    assert dca.detect(gapped).row(-1, named=True)["signal"] is True


def test_dca_when_15m_timeframe_then_4h_window_is_16_bars(dca):
    # 15m bars: the 100 high is 15 bars back (inside 16 bars = 4h), close 95 -> fires;
    # with the high 16 bars back it is outside the window -> the max high is 99.x and drop < 5%.
    def frame(high_at_back: int) -> pl.DataFrame:
        n = 40
        rows = [(99.0, 99.0, 98.0, 98.0, 10.0)] * n
        rows[n - 1 - high_at_back] = (99.0, 100.0, 98.0, 98.0, 10.0)
        rows[-1] = (98.0, 98.0, 95.0, 95.0, 10.0)
        start = utc(2024, 1, 1)
        return make_bars(rows, ts=[start + i * timedelta(minutes=15) for i in range(n)]).with_columns(
            pl.lit("15m").alias("timeframe")
        )

    assert dca.detect(frame(15)).row(-1, named=True)["drop_pct"] == 0.05
    assert dca.detect(frame(16)).row(-1, named=True)["drop_pct"] == pytest.approx(4 / 99)


def test_dca_when_signal_then_plan_is_5_level_limit_grid_relative_to_signal_price():
    settings = load_settings()
    rows = detect_all(_descending_to(95.0), settings).filter(pl.col("strategy") == "dca")
    (sig,) = signals_from_frame(rows)
    assert sig.strategy is StrategyName.DCA and sig.price == 95.0
    p = sig.plan
    assert p.entry_type is OrderType.LIMIT
    # 1% steps of the signal price: 95, 95*0.99, 95*0.98, 95*0.97, 95*0.96
    assert p.entry_prices == pytest.approx((95.0, 94.05, 93.1, 92.15, 91.2))
    assert (p.take_profit_pct, p.stop_loss_pct, p.trailing_stop_pct) == (0.10, 0.08, None)
    assert p.entry_expiry == timedelta(hours=24) and p.max_hold == settings.strategy.dca.max_hold
    assert set(sig.features) == set(DcaStrategy.feature_names) and sig.features["drop_pct"] == 0.05


def test_dca_when_max_bridged_gap_setting_raised_then_48h_gap_is_bridged():
    # the 24h default is a setting: with 72h the 48h hole of the gap test no longer restarts the windows
    settings = load_settings(strategy={"max_bridged_gap": timedelta(hours=72)})
    bars = _descending_to(95.0)
    ts = bars.get_column("ts").to_list()
    gapped = bars.with_columns(pl.Series("ts", ts[:18] + [t + timedelta(hours=48) for t in ts[18:]]))
    assert DcaStrategy.from_settings(settings.strategy).detect(gapped).row(-1, named=True)["signal"] is True


@pytest.mark.parametrize("period", [50, 20])
def test_dca_when_ema_period_setting_given_then_dist_ema_feature_uses_it(period):
    settings = load_settings(strategy={"dca": {"ema_period": period}})
    bars = real_candles(["BTC"], utc(2020, 12, 31), utc(2021, 1, 4, 12))
    out = DcaStrategy.from_settings(settings.strategy).detect(bars)
    closes = bars.get_column("close").to_list()
    ema = ref_ema(closes, period)  # the TA-Lib reference EMA of test_indicators
    assert out.get_column("dist_ema").to_list()[-1] == pytest.approx(closes[-1] / ema[-1] - 1, rel=1e-12)
