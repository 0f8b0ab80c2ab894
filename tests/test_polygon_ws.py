"""Polygon stream client against real WebSocket servers on loopback: a scripted peer sending bad and
disordered frames, and the replay server with a key check."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import websockets
from pydantic import SecretStr

from core.errors import FeedError
from core.feeds.ingest import CandleWriter
from core.feeds.polygon_schemas import candles_to_xa_json
from core.feeds.polygon_ws import PolygonStreamClient
from core.feeds.replay_server import ReplayTape, ReplayWsServer
from core.storage.duckdb_store import DuckDBStore

KEY = SecretStr("ws-key")
START = datetime(2026, 4, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def minutes(real_candles) -> pl.DataFrame:
    return real_candles("1m", ["BTC", "ETH"], START, START + timedelta(minutes=5)).drop("timeframe")


@pytest.fixture
def store(tmp_path):
    s = DuckDBStore(tmp_path / "ws.duckdb")
    yield s
    s.close()


def _status(status: str, message: str = "") -> str:
    return json.dumps([{"ev": "status", "status": status, "message": message}])


async def _scripted_server(frames: list[str], subscribed: list[str]):
    """A minimal Polygon peer: connected -> auth -> subscribe -> the given frames, then stays open."""

    async def handler(ws):
        await ws.send(_status("connected", "Connected Successfully"))
        auth = json.loads(await ws.recv())
        assert auth["action"] == "auth"
        await ws.send(_status("auth_success", "authenticated"))
        sub = json.loads(await ws.recv())
        subscribed.append(sub["params"])
        await ws.send(_status("success", f"subscribed to: {sub['params']}"))
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    return await websockets.serve(handler, "127.0.0.1", 0)


async def _run_until(client: PolygonStreamClient, cond, timeout: float = 10.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        assert not task.done(), f"client stopped early: {task.exception()!r}"
        await asyncio.sleep(0.02)
    stop.set()
    await task


def _client(url: str, store, key: SecretStr = KEY) -> PolygonStreamClient:
    writer = CandleWriter(store, batch_events=1000, batch_seconds=0.05)
    return PolygonStreamClient(url=url, api_key=key, symbols=["BTC", "ETH"], quote="USDT", writer=writer,
                               reconnect_initial=0.05, reconnect_max=0.1)


async def test_stream_when_frames_malformed_or_mistyped_then_counted_and_valid_events_stored(minutes, store, caplog):
    # Arrange: good events of real candles, interleaved with every kind of bad input.
    good = candles_to_xa_json(minutes, "USDT").to_list()
    bad_type = json.loads(good[0]) | {"o": "97000.5"}
    bad_ts = json.loads(good[1]) | {"s": "yesterday"}
    impossible = json.loads(good[2]) | {"h": 1.0}  # high below open/close
    frames = [
        "{not json",
        json.dumps([bad_type, bad_ts, impossible, 42, {"ev": "XQ", "pair": "BTC-USDT"}]),
        json.dumps([json.loads(good[3]) | {"pair": "BTC-EUR"}]),
        "[" + ",".join(good) + "]",
    ]
    subscribed: list[str] = []
    server = await _scripted_server(frames, subscribed)
    client = _client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", store)
    # Act
    with caplog.at_level(logging.WARNING):
        await _run_until(client, lambda: client.writer.metrics.rows_written >= len(good))
    server.close()
    # Assert
    c = client.counters
    assert (c.malformed_json, c.wrong_type, c.invalid_values, c.unknown_event, c.unknown_pair) == (1, 3, 1, 1, 1)
    assert c.aggregates == len(good)
    assert subscribed == ["XA.BTC-USDT,XA.ETH-USDT"]
    assert client.metrics.connects == 1 and client.metrics.disconnects == 0
    stored = store.read_many(["BTC", "ETH"], "1m")
    assert stored.drop("timeframe").equals(minutes.sort("symbol", "ts").select(stored.drop("timeframe").columns))
    assert "malformed JSON" in caplog.text and KEY.get_secret_value() not in caplog.text


async def test_stream_when_events_out_of_order_and_duplicated_then_one_row_per_minute_last_wins(minutes, store):
    # Arrange: BTC minutes sent newest first, minute 2 sent twice, the second time corrected.
    btc = minutes.filter(pl.col("symbol") == "BTC").sort("ts")
    events = [json.loads(e) for e in candles_to_xa_json(btc, "USDT").to_list()]
    corrected = events[2] | {"c": events[2]["c"] * 1.001, "h": max(events[2]["h"], events[2]["c"] * 1.001)}
    frames = [json.dumps(events[::-1]), json.dumps([events[2]]), json.dumps([corrected])]
    server = await _scripted_server(frames, [])
    client = _client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", store)
    # Act
    await _run_until(client, lambda: client.counters.aggregates >= len(events) + 2)
    server.close()
    # Assert
    stored = store.read_candles("BTC", "1m")
    assert stored["ts"].to_list() == btc["ts"].to_list()
    assert stored["close"][2] == pytest.approx(corrected["c"])
    assert stored["close"][3] == btc["close"][3]


async def test_stream_when_key_rejected_then_feed_error_and_no_reconnect(minutes, store, caplog):
    tape = ReplayTape(minutes, "USDT")
    async with ReplayWsServer(tape, api_key=KEY, speed=0) as server:
        client = _client(server.url, store, key=SecretStr("bad-key-123"))
        with caplog.at_level(logging.DEBUG), pytest.raises(FeedError, match="rejected the API key"):
            await asyncio.wait_for(client.run(), timeout=5)
        await asyncio.sleep(0.3)  # longer than several backoff periods: a retry loop would show here
        assert server.connections == 1
    assert "bad-key-123" not in caplog.text


async def test_stream_when_server_unreachable_then_retries_with_jittered_backoff(store):
    # Arrange: a port nobody listens on.
    probe = await websockets.serve(lambda ws: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = _client(f"ws://127.0.0.1:{port}", store)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    # Act
    await asyncio.sleep(0.5)
    stop.set()
    await task
    # Assert: several attempts, none connected, and the loop ended cleanly on stop
    assert client.metrics.disconnects >= 3 and client.metrics.connects == 0


def test_backoff_when_attempts_grow_then_doubles_with_jitter_and_caps():
    client = PolygonStreamClient(url="ws://x", api_key=KEY, symbols=["BTC"], quote="USD", writer=None,  # type: ignore[arg-type]
                                 reconnect_initial=1.0, reconnect_max=8.0, rng=random.Random(3))
    delays = [client.backoff(k) for k in range(6)]
    for k, d in enumerate(delays):
        base = min(8.0, 2.0**k)
        assert 0.5 * base <= d <= base
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
