"""Candle validation: every bad-input case is refused with a message naming the rows; real data passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.domain import CANDLE_SCHEMA
from core.errors import DataQualityError
from core.storage.validation import normalise_candles

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", ["BTC", "ETH"], T0, T0 + timedelta(hours=6))


def _set(frame: pl.DataFrame, row: int, **values: float) -> pl.DataFrame:
    """Change one row's columns (to break it on purpose)."""
    idx = pl.int_range(pl.len()) == row
    return frame.with_columns(**{k: pl.when(idx).then(pl.lit(v)).otherwise(pl.col(k)) for k, v in values.items()})


def test_normalise_when_real_bars_with_extra_columns_then_candle_schema(bars) -> None:
    extra = bars.with_columns(source=pl.lit("x"), ts=pl.col("ts").dt.cast_time_unit("ms"))

    out = normalise_candles(extra)

    assert out.schema == pl.Schema(CANDLE_SCHEMA)
    assert out.equals(bars)


def test_normalise_when_column_missing_then_error_names_it(bars) -> None:
    with pytest.raises(DataQualityError, match=r"lacks required columns \['volume'\]"):
        normalise_candles(bars.drop("volume"))


def test_normalise_when_naive_ts_then_refused_with_localise_hint(bars) -> None:
    with pytest.raises(DataQualityError, match="naive.*localise them to UTC"):
        normalise_candles(bars.with_columns(pl.col("ts").dt.replace_time_zone(None)))


def test_normalise_when_other_zone_then_converted_to_same_instant_in_utc(bars) -> None:
    tokyo = bars.with_columns(pl.col("ts").dt.convert_time_zone("Asia/Tokyo"))

    out = normalise_candles(tokyo)

    assert out["ts"].dtype == pl.Datetime("us", "UTC")
    assert out["ts"].to_list() == bars["ts"].to_list()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"close": float("nan")}, "prices must be finite"),
        ({"open": float("inf")}, "prices must be finite"),
        ({"low": 0.0}, "prices must be finite and > 0"),
        ({"low": -1.0}, "prices must be finite and > 0"),
        ({"high": 1.0}, "high < low"),
        ({"volume": -0.5}, "volume must be finite and >= 0"),
        ({"volume": float("nan")}, "volume must be finite"),
    ],
)
def test_normalise_when_bad_values_then_error_names_row(bars, change, message) -> None:
    bad = _set(bars, 3, **change)

    with pytest.raises(DataQualityError, match=message) as err:
        normalise_candles(bad)

    assert "BTC 1h 2024-05-01 03:00:00+00:00" in str(err.value)


def test_normalise_when_high_below_body_or_low_above_body_then_error(bars) -> None:
    row = bars.row(2, named=True)
    high_low = _set(bars, 2, high=max(row["open"], row["close"]) * 0.999, low=min(row["open"], row["close"]) * 0.99)
    low_high = _set(bars, 2, low=min(row["open"], row["close"]) * 1.001)

    with pytest.raises(DataQualityError, match=r"high < max\(open, close\)"):
        normalise_candles(high_low)
    with pytest.raises(DataQualityError, match=r"low > min\(open, close\)"):
        normalise_candles(low_high)


def test_normalise_when_duplicate_keys_in_batch_then_error_names_keys(bars) -> None:
    dup = pl.concat([bars, bars.slice(7, 1)])

    with pytest.raises(DataQualityError, match="duplicate.*ETH 1h 2024-05-01 01:00:00"):
        normalise_candles(dup)


def test_normalise_when_ts_off_grid_then_error_names_rows(bars) -> None:
    shifted = bars.with_columns(
        ts=pl.when(pl.col("symbol") == "ETH").then(pl.col("ts") + timedelta(minutes=30)).otherwise(pl.col("ts"))
    )

    with pytest.raises(DataQualityError, match=r"not on the timeframe grid \(UTC-aligned open time\): 6 row\(s\): ETH 1h 2024-05-01 00:30"):
        normalise_candles(shifted)


def test_normalise_when_4h_bar_not_utc_aligned_then_error(real_candles) -> None:
    day = real_candles("1d", ["BTC"], T0, T0 + timedelta(days=2)).with_columns(timeframe=pl.lit("4h"))
    assert len(normalise_candles(day)) == 2  # midnight is on the 4h grid
    with pytest.raises(DataQualityError, match="grid"):
        normalise_candles(day.with_columns(pl.col("ts") + timedelta(hours=1)))


def test_normalise_when_unknown_timeframe_or_nulls_then_error(bars) -> None:
    with pytest.raises(DataQualityError, match="unknown timeframe"):
        normalise_candles(bars.with_columns(timeframe=pl.lit("7m")))
    with pytest.raises(DataQualityError, match=r"null values.*'close': 1"):
        normalise_candles(_set(bars, 0, close=None))


def test_normalise_when_many_bad_rows_then_message_is_bounded(bars) -> None:
    with pytest.raises(DataQualityError, match=r"12 row\(s\).*\(\+7 more\)"):
        normalise_candles(bars.with_columns(volume=pl.lit(-1.0)))


def test_normalise_when_prices_are_strings_then_error_not_crash(bars) -> None:
    with pytest.raises(DataQualityError, match="cannot be cast"):
        normalise_candles(bars.with_columns(pl.col("open").cast(pl.Utf8) + "x"))
