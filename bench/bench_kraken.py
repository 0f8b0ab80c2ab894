"""Kraken live source through the protocol double (tests/kraken_server.py, WebSocket v2 on loopback):

1. ingest throughput: the double walks its clock as fast as it can (three `ohlc` updates per minute
   for 5 coins, the last with the final values) -> KrakenStreamClient closes candles -> batching
   writer -> DuckDB file; closed candles committed per second (wall time to the last commit).
2. closed-candle-to-queryable latency: from the arrival of the message that closes a candle (a newer
   interval starts) to the commit of the batch holding it, at 100 candles/s (20 minutes/s for 5
   coins), default write_batch_seconds; p50 and p99.
The double runs in the same process and event loop as the client, so both share one core: a
conservative figure.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from bench.common import BenchResult
from core.settings import load_settings

COINS = ["BTC", "ETH", "SOL", "BNB", "XRP"]
T0 = datetime(2026, 3, 25, tzinfo=UTC)


async def _run(minutes: int, per_second: float | None, batch_events: int, batch_seconds: float) -> tuple[float, list[float], int]:
    from core.feeds.ingest import CandleWriter
    from core.feeds.kraken_ws import KrakenStreamClient
    from core.storage.duckdb_store import DuckDBStore
    from tests.kraken_server import KrakenDouble, KrakenState

    settings = load_settings()
    bars = (pl.scan_parquet(settings.data.data_dir / "ohlcv_1m.parquet")
            .filter(pl.col("symbol").is_in(COINS), pl.col("ts") >= T0, pl.col("ts") < T0 + timedelta(minutes=minutes + 2))
            .select("symbol", "ts", "open", "high", "low", "close", "volume").collect())
    double = await KrakenDouble(KrakenState(bars, COINS, now=T0 + timedelta(seconds=1), snapshot_depth=0)).start()
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "bench.duckdb")
        store.init_schema()
        writer = CandleWriter(store, batch_events=batch_events, batch_seconds=batch_seconds)
        client = KrakenStreamClient(url=double.ws_url, symbols={c: f"{c}/USD" for c in COINS}, quote="USD", writer=writer)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        while client.metrics.connects == 0:
            await asyncio.sleep(0.001)
        expected = minutes * len(COINS)
        t0 = time.perf_counter()
        for _ in range(minutes):
            await double.advance(1)
            if per_second:
                await asyncio.sleep(len(COINS) / per_second)
        while writer.metrics.rows_received < expected:
            await asyncio.sleep(0.002)
        await writer.flush()
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        await double.stop()
        stored = store.read_many(COINS, "1m").height
        store.close()
    if stored != expected:
        raise RuntimeError(f"stored {stored} candles, expected {expected}")
    return elapsed, list(writer.metrics.latencies), stored


def run() -> list[BenchResult]:
    f = load_settings().feed
    minutes = 6000
    elapsed, _, stored = asyncio.run(_run(minutes, None, f.write_batch_events, f.write_batch_seconds))
    _, lat, _ = asyncio.run(_run(600, 100.0, f.write_batch_events, f.write_batch_seconds))
    lat.sort()
    p99 = lat[int(0.99 * (len(lat) - 1))]
    return [
        BenchResult("kraken.ingest_ws_double_to_duckdb_candles_per_s", stored / elapsed, "candles/s", ">= 1000"),
        BenchResult("kraken.closed_candle_to_queryable_p50_at_100cps_s", statistics.median(lat), "s", "<= 1"),
        BenchResult("kraken.closed_candle_to_queryable_p99_at_100cps_s", p99, "s", "<= 1"),
    ]
