"""One contract suite for every CandleStore backend (DuckDB and Postgres), on real candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from core.domain import CANDLE_SCHEMA
from core.errors import DataQualityError, StoreError
from core.storage.base import CandleStore
from tests.conftest import make_store

T0 = datetime(2024, 3, 1, tzinfo=UTC)
T1 = datetime(2024, 3, 3, tzinfo=UTC)


@pytest.fixture
def hourly(real_candles) -> pl.DataFrame:
    return real_candles("1h", ["BTC", "ETH", "SOL"], T0, T1)


def test_store_when_opened_then_satisfies_protocol_and_migrates_once(store) -> None:
    assert isinstance(store, CandleStore)
    store.init_schema()
    store.init_schema()  # idempotent
    assert store.schema_version() == 1


def test_upsert_when_real_bars_then_read_back_identical_sorted(store, hourly) -> None:
    shuffled = hourly.sample(fraction=1.0, shuffle=True, seed=3)

    written = store.upsert_candles(shuffled)

    got = store.read_many(["SOL", "BTC", "ETH"], "1h")
    assert written == len(hourly) == 144
    assert got.schema == pl.Schema(CANDLE_SCHEMA)
    assert got.equals(hourly.sort("symbol", "ts"))


def test_upsert_when_repeated_then_no_duplicates_and_values_updated(store, hourly) -> None:
    store.upsert_candles(hourly)
    store.upsert_candles(hourly)
    changed = hourly.filter(pl.col("symbol") == "BTC").head(2).with_columns(volume=pl.col("volume") + 1.5)

    store.upsert_candles(changed)

    got = store.read_candles("BTC", "1h")
    assert len(got) == 48
    assert got["volume"].head(2).to_list() == changed["volume"].to_list()
    assert got["volume"].slice(2).to_list() == hourly.filter(pl.col("symbol") == "BTC")["volume"].slice(2).to_list()


def test_read_candles_when_bounds_given_then_start_inclusive_end_exclusive(store, hourly) -> None:
    store.upsert_candles(hourly)
    start, end = T0 + timedelta(hours=5), T0 + timedelta(hours=9)

    got = store.read_candles("ETH", "1h", start, end)

    assert got["ts"].to_list() == [start + timedelta(hours=h) for h in range(4)]
    assert store.read_candles("ETH", "4h").is_empty()
    assert store.read_candles("XXX", "1h").is_empty()


def test_read_when_bound_in_other_zone_then_same_instant(store, hourly) -> None:
    store.upsert_candles(hourly)
    plus2 = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(hours=1)

    got = store.read_candles("BTC", "1h", start=plus2)

    assert got["ts"][0] == T0 + timedelta(hours=1)
    with pytest.raises(ValueError, match="naive"):
        store.read_candles("BTC", "1h", start=datetime(2024, 3, 1))


def test_last_bars_when_many_symbols_then_last_n_each_before_end(store, hourly) -> None:
    store.upsert_candles(hourly)
    end = T0 + timedelta(hours=30)

    got = store.last_bars(["BTC", "ETH", "SOL", "NOPE"], "1h", 5, end=end)

    assert got.group_by("symbol").len().sort("symbol").rows() == [("BTC", 5), ("ETH", 5), ("SOL", 5)]
    expected = hourly.filter(pl.col("ts") < end).sort("symbol", "ts").group_by("symbol", maintain_order=True).tail(5)
    assert got.equals(expected)
    assert store.last_bars(["BTC"], "1h", 1000)["ts"].max() == T1 - timedelta(hours=1)


def test_coverage_when_gap_then_counts_missing_bars_and_lists_gaps(store, hourly) -> None:
    holed = hourly.filter(~((pl.col("symbol") == "BTC") & pl.col("ts").is_between(T0 + timedelta(hours=10), T0 + timedelta(hours=12))))
    store.upsert_candles(holed)

    cov = store.coverage()
    gaps = store.gaps("BTC", "1h")

    btc = cov.filter(pl.col("symbol") == "BTC").row(0, named=True)
    assert (btc["first"], btc["last"], btc["rows"], btc["expected"], btc["missing"]) == (
        T0, T1 - timedelta(hours=1), 45, 48, 3)
    assert cov.filter(pl.col("symbol") == "ETH")["missing"].item() == 0
    assert gaps.select("gap_start", "gap_end", "missing").rows() == [
        (T0 + timedelta(hours=10), T0 + timedelta(hours=13), 3)]
    assert store.gaps("ETH", "1h").is_empty()


def test_upsert_when_bad_bar_in_batch_then_nothing_written(store, hourly) -> None:
    bad = hourly.with_columns(
        high=pl.when(pl.col("ts") == T0 + timedelta(hours=7)).then(pl.col("low") * 0.5).otherwise(pl.col("high"))
    )

    with pytest.raises(DataQualityError, match="high < low"):
        store.upsert_candles(bad)

    assert store.coverage().is_empty()


def test_upsert_when_failure_mid_batch_then_rolled_back_previous_data_intact(
    store_kind, request, tmp_path: Path, hourly
) -> None:
    # Arrange: small chunks, and the second chunk of the failing call raises inside the transaction.
    s = make_store(store_kind, request, tmp_path, batch_rows=40)
    before = hourly.filter(pl.col("ts") < T0 + timedelta(hours=24))
    s.upsert_candles(before)
    calls = {"n": 0}
    real_write = s._write_chunk

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected failure")
        return real_write(*args, **kwargs)

    s._write_chunk = failing_write
    changed = hourly.with_columns(volume=pl.col("volume") * 2)

    # Act
    with pytest.raises(StoreError, match="rolled back"):
        s.upsert_candles(changed)

    # Assert: first chunk's writes undone, old rows unchanged, no new rows
    assert calls["n"] == 2
    assert s.read_many(["BTC", "ETH", "SOL"], "1h").equals(before.sort("symbol", "ts"))
    s._write_chunk = real_write
    assert s.upsert_candles(changed) == 144
    s.close()


def test_records_when_put_get_delete_then_roundtrip_in_update_order(store) -> None:
    store.put_records("orders", [("o1", {"qty": 1.5, "tags": ["a"]}), ("o2", {"qty": 2}), ("o3", {"n": None})])
    store.put_records("orders", [("o1", {"qty": 9})])
    store.put_records("fills", [("o1", {"px": 3})])

    assert store.get_records("orders") == [("o2", {"qty": 2}), ("o3", {"n": None}), ("o1", {"qty": 9})]
    assert store.delete_records("orders", ["o2", "missing"]) == 1
    assert [k for k, _ in store.get_records("orders")] == ["o3", "o1"]
    assert store.get_records("fills") == [("o1", {"px": 3})]
    assert store.get_records("none") == []


def test_records_when_payload_not_json_then_store_error_and_nothing_written(store) -> None:
    with pytest.raises(StoreError, match="not JSON-able"):
        store.put_records("orders", [("ok", {"a": 1}), ("bad", {"ts": datetime(2024, 1, 1)})])

    assert store.get_records("orders") == []
