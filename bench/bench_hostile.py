"""Hostile-input benchmarks, on loopback with real components (issue 13):

1. parser throughput with 10% hostile frames: real 1m candles as XA frames of 100 events, one frame in
   ten replaced by a hostile one (every class of the issue in turn, the 200k-deep nesting and the
   4.4 MB frame included); valid events parsed per second through the frame boundary.
2. the hostile-server run: a real WebSocket server sends every hostile class mixed with real bars to
   the stream client writing into a real DuckDB file; bad messages by kind, valid bars stored, invalid
   bars stored (must be 0) and stream restarts (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from bench.common import BenchResult
from core.settings import load_settings

SYMBOLS = ["BTC", "ETH"]
QUOTE = "USDT"


def hostile_frames(valid: list[dict[str, Any]]) -> tuple[list[str], dict[str, int]]:
    """Every hostile class of issue 13, each mixed with valid XA events, and the bad counts expected
    by kind. Needs at least 5 valid events; the ones after the 4th ride in the 4.4 MB frame."""
    a, b = valid[:4], valid[4:]
    template = valid[0]
    frames = [
        json.dumps(a[:1]),
        "[" * 200_000 + "]" * 200_000,  # RecursionError in the JSON decoder
        json.dumps([template | {"s": 2**63}, a[1]]),  # s beyond int64
        json.dumps([a[2]])[:-1] + ', {"ev":"XA","pair":"BTC-USDT","o":1' + "0" * 400
        + ',"h":2.0,"l":0.5,"c":1.5,"v":1,"s":1775203200000}]',  # a price of 10^400
        json.dumps([template | {"s": 9_300_000_000_000_000}, a[3]]),  # 9.3e15 ms: year ~296,000
        json.dumps([template | {"s": 4_102_444_800_000}]),  # 2100-01-01: far future
        json.dumps([template | {"s": -31_536_000_000}]),  # 1969: before 1970
        json.dumps([template | {"pair": "FOO-USDT"}, template | {"pair": "btc-USDT"},
                    template | {"pair": "BTC-ETH-USDT"}]),
        # 4.4 MB of 40,000 bad events (unsubscribed pair) around the remaining valid bars.
        json.dumps([{"ev": "XA", "pair": "FOO-USDT", "o": 1.25, "h": 1.5, "l": 1.0, "c": 1.25, "v": 10.0,
                     "s": 1775203200000}] * 40_000 + b),
    ]
    expected = {"too_deep": 1, "int_overflow": 2, "implausible_ts": 3, "unknown_pair": 3 + 40_000}
    return frames, expected


def _real_minutes(n_minutes: int) -> pl.DataFrame:
    settings = load_settings()
    frame = pl.read_parquet(settings.data.data_dir / "ohlcv_1m.parquet").filter(pl.col("symbol").is_in(SYMBOLS))
    first = frame["ts"].max() - timedelta(minutes=n_minutes)  # type: ignore[operator]
    return frame.filter(pl.col("ts") > first).select("symbol", "ts", "open", "high", "low", "close", "volume")


def _parser_throughput() -> list[BenchResult]:
    from core.feeds.polygon_schemas import (
        ParseCounters,
        candles_to_xa_json,
        parse_ws_message,
    )

    events = candles_to_xa_json(_real_minutes(5_000), QUOTE).to_list()
    frames = ["[" + ",".join(events[i : i + 100]) + "]" for i in range(0, len(events) - 100, 100)]
    hostile, _ = hostile_frames([json.loads(e) for e in events[:10]])
    mixed = [hostile[(i // 10) % len(hostile)] if i % 10 == 9 else f for i, f in enumerate(frames)]
    valid_events = sum(100 for i in range(len(frames)) if i % 10 != 9)
    now = datetime.now(UTC)
    best = float("inf")
    for _ in range(3):
        counters = ParseCounters()
        started = time.perf_counter()
        for raw in mixed:
            parse_ws_message(raw, QUOTE, counters, symbols=frozenset(SYMBOLS), now=now)
        best = min(best, time.perf_counter() - started)
    assert counters.aggregates >= valid_events, counters.as_dict()
    total_events = counters.events + counters.too_deep  # a 200k-deep frame counts as one event
    return [
        BenchResult("hostile.parser_10pct_hostile_events_per_s", total_events / best, "events/s", ">= 50000"),
        BenchResult("hostile.parser_10pct_hostile_valid_events_per_s", valid_events / best, "events/s", ">= 10000"),
        BenchResult("hostile.parser_10pct_hostile_frames_per_s", len(mixed) / best, "frames/s", ">= 200"),
    ]


async def _hostile_run(path: Path) -> dict[str, Any]:
    import websockets
    from pydantic import SecretStr

    from core.feeds.ingest import CandleWriter
    from core.feeds.polygon_schemas import candles_to_xa_json
    from core.feeds.polygon_ws import PolygonStreamClient
    from core.storage.duckdb_store import DuckDBStore

    minutes = _real_minutes(5)
    valid = [json.loads(e) for e in candles_to_xa_json(minutes, QUOTE).to_list()]
    frames, _ = hostile_frames(valid)

    async def handler(ws: Any) -> None:
        await ws.send(json.dumps([{"ev": "status", "status": "connected"}]))
        await ws.recv()
        await ws.send(json.dumps([{"ev": "status", "status": "auth_success"}]))
        await ws.recv()
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    store = DuckDBStore(path)
    server = await websockets.serve(handler, "127.0.0.1", 0, max_size=None)
    writer = CandleWriter(store, batch_events=1000, batch_seconds=0.05)
    client = PolygonStreamClient(url=f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", api_key=SecretStr("k"),
                                 symbols=SYMBOLS, quote=QUOTE, writer=writer)
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(client.run(stop))
    while not (client.counters.messages >= len(frames) + 2 and writer.metrics.rows_written >= len(valid)):
        if task.done() or time.perf_counter() - started > 120:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    alive = not task.done()
    stop.set()
    await task
    server.close()
    stored = store.read_many(SYMBOLS, "1m")
    store.close()
    valid_keys = set(zip(minutes["symbol"].to_list(), minutes["ts"].to_list(), strict=True))
    stored_keys = list(zip(stored["symbol"].to_list(), stored["ts"].to_list(), strict=True))
    return {
        "seconds": elapsed,
        "bad": client.counters.bad_by_kind(),
        "valid_stored": sum(1 for k in set(stored_keys) if k in valid_keys),
        "valid_sent": len(valid_keys),
        "invalid_stored": sum(1 for k in stored_keys if k not in valid_keys) + len(stored_keys) - len(set(stored_keys)),
        "restarts": (client.metrics.connects - 1) + (0 if alive else 1),
    }


def _hostile_server() -> list[BenchResult]:
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(_hostile_run(Path(tmp) / "hostile.duckdb"))
    results = [
        BenchResult("hostile.server_run_s", out["seconds"], "s", "<= 30"),
        BenchResult("hostile.server_valid_bars_stored", out["valid_stored"], "bars", f">= {out['valid_sent']}"),
        BenchResult("hostile.server_invalid_bars_stored", out["invalid_stored"], "bars", "<= 0"),
        BenchResult("hostile.server_stream_restarts", out["restarts"], "restarts", "<= 0"),
    ]
    results += [BenchResult(f"hostile.server_bad_{kind}", n, "messages", "") for kind, n in sorted(out["bad"].items())]
    return results


def run() -> list[BenchResult]:
    import logging

    logging.getLogger("core.feeds").setLevel(logging.ERROR)  # the drops are counted; their log lines are noise here
    return [*_parser_throughput(), *_hostile_server()]
