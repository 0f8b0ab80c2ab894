"""Channel detector: a 72-bar range with touched support and resistance, entry in its bottom 30%,
reward/risk >= 1.5. Real BTC bars plus hand-built ranges for every edge."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from core.domain import OrderType
from core.settings import ChannelSettings, load_settings
from core.strategies.base import checked_detect
from core.strategies.channel import ChannelStrategy, count_separated_touches
from core.strategies.registry import detect_all, signals_from_frame
from tests.strategy_candles import H, make_bars, real_candles, utc


@pytest.fixture(scope="module")
def channel() -> ChannelStrategy:
    return ChannelStrategy.from_settings(load_settings().strategy)


BASE = (105.0, 107.0, 103.0, 105.0, 10.0)  # a bar in the middle of a 100..110 range


def _range(
    support_at=(20, 50), resistance_at=(30, 60), last=(103.0, 103.5, 101.5, 102.0, 10.0), *, low=100.0, high=110.0, n=80
) -> pl.DataFrame:
    """n bars inside [low, high]: lows touch `low` at support_at, highs touch `high` at resistance_at;
    the last bar is `last`. The 72-bar window of the last bar is bars 8..79."""
    rows = [BASE] * n
    for i in support_at:
        rows[i] = (104.0, 106.0, low, 105.0, 10.0)
    for i in resistance_at:
        rows[i] = (105.0, high, 104.0, 106.0, 10.0)
    rows[-1] = last
    return make_bars(rows)


def test_count_separated_touches_when_touches_closer_than_3_bars_then_counted_once():
    # window 6, threshold 1: touches at positions 0,1,2 -> only 0 counts; then 3 (3 after 0) and 5 (2 after 3: no)
    vals = np.array([0.0, 0.0, 0.0, 0.0, 5.0, 0.0])
    got = count_separated_touches(vals, np.full(6, 1.0), 6, 3, below=True)
    assert got.tolist() == [-1, -1, -1, -1, -1, 2]
    # above: values >= 4 -> only position 4
    assert count_separated_touches(vals, np.full(6, 4.0), 6, 3, below=False).tolist()[-1] == 1


def test_channel_when_real_btc_range_then_fires_at_known_bar_only(channel):
    # Arrange: BTC 2021-07-10 00:00 .. 2021-07-16 12:00
    bars = real_candles(["BTC"], utc(2021, 7, 10), utc(2021, 7, 16, 12))
    out = checked_detect(channel, bars)
    t = utc(2021, 7, 16, 10)
    window = bars.filter(pl.col("ts").is_between(t - 71 * H, t))
    # 72-bar window 07-13 11:00 .. 07-16 10:00: support = min low 31133.00 (07-15 17:00),
    # resistance = max high 33193.75 (07-13 11:00); width = 2060.75 / 31133 = 6.62% (in 3%..25%).
    assert window.height == 72
    assert window.get_column("low").min() == 31133.0 and window.get_column("high").max() == 33193.75
    row = out.filter(pl.col("ts") == t).row(0, named=True)
    assert (row["support"], row["resistance"]) == (31133.0, 33193.75)
    assert row["width_pct"] == pytest.approx(2060.75 / 31133.0)
    # tolerance 0.5% x 2060.75 = 10.30: support touches (low <= 31143.30): 07-15 17:00 (31133.00) and
    # 07-16 10:00 (31140.00); resistance touches (high >= 33183.45): 07-13 11:00 (33193.75) and
    # 07-15 01:00 (33185.25). 2 + 2 touches, all far apart.
    assert (row["touches_support"], row["touches_resistance"]) == (2, 2)
    # close 31305.87: position (31305.87 - 31133) / 2060.75 = 0.0839 <= 0.30
    assert row["range_position"] == pytest.approx(172.87 / 2060.75)
    # TP = (33193.75 - 0.3 x 2060.75) / 31305.87 - 1 = 32575.525 / 31305.87 - 1 = 4.06%
    # SL = 1 - 31133 x 0.99 / 31305.87 = 1 - 30821.67 / 31305.87 = 1.55%; reward/risk 2.62 >= 1.5
    assert row["tp_pct"] == pytest.approx(32575.525 / 31305.87 - 1)
    assert row["sl_pct"] == pytest.approx(1 - 30821.67 / 31305.87)
    assert row["reward_risk"] == pytest.approx(row["tp_pct"] / row["sl_pct"]) and row["reward_risk"] > 2.6
    assert row["signal"] is True
    # 09:00: its window still holds the 33340.00 high of 07-13 10:00 as resistance, touched once; the
    # support is touched once (07-15 17:00) -> no signal although the close is low in the range.
    r9 = out.filter(pl.col("ts") == t - H).row(0, named=True)
    assert r9["resistance"] == 33340.0 and (r9["touches_support"], r9["touches_resistance"]) == (1, 1)
    assert r9["range_position"] < 0.3 and r9["signal"] is False
    assert out.filter("signal").get_column("ts").to_list() == [t]


def test_channel_when_two_touches_each_and_low_close_then_fires(channel):
    # support 100, resistance 110, width 10%; close 102 -> position 0.2;
    # TP = (110 - 0.3*10) / 102 - 1 = 107/102 - 1 = 4.90%; SL = 1 - 99/102 = 2.94%; R/R = 1.667
    last = channel.detect(_range()).row(-1, named=True)
    assert (last["support"], last["resistance"], last["touches_support"], last["touches_resistance"]) == (100, 110, 2, 2)
    assert last["range_position"] == pytest.approx(0.2)
    assert last["tp_pct"] == pytest.approx(107 / 102 - 1) and last["sl_pct"] == pytest.approx(1 - 99 / 102)
    assert last["reward_risk"] == pytest.approx((107 / 102 - 1) / (1 - 99 / 102))
    assert last["signal"] is True


def test_channel_when_support_touches_adjacent_then_counted_once_and_no_signal(channel):
    # support touched on bars 20, 21, 22: one touch (separation < 3 bars) -> 1 < 2
    last = channel.detect(_range(support_at=(20, 21, 22))).row(-1, named=True)
    assert last["touches_support"] == 1 and last["signal"] is False


def test_channel_when_support_touches_exactly_3_bars_apart_then_both_count(channel):
    last = channel.detect(_range(support_at=(20, 23))).row(-1, named=True)
    assert last["touches_support"] == 2 and last["signal"] is True


def test_channel_when_low_within_half_percent_of_width_then_touch(channel):
    # tolerance = 0.5% of width 10 = 0.05: a low at 100.04 touches, 100.06 does not
    def frame(second_low: float) -> pl.DataFrame:
        bars = _range(support_at=(20,))
        return bars.with_columns(pl.when(pl.int_range(pl.len()) == 50).then(second_low).otherwise(pl.col("low")).alias("low"))

    assert channel.detect(frame(100.04)).row(-1, named=True)["touches_support"] == 2
    assert channel.detect(frame(100.06)).row(-1, named=True)["touches_support"] == 1


def test_channel_when_reward_risk_below_1_5_then_no_signal(channel):
    # close 103 (position 0.3, still in the zone): TP = 107/103 - 1 = 3.88%, SL = 1 - 99/103 = 3.88% -> R/R 1.0
    last = channel.detect(_range(last=(104.0, 104.0, 102.5, 103.0, 10.0))).row(-1, named=True)
    assert last["range_position"] == pytest.approx(0.3) and last["reward_risk"] == pytest.approx(1.0)
    assert last["signal"] is False


def test_channel_when_close_above_bottom_zone_then_no_signal(channel):
    # close 104: position 0.4 > 0.3
    last = channel.detect(_range(last=(104.0, 104.5, 103.5, 104.0, 10.0))).row(-1, named=True)
    assert last["range_position"] == pytest.approx(0.4) and last["signal"] is False


def test_channel_when_width_over_25pct_then_no_signal(channel):
    # support 100, resistance 130 -> width 30% > 25% (close 102 is low in the range, R/R would pass)
    last = channel.detect(_range(high=130.0)).row(-1, named=True)
    assert last["width_pct"] == pytest.approx(0.30) and last["signal"] is False


def test_channel_when_one_support_touch_and_each_min_1_then_total_rule_decides():
    # SPEC literally: each >= min_touches_each AND total >= min_touches_total. With each >= 1:
    # 1 support + 2 resistance = 3 -> fires; 1 + 1 = 2 < 3 -> not.
    st = ChannelStrategy(ChannelSettings(min_touches_each=1, min_touches_total=3))
    assert st.detect(_range(support_at=(20,))).row(-1, named=True)["signal"] is True
    assert st.detect(_range(support_at=(20,), resistance_at=(30,))).row(-1, named=True)["signal"] is False


def test_channel_when_gap_over_24h_inside_window_then_no_signal(channel):
    bars = _range()
    ts = bars.get_column("ts").to_list()
    gapped = bars.with_columns(pl.Series("ts", ts[:40] + [t + timedelta(hours=36) for t in ts[40:]]))
    out = channel.detect(gapped)
    assert out.row(-1, named=True)["support"] is None  # only 40 bars since the gap: no 72-bar window
    assert out.get_column("signal").sum() == 0


def test_channel_when_signal_then_market_plan_with_range_bounds():
    rows = detect_all(_range(), load_settings()).filter(pl.col("strategy") == "channel")
    (sig,) = signals_from_frame(rows)
    p = sig.plan
    assert p.entry_type is OrderType.MARKET and p.entry_prices == (102.0,)
    assert (p.range_support, p.range_resistance) == (100.0, 110.0)
    assert p.take_profit_pct == pytest.approx(107 / 102 - 1) and p.stop_loss_pct == pytest.approx(1 - 99 / 102)
    assert p.trailing_stop_pct is None and p.entry_expiry is None
