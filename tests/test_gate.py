"""The Great Expectations gate on real 1h candles: each kind of defect fails its symbol only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.alerts import SlackAlerter
from core.quality.gate import CandleGate, apply_gate, run_gate
from core.settings import load_settings
from core.storage.duckdb_store import DuckDBStore

SYMBOLS = ["BTC", "ETH", "SOL", "XRP"]
START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + timedelta(hours=48)
NOW = END + timedelta(minutes=10)  # the last bar (END - 1h) closed 10 minutes ago


@pytest.fixture(scope="module")
def settings():
    return load_settings()


@pytest.fixture(scope="module")
def gate(settings):
    return CandleGate(settings)


@pytest.fixture
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", SYMBOLS, START, END)


def _edit(bars: pl.DataFrame, symbol: str, row: int, **values) -> pl.DataFrame:
    """Set columns of the `row`-th bar of `symbol` (row counted within the symbol)."""
    target = (pl.col("symbol") == symbol) & (pl.int_range(pl.len()).over("symbol") == row)
    return bars.with_columns([pl.when(target).then(pl.lit(v, dtype=bars.schema[k])).otherwise(pl.col(k)).alias(k)
                              for k, v in values.items()])


def _spike(bars: pl.DataFrame) -> pl.DataFrame:
    # ETH bar 20 traded at 3x its real prices: OHLC stays consistent, the return does not.
    target = (pl.col("symbol") == "ETH") & (pl.int_range(pl.len()).over("symbol") == 20)
    return bars.with_columns([pl.when(target).then(pl.col(c) * 3).otherwise(pl.col(c)).alias(c)
                              for c in ("open", "high", "low", "close")])


DEFECTS = {
    "null_close": (lambda b: _edit(b, "ETH", 10, close=None), "no_nulls"),
    "nan_volume": (lambda b: _edit(b, "ETH", 11, volume=float("nan")), "no_nulls"),
    "negative_low": (lambda b: _edit(b, "ETH", 12, low=-1.0), "positive_prices"),
    "high_below_close": (lambda b: b.pipe(lambda x: _edit(x, "ETH", 13, high=x.filter(pl.col("symbol") == "ETH")["close"][13] * 0.99)), "high_ge_open_close"),
    "low_above_open": (lambda b: b.pipe(lambda x: _edit(x, "ETH", 14, low=x.filter(pl.col("symbol") == "ETH")["high"][14] * 1.001)), "low_le_open_close"),
    "negative_volume": (lambda b: _edit(b, "ETH", 15, volume=-5.0), "volume_non_negative"),
    "duplicate_bar": (lambda b: pl.concat([b, b.filter(pl.col("symbol") == "ETH").slice(16, 1)]), "unique_symbol_ts"),
    "stale": (lambda b: b.filter(~((pl.col("symbol") == "ETH") & (pl.col("ts") >= END - timedelta(hours=5)))), "fresh"),
    "gap": (lambda b: b.filter(~((pl.col("symbol") == "ETH") & pl.col("ts").is_between(START + timedelta(hours=20), START + timedelta(hours=22)))), "no_gaps"),
    "return_spike": (_spike, "returns_bounded"),
}


def test_gate_when_real_candles_clean_then_every_symbol_passes(bars, settings, gate):
    report = run_gate(bars, settings, NOW, gate=gate)
    assert report.passed_symbols == SYMBOLS and report.failed_symbols == []
    assert report.rows == len(bars) and report.timeframe == "1h"


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_gate_when_one_symbol_has_a_defect_then_only_that_symbol_fails(defect, bars, settings, gate):
    corrupt, expectation = DEFECTS[defect]
    report = run_gate(corrupt(bars), settings, NOW, gate=gate)
    assert report.failed_symbols == ["ETH"]
    assert expectation in report.result("ETH").failed_expectations
    assert report.result("ETH").details[expectation]["rows"] >= 1


def test_gate_when_symbol_expected_but_absent_then_it_fails(bars, settings, gate):
    report = run_gate(bars.filter(pl.col("symbol") != "SOL"), settings, NOW, symbols=SYMBOLS, gate=gate)
    assert report.failed_symbols == ["SOL"]
    assert report.result("SOL").failed_expectations == ("has_bars",)


def test_gate_when_future_bars_truncated_then_row_checks_up_to_t_unchanged(bars, gate):
    # No look-ahead: every per-row quantity at bar t uses only bars up to t (freshness is about `now`).
    t = START + timedelta(hours=30)
    cols = ["symbol", "ts", "max_oc", "min_oc", "min_price", "null_fields", "abs_return", "gap_bars"]
    full = gate.derived(bars, NOW).filter(pl.col("ts") < t).select(cols)
    truncated = gate.derived(bars.filter(pl.col("ts") < t), NOW).select(cols)
    assert truncated.equals(full)
    assert truncated["abs_return"].drop_nulls().len() == len(truncated) - len(SYMBOLS)


def test_apply_gate_when_symbol_fails_then_left_out_stored_and_alerted(bars, settings, gate, tmp_path):
    store = DuckDBStore(tmp_path / "g.duckdb")
    alerter = SlackAlerter(None)
    kept, report = apply_gate(_edit(bars, "XRP", 5, volume=-1.0), settings, NOW, store=store, alerter=alerter, gate=gate)
    records = dict(store.get_records("gate_result"))
    store.close()
    assert sorted(kept["symbol"].unique()) == ["BTC", "ETH", "SOL"]
    assert len(records) == 4
    xrp = next(v for k, v in records.items() if v["symbol"] == "XRP")
    assert xrp["passed"] is False and xrp["failed_expectations"] == ["volume_non_negative"]
    assert alerter.stats.logged_only == 1
