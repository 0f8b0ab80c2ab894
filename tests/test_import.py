"""Import of the shipped candle files into the store, with derived timeframes; on small real slices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.data_import import derivation_source, import_candles
from core.errors import DataQualityError
from core.storage.duckdb_store import DuckDBStore

START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 11, tzinfo=UTC)
SYMBOLS = ["BTC", "ETH"]


def _as_shipped(frame: pl.DataFrame) -> pl.DataFrame:
    """Back to the data README's file schema (ms timestamps, quote, source)."""
    return frame.select(
        "symbol", pl.lit("USDT").alias("quote"), pl.col("ts").dt.cast_time_unit("ms"),
        "open", "high", "low", "close", "volume", pl.lit("test").alias("source"),
    )


@pytest.fixture
def small_data_dir(tmp_path: Path, real_candles) -> Path:
    """1h for 10 days, 1d for the first 6 days only (the rest must be derived from 1h), 5m for 1 day."""
    d = tmp_path / "data"
    d.mkdir()
    _as_shipped(real_candles("1h", SYMBOLS, START, END)).write_parquet(d / "ohlcv_1h.parquet")
    _as_shipped(real_candles("1d", SYMBOLS, START, START + timedelta(days=6))).write_parquet(d / "ohlcv_1d.parquet")
    _as_shipped(real_candles("5m", SYMBOLS, START, START + timedelta(days=1))).write_parquet(d / "ohlcv_5m.parquet")
    return d


@pytest.fixture
def duck(tmp_path: Path):
    s = DuckDBStore(tmp_path / "store.duckdb")
    yield s
    s.close()


def test_import_when_small_data_dir_then_shipped_and_derived_timeframes_stored(duck, small_data_dir, real_candles) -> None:
    results = import_candles(duck, small_data_dir, progress=False)

    by_tf = {r.timeframe: r for r in results}
    assert [r.timeframe for r in results] == ["5m", "15m", "1h", "4h", "1d"]
    assert (by_tf["1h"].shipped_rows, by_tf["4h"].derived_rows) == (2 * 240, 2 * 60)
    assert (by_tf["1d"].shipped_rows, by_tf["1d"].derived_rows) == (12, 8)
    assert by_tf["15m"].derived_rows == 2 * 96 and by_tf["15m"].source == "derived from 5m"
    # Derived days equal the exchange's own daily bars (taken from the full 1d file).
    assert duck.read_many(SYMBOLS, "1d").select("ts", "open", "high", "low", "close").equals(
        real_candles("1d", SYMBOLS, START, END).select("ts", "open", "high", "low", "close"))
    assert duck.read_many(SYMBOLS, "15m").select("open", "high", "low", "close").equals(
        real_candles("15m", SYMBOLS, START, START + timedelta(days=1)).select("open", "high", "low", "close"))
    cov = duck.coverage()
    assert cov["missing"].sum() == 0
    assert sorted(cov["timeframe"].unique()) == ["15m", "1d", "1h", "4h", "5m"]


def test_import_when_repeated_then_same_rows_no_duplicates(duck, small_data_dir) -> None:
    import_candles(duck, small_data_dir, progress=False)
    first = duck.coverage()
    first_1h = duck.read_many(SYMBOLS, "1h")

    import_candles(duck, small_data_dir, progress=False)

    assert duck.coverage().equals(first)
    assert duck.read_many(SYMBOLS, "1h").equals(first_1h)


def test_import_when_options_given_then_only_that_slice(duck, small_data_dir) -> None:
    results = import_candles(
        duck, small_data_dir, symbols=["eth"], timeframes=["4h"],
        start=START + timedelta(days=2), end=START + timedelta(days=3), progress=False,
    )

    cov = duck.coverage()
    assert [(r.timeframe, r.shipped_rows, r.derived_rows) for r in results] == [("4h", 0, 6)]
    assert cov.select("symbol", "timeframe", "rows").rows() == [("ETH", "4h", 6)]
    assert cov["first"].item() == START + timedelta(days=2)


def test_import_when_csv_files_then_epoch_ms_and_iso_offsets_read(duck, tmp_path: Path, real_candles) -> None:
    d = tmp_path / "csv"
    d.mkdir()
    hourly = real_candles("1h", ["SOL"], START, START + timedelta(days=1))
    hourly.drop("timeframe").with_columns(pl.col("ts").dt.epoch("ms")).write_csv(d / "ohlcv_1h.csv")
    daily = real_candles("1d", ["SOL"], START, START + timedelta(days=1))
    daily.drop("timeframe").with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")).write_csv(d / "ohlcv_1d.csv")

    import_candles(duck, d, timeframes=["1h", "1d"], derived_timeframes=(), progress=False)

    assert duck.read_candles("SOL", "1h").equals(hourly)
    assert duck.read_candles("SOL", "1d").equals(daily)


def test_import_when_csv_ts_naive_then_refused_nothing_written(duck, tmp_path: Path, real_candles) -> None:
    d = tmp_path / "naive"
    d.mkdir()
    hourly = real_candles("1h", ["SOL"], START, START + timedelta(hours=3))
    hourly.drop("timeframe").with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(d / "ohlcv_1h.csv")

    with pytest.raises(DataQualityError, match="without a UTC offset.*2024-03-01 00:00:00"):
        import_candles(duck, d, progress=False)

    assert duck.coverage().is_empty()


def test_import_when_file_has_bad_bar_then_error_names_file_and_timeframe_not_written(duck, small_data_dir) -> None:
    path = small_data_dir / "ohlcv_1d.parquet"
    bad = pl.read_parquet(path).with_columns(
        high=pl.when(pl.int_range(pl.len()) == 4).then(pl.col("low") / 2).otherwise(pl.col("high"))
    )
    bad.write_parquet(path)

    with pytest.raises(DataQualityError, match=r"(?s)ohlcv_1d.parquet.*high < low"):
        import_candles(duck, small_data_dir, timeframes=["1d"], progress=False)

    assert duck.coverage().is_empty()


def test_import_when_data_dir_missing_or_file_lacks_columns_then_clear_error(duck, tmp_path: Path) -> None:
    with pytest.raises(DataQualityError, match="does not exist"):
        import_candles(duck, tmp_path / "nope", progress=False)
    d = tmp_path / "cols"
    d.mkdir()
    pl.DataFrame({"symbol": ["BTC"], "ts": [START]}).write_parquet(d / "ohlcv_1h.parquet")
    with pytest.raises(DataQualityError, match=r"lacks columns \['open'"):
        import_candles(duck, d, progress=False)


def test_derivation_source_when_asked_then_coarsest_dividing_finer_timeframe() -> None:
    assert derivation_source("4h", ["1m", "5m", "15m", "1h", "1d"]) == "1h"
    assert derivation_source("1d", ["1m", "5m", "1h", "1d"]) == "1h"
    assert derivation_source("15m", ["5m", "1h"]) == "5m"
    assert derivation_source("5m", ["1h"]) is None


def test_import_when_real_data_dir_then_btc_window_imported(duck, data_dir: Path) -> None:
    start, end = datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 3, tzinfo=UTC)

    import_candles(duck, data_dir, symbols=["BTC"], timeframes=["1h", "4h", "1d"], start=start, end=end, progress=False)

    assert duck.coverage().select("timeframe", "rows").sort("timeframe").rows() == [("1d", 2), ("1h", 48), ("4h", 12)]
