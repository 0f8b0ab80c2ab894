"""Resampling on real candles: derived bars equal the exchange's own coarser bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from core.errors import DataQualityError
from core.resample import resample


def _same(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    # Prices are exact; volume is a float sum, so allow rounding in the last digits.
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert got.select("open", "high", "low", "close").equals(expected.select("open", "high", "low", "close"))


def test_resample_when_5m_to_15m_then_equals_shipped_15m(real_candles) -> None:
    start, end = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 4, tzinfo=UTC)
    fine = real_candles("5m", ["BTC", "PEPE", "WIF"], start, end)

    got = resample(fine, "15m")

    _same(got, real_candles("15m", ["BTC", "PEPE", "WIF"], start, end))
    assert len(got) == 3 * 3 * 96 - 3 * 96  # WIF is listed only on 2024-03-05: no bars


def test_resample_when_1m_to_1h_then_equals_shipped_1h_and_partial_first_hour_dropped(real_candles) -> None:
    fine = real_candles("1m", ["BTC", "ETH"], None, datetime(2026, 3, 25, 12, 30, tzinfo=UTC))

    got = resample(fine, "1h")

    # The 1m file starts at 12:09: the 12:00 hour is incomplete, and so is the 12:00 hour at the end.
    assert got["ts"].min() == datetime(2026, 3, 23, 13, tzinfo=UTC)
    assert got["ts"].max() == datetime(2026, 3, 25, 11, tzinfo=UTC)
    expected = real_candles("1h", ["BTC", "ETH"], datetime(2026, 3, 23, 13, tzinfo=UTC), datetime(2026, 3, 25, 12, tzinfo=UTC))
    _same(got, expected)
    assert len(got) == 2 * 47


def test_resample_when_1h_to_1d_then_equals_shipped_1d_and_outage_day_needs_opt_in(real_candles) -> None:
    # 2021-02-11 misses the 04:00 hour (Binance maintenance) in the 1h history.
    start, end = datetime(2021, 2, 1, tzinfo=UTC), datetime(2021, 3, 1, tzinfo=UTC)
    hourly = real_candles("1h", ["BTC", "ETH"], start, end)
    daily = real_candles("1d", ["BTC", "ETH"], start, end)
    outage = datetime(2021, 2, 11, tzinfo=UTC)

    strict = resample(hourly, "1d")
    tolerant = resample(hourly, "1d", max_missing=4)

    assert outage not in strict["ts"].to_list()
    _same(strict, daily.filter(pl.col("ts") != outage))
    _same(tolerant, daily)


def test_resample_when_1h_to_4h_to_1d_then_chain_equals_shipped_1d(real_candles) -> None:
    start, end = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 15, tzinfo=UTC)
    four = resample(real_candles("1h", ["SOL"], start, end), "4h")

    assert four["ts"].dt.hour().unique().sort().to_list() == [0, 4, 8, 12, 16, 20]
    assert len(four) == 14 * 6
    _same(resample(four, "1d"), real_candles("1d", ["SOL"], start, end))


def test_resample_when_4h_bucket_checked_by_hand_then_ohlcv_rules_hold(real_candles) -> None:
    start = datetime(2025, 3, 1, 8, tzinfo=UTC)
    hours = real_candles("1h", ["SOL"], start, start + timedelta(hours=4))

    bar = resample(hours, "4h").row(0, named=True)

    assert bar["ts"] == start and bar["timeframe"] == "4h"
    assert bar["open"] == hours["open"][0] and bar["close"] == hours["close"][3]
    assert bar["high"] == max(hours["high"]) and bar["low"] == min(hours["low"])
    assert bar["volume"] == pytest.approx(sum(hours["volume"]), rel=1e-12)


def test_resample_when_trailing_bucket_still_forming_then_not_emitted(real_candles) -> None:
    end = datetime(2024, 2, 1, 10, 40, tzinfo=UTC)  # last 5m bar opens 10:35: the 10:30 bucket lacks 10:40
    fine = real_candles("5m", ["ETH"], datetime(2024, 2, 1, 9, tzinfo=UTC), end)

    got = resample(fine, "15m")

    assert got["ts"].max() == datetime(2024, 2, 1, 10, 15, tzinfo=UTC)
    tolerant = resample(fine, "15m", max_missing=2)
    assert tolerant["ts"].max() == datetime(2024, 2, 1, 10, 15, tzinfo=UTC)  # not closed: still not emitted


def test_resample_when_future_truncated_then_emitted_bars_unchanged(real_candles) -> None:
    full = real_candles("1h", ["BTC", "ETH"], datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 4, 5, tzinfo=UTC))
    cutoff = datetime(2024, 4, 3, 9, tzinfo=UTC)

    early = resample(full.filter(pl.col("ts") < cutoff), "4h")
    late = resample(full, "4h")

    assert early["ts"].max() == datetime(2024, 4, 3, 4, tzinfo=UTC)
    assert early.equals(late.filter(pl.col("ts") + timedelta(hours=4) <= cutoff))


def test_resample_when_bad_request_then_clear_error(real_candles) -> None:
    hourly = real_candles("1h", ["BTC"], datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 4, 2, tzinfo=UTC))
    mixed = pl.concat([hourly, resample(hourly, "4h")])

    with pytest.raises(DataQualityError, match="one timeframe"):
        resample(mixed, "1d")
    with pytest.raises(DataQualityError, match="multiple"):
        resample(hourly, "15m")
    with pytest.raises(ValueError, match="unknown timeframe"):
        resample(hourly, "2h")
    assert resample(hourly.head(0), "1d").is_empty()
