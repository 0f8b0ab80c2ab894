"""Model inputs: coin/market context and event features use no bar after the signal bar."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.domain import StrategyName
from core.settings import load_settings
from core.strategies.base import assert_no_lookahead, cut_points_every
from core.strategies.registry import FEATURE_NAMES, detect_all
from models.dataset import feature_names
from models.features import CONTEXT_FEATURES, coin_features, event_features, market_features

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE", "LINK", "XRP"]
START, END = datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", SYMBOLS, START, END)


def test_coin_features_when_future_bars_removed_then_past_values_unchanged(bars: pl.DataFrame) -> None:
    # Arrange / Act / Assert: every cut point must reproduce the full-history values up to the cut.
    assert_no_lookahead(lambda b: coin_features(b, "1h").sort("symbol", "ts"), bars, cut_points_every(bars, 4))


def test_market_features_when_future_bars_removed_then_past_values_unchanged(bars: pl.DataFrame) -> None:
    settings = load_settings()
    assert_no_lookahead(lambda b: market_features(b, settings).sort("ts"), bars, cut_points_every(bars, 4))


def test_event_features_when_future_bars_removed_then_every_event_feature_unchanged(bars: pl.DataFrame) -> None:
    # Arrange: the whole path detect -> features, as training builds it.
    settings = load_settings()

    def events(b: pl.DataFrame) -> pl.DataFrame:
        rows = detect_all(b, settings).filter(pl.col("strategy") == "swing")
        return event_features(rows, b, FEATURE_NAMES[StrategyName.SWING], settings).sort("ts", "symbol")

    full = events(bars)
    assert full.height > 50  # a decent sample, or the test proves nothing
    # Act / Assert
    assert_no_lookahead(events, bars, cut_points_every(bars, 3))


def test_coin_features_when_hand_computed_on_real_bars_then_equal(bars: pl.DataFrame) -> None:
    # Arrange: ETH at one bar; the 30-day window is (t - 30d, t], as a plain Python loop over rows.
    t = datetime(2023, 5, 20, 13, tzinfo=UTC)
    eth = bars.filter(pl.col("symbol") == "ETH").sort("ts")
    rows = [r for r in eth.iter_rows(named=True) if t - timedelta(days=30) < r["ts"] <= t]
    qv = [r["close"] * r["volume"] for r in rows]
    rets = [math.log(b["close"] / a["close"]) for a, b in zip(rows, rows[1:], strict=False)
            if b["ts"] - a["ts"] == timedelta(hours=1)]
    # the first bar of the window also has a return from the bar before it (inside the series)
    prev = eth.filter(pl.col("ts") == rows[0]["ts"] - timedelta(hours=1))
    rets.insert(0, math.log(rows[0]["close"] / prev["close"][0]))
    mean = sum(rets) / len(rets)
    std = math.sqrt(sum((x - mean) ** 2 for x in rets) / (len(rets) - 1))
    # Act
    got = coin_features(bars, "1h").filter((pl.col("symbol") == "ETH") & (pl.col("ts") == t)).row(0, named=True)
    # Assert
    assert got["coin_liquidity_30d"] == pytest.approx(math.log1p(sum(qv) / len(qv)), rel=1e-9)
    assert got["coin_vol_30d"] == pytest.approx(std * math.sqrt(24 * 365), rel=1e-6)


def test_coin_features_when_data_has_a_hole_then_no_return_bridges_it(real_candles) -> None:
    # Arrange: BTC across the release's 2024-07-15 .. 2024-09-07 hole.
    b = real_candles("1h", ["BTC"], datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 9, 20, tzinfo=UTC))
    # Act
    out = coin_features(b, "1h").sort("ts")
    after = out.filter(pl.col("ts") >= datetime(2024, 9, 8, tzinfo=UTC))
    # Assert: the 30-day vol restarts (needs a week of real returns again) instead of using the jump.
    first_week = after.filter(pl.col("ts") < datetime(2024, 9, 14, tzinfo=UTC))
    assert first_week["coin_vol_30d"].null_count() == first_week.height
    assert after.filter(pl.col("ts") >= datetime(2024, 9, 16, tzinfo=UTC))["coin_vol_30d"].null_count() == 0


def test_event_features_when_built_then_columns_are_strategy_then_context(bars: pl.DataFrame) -> None:
    settings = load_settings()
    rows = detect_all(bars, settings).filter(pl.col("strategy") == "dca")
    out = event_features(rows, bars, FEATURE_NAMES[StrategyName.DCA], settings)
    assert out.columns[4:] == feature_names("dca")
    assert out.height == rows.height
    assert set(CONTEXT_FEATURES) <= set(out.columns)
    # context is present for events after the warm-up (BTC is in the frame, so market features exist)
    late = out.filter(pl.col("ts") > START + timedelta(days=10))
    assert late["mkt_btc_ret_24h"].null_count() == 0
    assert late["coin_vol_30d"].null_count() == 0


def test_event_features_when_strategy_feature_missing_then_clear_error(bars: pl.DataFrame) -> None:
    settings = load_settings()
    rows = detect_all(bars, settings).filter(pl.col("strategy") == "dca")
    with pytest.raises(ValueError, match="lack strategy features"):
        event_features(rows, bars, ("no_such_feature",), settings)
