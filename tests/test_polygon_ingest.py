"""The batching writer on a real DuckDB store: batching, last-wins dedup, no lost rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.errors import StoreError
from core.feeds.ingest import CandleWriter
from core.storage.duckdb_store import DuckDBStore

START = datetime(2026, 4, 5, tzinfo=UTC)


@pytest.fixture
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1m", ["BTC", "XRP"], START, START + timedelta(minutes=30))


class FlakyStore(DuckDBStore):
    """A real DuckDB store whose first `failures` writes fail, like a store that is briefly down."""

    def __init__(self, path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def upsert_candles(self, candles: pl.DataFrame) -> int:
        if self.failures:
            self.failures -= 1
            raise StoreError("store briefly unavailable")
        return super().upsert_candles(candles)


async def test_writer_when_rows_trickle_in_then_all_written_within_batch_seconds(bars, tmp_path):
    store = DuckDBStore(tmp_path / "w.duckdb")
    writer = CandleWriter(store, batch_events=7, batch_seconds=0.05)
    for i in range(len(bars)):  # one row per add, interleaved with the background writes
        await writer.add(bars.slice(i, 1))
        if i % 5 == 0:
            await asyncio.sleep(0)
    for _ in range(100):  # no close(): the background writes and the timer alone must write everything
        if writer.metrics.rows_written >= len(bars):
            break
        await asyncio.sleep(0.05)
    stored = store.read_many(["BTC", "XRP"], "1m")
    store.close()
    assert len(stored) == len(bars) and writer.pending_rows == 0, writer.metrics
    assert writer.metrics.batches >= 2  # written in several batches while rows kept arriving


async def test_writer_when_same_minute_twice_in_a_batch_then_last_one_kept(bars, tmp_path):
    store = DuckDBStore(tmp_path / "w.duckdb")
    writer = CandleWriter(store, batch_events=1000, batch_seconds=10)
    first = bars.head(3)
    corrected = first.slice(1, 1).with_columns(close=pl.col("close") * 1.0001, high=pl.col("high") * 1.0001)
    await writer.add(first)
    await writer.add(corrected)
    await writer.close()
    stored = store.read_candles(first["symbol"][0], "1m")
    store.close()
    assert len(stored) == 3
    assert stored["close"][1] == pytest.approx(corrected["close"][0])


async def test_writer_when_store_fails_then_rows_kept_and_written_later(bars, tmp_path):
    store = FlakyStore(tmp_path / "w.duckdb", failures=2)
    writer = CandleWriter(store, batch_events=10, batch_seconds=0.05)
    await writer.add(bars)
    for _ in range(100):
        if writer.metrics.rows_written >= len(bars):
            break
        await asyncio.sleep(0.05)
    stored = store.read_many(["BTC", "XRP"], "1m")
    store.close()
    assert writer.metrics.write_failures == 2
    assert len(stored) == len(bars) and writer.pending_rows == 0
