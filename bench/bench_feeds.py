"""Market-data benchmarks, on loopback with real components:

1. ingest throughput: the replay server (own process, as fast as possible, 1000 XA events per frame)
   -> stream client -> batching writer -> DuckDB file; rows committed per second.
2. event-to-queryable latency at 100 events/s: seconds from a frame's arrival at the client to the
   commit of the batch holding it (default write_batch_seconds), p50 and p99.
3. the Great Expectations gate on the last 200 1h bars of 99 symbols (warm context, median of 5).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from bench.common import BenchResult
from core.settings import load_settings

SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int, speed: float, rows: int, ready) -> None:  # runs in a spawned process
    from core.feeds.replay_server import ReplayTape, ReplayWsServer

    settings = load_settings()
    recorded = pl.read_parquet(settings.data.data_dir / "ohlcv_1m.parquet").filter(pl.col("symbol").is_in(SYMBOLS))
    tape = ReplayTape(recorded.sort("ts", "symbol").head(rows), settings.data.quote)

    async def main() -> None:
        server = ReplayWsServer(tape, api_key=settings.feed.replay_api_key, speed=speed, port=port,
                                events_per_message=settings.feed.replay_events_per_message)
        async with server:
            ready.set()
            await server.finished.wait()
            await asyncio.sleep(5)  # let the client drain before the connection closes

    asyncio.run(main())


async def _ingest(port: int, store, expected: int, batch_events: int, batch_seconds: float) -> tuple[float, list[float]]:
    from core.feeds.ingest import CandleWriter
    from core.feeds.polygon_ws import PolygonStreamClient

    settings = load_settings()
    writer = CandleWriter(store, batch_events=batch_events, batch_seconds=batch_seconds)
    client = PolygonStreamClient(url=f"ws://127.0.0.1:{port}", api_key=settings.feed.replay_api_key, symbols=SYMBOLS,
                                 quote=settings.data.quote, writer=writer)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    while writer.metrics.rows_received == 0:
        await asyncio.sleep(0.001)
    t0 = time.perf_counter()
    while writer.metrics.rows_received < expected:
        await asyncio.sleep(0.005)
    await writer.flush()
    elapsed = time.perf_counter() - t0
    stop.set()
    await task
    return elapsed, writer.metrics.latencies


def _run_stream(rows: int, speed: float, batch_events: int, batch_seconds: float) -> tuple[float, list[float], int]:
    from core.storage.duckdb_store import DuckDBStore

    port = _free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_serve, args=(port, speed, rows, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(120):
            raise RuntimeError("replay server did not start")
        with tempfile.TemporaryDirectory() as tmp:
            store = DuckDBStore(Path(tmp) / "bench.duckdb")
            store.init_schema()
            elapsed, lat = asyncio.run(_ingest(port, store, rows, batch_events, batch_seconds))
            stored = len(store.read_many(SYMBOLS, "1m"))
            store.close()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    if stored != rows:
        raise RuntimeError(f"stored {stored} rows, expected {rows}")
    return elapsed, lat, stored


def _gate_bench() -> list[BenchResult]:
    from core.quality.gate import CandleGate

    settings = load_settings()
    hourly = pl.scan_parquet(settings.data.data_dir / "ohlcv_1h.parquet")
    bars = (
        hourly.filter(pl.col("symbol").is_in(list(settings.data.universe)) & (pl.col("ts") < datetime(2024, 7, 1, tzinfo=UTC)))
        .sort("symbol", "ts").group_by("symbol", maintain_order=True).tail(200)
        .with_columns(timeframe=pl.lit("1h"), ts=pl.col("ts").dt.cast_time_unit("us"))
        .collect()
    )
    now = datetime(2024, 7, 1, 0, 30, tzinfo=UTC)
    t0 = time.perf_counter()
    gate = CandleGate(settings)
    gate.validate(bars, now)
    cold = time.perf_counter() - t0
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        gate.validate(bars, now)
        runs.append(time.perf_counter() - t0)
    n = bars["symbol"].n_unique()
    return [
        BenchResult(f"feeds.gate_last200_{n}symbols_warm_s", statistics.median(runs), "s", "<= 1"),
        BenchResult(f"feeds.gate_last200_{n}symbols_first_run_s", cold, "s", "<= 2"),
    ]


def run() -> list[BenchResult]:
    settings = load_settings()
    f = settings.feed
    rows = 200_000
    elapsed, _, _ = _run_stream(rows, 0, f.write_batch_events, f.write_batch_seconds)
    # 100 events/s: 5 symbols per minute frame, 20 frames/s = 20 replay minutes per second.
    _, lat, _ = _run_stream(1000, 20 * 60, f.write_batch_events, f.write_batch_seconds)
    lat_sorted = sorted(lat)
    p99 = lat_sorted[int(0.99 * (len(lat_sorted) - 1))]
    return [
        BenchResult("feeds.ingest_replay_to_duckdb_events_per_s", rows / elapsed, "events/s", ">= 50000"),
        BenchResult("feeds.event_to_queryable_p99_at_100eps_s", p99, "s", "<= 1"),
        BenchResult("feeds.event_to_queryable_p50_at_100eps_s", statistics.median(lat), "s", "<= 1"),
        *_gate_bench(),
    ]
