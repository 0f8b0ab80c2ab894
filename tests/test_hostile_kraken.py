"""The Kraken WebSocket v2 stream (the default keyless live source) behind the same input boundary as
the Polygon stream: a real hostile server on loopback sends every class of bad frame mixed with real
closed candles; afterwards the real store holds each valid bar exactly once, no invalid bar, the
stream never died (one connection), and every bad frame is counted by kind."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import polars as pl
import websockets

from core.feeds.ingest import CandleWriter
from core.feeds.kraken_ws import KrakenStreamClient
from core.storage.duckdb_store import DuckDBStore

T0 = datetime(2026, 4, 3, 8, 0, tzinfo=UTC)


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _candle(symbol: str, begin: datetime, price: float | int = 60_000.0, volume: float = 1.5) -> dict:
    return {"symbol": symbol, "open": price, "high": price, "low": price, "close": price, "trades": 3,
            "volume": volume, "vwap": price, "interval_begin": _iso(begin), "interval": 1,
            "timestamp": _iso(begin + timedelta(minutes=1))}


def _update(*candles: dict) -> str:
    return json.dumps({"channel": "ohlc", "type": "update", "timestamp": _iso(T0), "data": list(candles)})


def _hostile_frames() -> list[str | bytes]:
    deep = "[" * 200_000 + "]" * 200_000
    huge_price = _update(_candle("BTC/USD", T0)).replace("60000.0", "1" + "0" * 400, 1)
    return [
        deep,  # RecursionError in the JSON decoder
        b"\xff\xfe not json",
        "[1, 2, 3]",  # JSON, but not an object
        huge_price,  # a price of 10^400
        _update(_candle("BTC/USD", datetime(2100, 1, 1, tzinfo=UTC))),  # far future: would freeze the stream
        _update(_candle("BTC/USD", datetime(1960, 1, 1, tzinfo=UTC))),  # before the earliest bar
        _update(_candle("FOO/USD", T0), _candle("btc/USD", T0)),  # pairs not subscribed
        _update(_candle("BTC/USD", T0, price=-5.0)),  # a negative price
        json.dumps({"channel": "ohlc", "type": "update", "data": [{"symbol": "BTC/USD"}] * 40_000}),  # 4 MB of junk
    ]


async def test_kraken_stream_when_hostile_frames_mixed_with_valid_then_valid_stored_once_and_stream_alive(tmp_path) -> None:
    # Arrange: a hostile Kraken on loopback: acks the subscription, then for each minute sends a bad
    # frame followed by the next real candle (each closing the previous one).
    minutes = [T0 + timedelta(minutes=i) for i in range(12)]
    frames = _hostile_frames()
    connections = []

    async def handler(ws) -> None:
        connections.append(ws)
        sub = json.loads(await ws.recv())
        for symbol in sub["params"]["symbol"]:
            await ws.send(json.dumps({"method": "subscribe", "success": True, "req_id": sub["req_id"],
                                      "result": {"channel": "ohlc", "symbol": symbol, "interval": 1}}))
        for i, begin in enumerate(minutes):
            if i < len(frames):
                await ws.send(frames[i])
            await ws.send(_update(_candle("BTC/USD", begin, price=60_000.0 + i)))
        await asyncio.sleep(30)

    server = await websockets.serve(handler, "127.0.0.1", 0, max_size=None)
    port = list(server.sockets)[0].getsockname()[1]
    store = DuckDBStore(tmp_path / "k.duckdb")
    writer = CandleWriter(store, batch_events=1000, batch_seconds=0.05)
    client = KrakenStreamClient(url=f"ws://127.0.0.1:{port}", symbols={"BTC": "BTC/USD"}, quote="USD", writer=writer)
    stop = asyncio.Event()
    # Act
    task = asyncio.create_task(client.run(stop))
    try:
        for _ in range(600):
            if client.counters.closed >= len(minutes) - 1:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        server.close()
        await server.wait_closed()
    # Assert: every real minute but the still-running last one stored once, at its own price.
    got = store.read_many(["BTC"], "1m").sort("ts")
    store.close()
    assert got["ts"].to_list() == minutes[:-1]
    assert got["close"].to_list() == [60_000.0 + i for i in range(len(minutes) - 1)]
    assert got.filter(pl.col("ts").dt.year() != 2026).is_empty()
    c = client.counters
    assert client.metrics.connects == 1 and len(connections) == 1  # never died, never reconnected
    assert c.malformed >= 3 + 1  # deep nesting, bytes, a non-object, the 4 MB frame of invalid candles
    assert c.implausible == 3  # year 2100, year 1960, a negative price
    assert c.unknown_pair == 2
    assert c.malformed + c.boundary_errors >= 5  # the 10^400 price: rejected as not understood


async def test_kraken_stream_when_server_drops_right_after_subscribe_then_backoff_keeps_growing(tmp_path) -> None:
    # Arrange: a server that acknowledges the subscription and hangs up at once, every time.
    async def handler(ws) -> None:
        sub = json.loads(await ws.recv())
        for symbol in sub["params"]["symbol"]:
            await ws.send(json.dumps({"method": "subscribe", "success": True, "req_id": sub["req_id"],
                                      "result": {"channel": "ohlc", "symbol": symbol, "interval": 1}}))
        await ws.close()

    attempts: list[int] = []

    class Recording(KrakenStreamClient):
        def backoff(self, attempt: int) -> float:
            attempts.append(attempt)
            return super().backoff(attempt)

    server = await websockets.serve(handler, "127.0.0.1", 0)
    port = list(server.sockets)[0].getsockname()[1]
    store = DuckDBStore(tmp_path / "k.duckdb")
    client = Recording(url=f"ws://127.0.0.1:{port}", symbols={"BTC": "BTC/USD"}, quote="USD",
                       writer=CandleWriter(store, batch_events=10, batch_seconds=0.05),
                       reconnect_initial=0.01, reconnect_max=0.1, stable_seconds=30.0)
    stop = asyncio.Event()
    # Act
    task = asyncio.create_task(client.run(stop))
    try:
        for _ in range(400):
            if len(attempts) >= 4:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        server.close()
        await server.wait_closed()
        store.close()
    # Assert: authenticated each time, yet the backoff never started over (no reconnect storm).
    assert client.metrics.connects >= 4
    assert attempts[:4] == [0, 1, 2, 3]
