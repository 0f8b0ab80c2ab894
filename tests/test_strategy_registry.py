"""Registry and contract: multi-symbol equivalence, detect_all layout, scan_latest, input checks."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from core.domain import StrategyName
from core.errors import DataQualityError, StrategyError
from core.settings import load_settings
from core.strategies.base import PLAN_COLUMNS, checked_detect
from core.strategies.dca import DcaStrategy
from core.strategies.registry import (
    FEATURE_NAMES,
    SIGNAL_COLUMNS,
    build_strategies,
    detect_all,
    scan_latest,
    signals_from_frame,
    warmup_bars,
    window_signals,
)
from tests.strategy_candles import H, real_candles, utc

SETTINGS = load_settings()


@pytest.fixture(scope="module")
def three() -> pl.DataFrame:
    return real_candles(["BTC", "ETH", "SOL"], utc(2021, 1, 1), utc(2021, 1, 31))


@pytest.fixture(scope="module")
def three_july() -> pl.DataFrame:
    # July 2021 holds signals of all three strategies (the channel test's BTC range among them).
    return real_candles(["BTC", "ETH", "SOL"], utc(2021, 7, 1), utc(2021, 7, 31))


@pytest.mark.parametrize("name", list(StrategyName))
def test_detect_when_three_symbols_then_equals_detect_per_symbol(three_july, name):
    st = build_strategies(SETTINGS)[name]
    together = checked_detect(st, three_july)
    alone = pl.concat([checked_detect(st, three_july.filter(pl.col("symbol") == s)) for s in ("BTC", "ETH", "SOL")])
    assert together.equals(alone)
    assert together.get_column("signal").sum() > 0  # the comparison covers real signals


def test_window_signals_when_real_month_then_same_signals_in_same_order_as_detect_all(three_july):
    # The engine's window of signals: detect_all's rows of the window (warm-up bars before it feeding the
    # indicators), as Signals, in detect_all's (ts, symbol, strategy) order.
    start, end = utc(2021, 7, 10), utc(2021, 7, 25)
    rows = detect_all(three_july, SETTINGS).filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    expected = signals_from_frame(rows)
    got = window_signals(three_july, SETTINGS, start, end)
    assert len(got) == rows.height and len({s.strategy for s in got}) == 3
    assert [s.model_dump_json() for s in got] == [s.model_dump_json() for s in expected]  # JSON: NaN features compare equal
    assert [s.signal_id for s in got] == [s.signal_id for s in expected]


def test_window_signals_when_bars_unsorted_then_same_error_as_detect_all(three):
    with pytest.raises(DataQualityError, match="sorted"):
        window_signals(three.sort("ts"), SETTINGS, utc(2021, 1, 1), utc(2021, 2, 1))


def test_detect_all_when_real_month_then_signal_rows_with_plans_and_features(three):
    out = detect_all(three, SETTINGS)
    assert tuple(out.columns) == SIGNAL_COLUMNS
    assert {"dca", "swing"} <= set(out.get_column("strategy").to_list())
    assert out.select(pl.col("ts").is_sorted()).item()
    # the DCA signal of the DCA test (BTC 2021-01-04 10:00) is here, with its own features filled
    row = out.filter((pl.col("symbol") == "BTC") & (pl.col("ts") == utc(2021, 1, 4, 10)) & (pl.col("strategy") == "dca"))
    assert row.height == 1
    feats = row.get_column("features")[0]
    assert feats["drop_pct"] == pytest.approx(2877.93 / 33148.69)
    assert feats["breakout_pct"] is None  # a swing feature: not this strategy's
    assert row.get_column("price")[0] == 30270.76 and row.get_column("entry_type")[0] == "limit"


def test_scan_latest_when_signal_on_last_bar_then_returned_and_older_ones_dropped():
    bars = real_candles(["BTC", "ETH"], utc(2020, 12, 10), utc(2021, 1, 4, 10))
    sigs = scan_latest(bars, SETTINGS)
    assert [(s.symbol, s.strategy, s.ts) for s in sigs if s.symbol == "BTC"] == [
        ("BTC", StrategyName.DCA, utc(2021, 1, 4, 10))
    ]
    assert all(s.ts == utc(2021, 1, 4, 10) for s in sigs)
    later = scan_latest(real_candles(["BTC", "ETH"], utc(2020, 12, 10), utc(2021, 1, 4, 11)), SETTINGS)
    assert all(s.ts == utc(2021, 1, 4, 11) for s in later)
    assert not any(s.symbol == "BTC" and s.strategy is StrategyName.DCA for s in later)


def test_scan_latest_when_window_is_warmup_bars_then_features_match_full_history():
    full = real_candles(["ETH"], utc(2020, 6, 1), utc(2021, 1, 4, 10))
    window = full.tail(warmup_bars(SETTINGS))
    for st in build_strategies(SETTINGS).values():
        a = checked_detect(st, full).tail(1).select(st.feature_names)
        b = checked_detect(st, window).tail(1).select(st.feature_names)
        for f in st.feature_names:
            want, got = a.item(0, f), b.item(0, f)
            assert (got is None) == (want is None) and (want is None or got == pytest.approx(want, rel=1e-6)), (st.name, f)
        assert sum(a.row(0)[i] is not None for i in range(a.width)) >= 6  # the comparison is not vacuous


def test_checked_detect_when_strategy_drops_rows_then_strategy_error(three):
    class Dropper(DcaStrategy):
        def detect(self, bars):  # type: ignore[override]
            return super().detect(bars).head(-1)

    with pytest.raises(StrategyError, match="rows"):
        checked_detect(Dropper(SETTINGS.strategy.dca), three)


def test_checked_detect_when_strategy_raises_then_wrapped_in_strategy_error(three):
    class Broken(DcaStrategy):
        def detect(self, bars):  # type: ignore[override]
            raise ZeroDivisionError("boom")

    with pytest.raises(StrategyError, match="boom") as info:
        checked_detect(Broken(SETTINGS.strategy.dca), three)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_detect_when_bars_unsorted_then_data_quality_error(three):
    with pytest.raises(DataQualityError, match="sorted"):
        detect_all(three.sort("ts"), SETTINGS)


def test_detect_when_mixed_timeframes_then_data_quality_error(three):
    mixed = three.with_columns(pl.when(pl.col("symbol") == "SOL").then(pl.lit("4h")).otherwise("timeframe").alias("timeframe"))
    with pytest.raises(DataQualityError, match="one timeframe"):
        detect_all(mixed, SETTINGS)


def test_detect_when_null_price_then_data_quality_error(three):
    bad = three.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("close")).alias("close"))
    with pytest.raises(DataQualityError, match="null"):
        detect_all(bad, SETTINGS)


def test_detect_when_missing_column_then_data_quality_error(three):
    with pytest.raises(DataQualityError, match="volume"):
        detect_all(three.drop("volume"), SETTINGS)


def test_plan_columns_when_detected_then_contract_dtypes(three):
    for st in build_strategies(SETTINGS).values():
        out = checked_detect(st, three)
        assert out.select(PLAN_COLUMNS).schema["grid_levels"] == pl.Int64
        assert set(FEATURE_NAMES[st.name]) <= set(out.columns)
        assert out.filter("signal").select(pl.col("tp_pct").min() > 0, pl.col("sl_pct").min() > 0).row(0) in (
            (True, True), (None, None))


def test_detect_when_gap_at_real_data_hole_then_no_signal_in_first_warmup_bars():
    # BTC has no bar 2024-07-15 .. 2024-09-07; after the hole every window restarts: no signal may use
    # a bar from before it, so nothing fires in the first 14 bars (RSI warm-up) after 2024-09-08 00:00.
    bars = real_candles(["BTC", "ETH", "SOL"], utc(2024, 6, 1), utc(2024, 9, 30))
    out = detect_all(bars, SETTINGS)
    restart = utc(2024, 9, 8)
    assert out.filter(pl.col("ts").is_between(restart, restart + 13 * H)).height == 0
    assert out.filter(pl.col("ts") > restart + timedelta(days=2)).height > 0


def test_cli_signals_when_btc_crash_window_then_lists_the_dca_signal():
    from typer.testing import CliRunner

    from deployments.cli import app

    res = CliRunner().invoke(app, ["signals", "-s", "BTC", "--start", "2020-12-10", "--end", "2021-01-04T11:00"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "2021-01-04 10:00" in res.output and "dca" in res.output


def test_cli_regime_when_crash_window_then_panic_counted():
    from typer.testing import CliRunner

    from deployments.cli import app

    res = CliRunner().invoke(app, ["regime", "-s", "BTC,ETH,XRP,BNB,ADA,LINK,ATOM,DOGE", "--start", "2020-05-11",
                                   "--end", "2020-06-03"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "PANIC" in res.output and "2020-06-02 14:00" in res.output
