"""Hostile input on the stream: a real WebSocket server on loopback sends every hostile class of
issue 13 mixed with valid bars; the real store must end with every valid bar exactly once and nothing
else, the stream task alive, bad messages counted by kind and logged once per kind."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
import websockets
from pydantic import SecretStr

from bench.bench_hostile import hostile_frames
from core.errors import DataQualityError, FeedError, StoreError
from core.feeds.ingest import CandleWriter
from core.feeds.polygon_schemas import (
    ParseCounters,
    candles_to_xa_json,
    parse_ws_message,
)
from core.feeds.polygon_ws import PolygonStreamClient
from core.storage.duckdb_store import DuckDBStore

KEY = SecretStr("hostile-key")
START = datetime(2026, 4, 3, 8, 0, tzinfo=UTC)
SYMBOLS = ["BTC", "ETH"]
QUOTE = "USDT"


@pytest.fixture
def minutes(real_candles) -> pl.DataFrame:
    return real_candles("1m", SYMBOLS, START, START + timedelta(minutes=5)).drop("timeframe")


def _status(status: str, message: str = "") -> str:
    return json.dumps([{"ev": "status", "status": status, "message": message}])


async def _serve(frames: list[str], *, auth: str = "auth_success", close_after: bool = False,
                 hold: float | None = None) -> Any:
    """A Polygon peer: connected -> auth -> subscribe -> frames; then stays open, closes, or holds."""

    async def handler(ws: Any) -> None:
        await ws.send(_status("connected", "Connected Successfully"))
        await ws.recv()
        await ws.send(_status(auth))
        if auth != "auth_success":
            return
        await ws.recv()
        for frame in frames:
            await ws.send(frame)
        if hold is not None:
            await asyncio.sleep(hold)
            return
        if close_after:
            return
        await ws.wait_closed()

    return await websockets.serve(handler, "127.0.0.1", 0, max_size=None)


def _client(url: str, store: Any, **kwargs: Any) -> PolygonStreamClient:
    writer = CandleWriter(store, batch_events=kwargs.pop("batch_events", 1000),
                          batch_seconds=kwargs.pop("batch_seconds", 0.05))
    return PolygonStreamClient(url=url, api_key=KEY, symbols=SYMBOLS, quote=QUOTE, writer=writer,
                               reconnect_initial=0.05, reconnect_max=0.2, **kwargs)


async def _until(cond: Any, task: asyncio.Task[None], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        assert not task.done(), f"stream task died: {task.exception()!r}"
        await asyncio.sleep(0.02)


async def test_stream_when_hostile_server_then_valid_bars_stored_once_and_task_alive(minutes, store, caplog):
    # Arrange: 10 valid bars (real candles) spread over frames of every hostile class.
    valid = [json.loads(e) for e in candles_to_xa_json(minutes, QUOTE).to_list()]
    frames, expected = hostile_frames(valid)
    server = await _serve(frames)
    client = _client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", store)
    stop = asyncio.Event()
    # Act
    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(client.run(stop))
        await _until(lambda: client.counters.messages >= len(frames) + 2
                     and client.writer.metrics.rows_written >= len(valid), task)
        alive = not task.done()
        stop.set()
        await task
    server.close()
    # Assert: every valid bar once, nothing else; the task lived; bad input counted by kind.
    stored = store.read_many(SYMBOLS, "1m").drop("timeframe")
    assert stored.equals(minutes.select(stored.columns).sort("symbol", "ts"))
    assert alive and client.metrics.connects == 1 and client.metrics.disconnects == 0
    bad = client.counters.bad_by_kind()
    assert bad == expected
    assert client.writer.metrics.write_failures == 0
    warnings = [r for r in caplog.records if r.getMessage().startswith("dropped ")]
    assert len(warnings) == len(expected)  # one line per kind, not one per event (40,000+)


@pytest.mark.parametrize(
    ("pair", "accepted"),
    [("BTC-USDT", True), ("FOO-USDT", False), ("btc-USDT", False), ("BTC-ETH-USDT", False), ("BTC-USD", False),
     ("-USDT", False), ("BTC", False)],
)
def test_parse_ws_message_when_pair_given_then_only_subscribed_pairs_accepted(minutes, pair, accepted):
    event = json.loads(candles_to_xa_json(minutes.head(1), QUOTE)[0]) | {"pair": pair}
    counters = ParseCounters()
    parsed = parse_ws_message(json.dumps([event]), QUOTE, counters, symbols=frozenset(SYMBOLS))
    assert len(parsed.candles) == int(accepted)
    assert counters.unknown_pair == int(not accepted)
    if accepted:
        assert parsed.candles["symbol"].to_list() == ["BTC"]


def test_parse_ws_message_when_parser_panics_then_counted_but_process_control_propagates(monkeypatch):
    # polars' PanicException is a BaseException: the boundary must count it; Ctrl-C must still stop.
    import core.feeds.polygon_schemas as schemas

    counters = ParseCounters()
    for exc, counted in ((pl.exceptions.PanicException("boom"), True), (KeyboardInterrupt(), False),
                         (asyncio.CancelledError(), False), (SystemExit(3), False)):
        def loads(_raw: Any, exc: BaseException = exc) -> Any:
            raise exc

        monkeypatch.setattr(schemas.json, "loads", loads)
        if counted:
            assert parse_ws_message("[]", QUOTE, counters).candles.is_empty()
        else:
            with pytest.raises(type(exc)):
                parse_ws_message("[]", QUOTE, counters)
    assert counters.boundary_errors == 1


async def test_stream_when_connection_dies_then_received_bars_written_before_reconnect(minutes, tmp_path):
    # Arrange: batches that would never fill or time out on their own; the server closes after sending.
    store = DuckDBStore(tmp_path / "s.duckdb")
    frames = ["[" + ",".join(candles_to_xa_json(minutes, QUOTE).to_list()) + "]"]
    server = await _serve(frames, close_after=True)
    client = _client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", store,
                     batch_events=10_000, batch_seconds=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    # Act
    await _until(lambda: len(client.metrics.backoff_attempts) >= 1, task)  # set after the flush
    written_at_disconnect = client.writer.metrics.rows_written
    stop.set()
    await task
    server.close()
    # Assert
    assert written_at_disconnect == len(minutes)
    assert len(store.read_many(SYMBOLS, "1m")) == len(minutes)
    store.close()


async def test_stream_when_run_ends_by_feed_error_then_writer_flushed_in_finally(minutes, tmp_path):
    # Arrange: first connection sends bars and drops; the second rejects the key (FeedError ends run()).
    store = DuckDBStore(tmp_path / "s.duckdb")
    frames = ["[" + ",".join(candles_to_xa_json(minutes, QUOTE).to_list()) + "]"]
    connections = 0

    async def handler(ws: Any) -> None:
        nonlocal connections
        connections += 1
        await ws.send(_status("connected"))
        await ws.recv()
        if connections > 1:
            await ws.send(_status("auth_failed"))
            return
        await ws.send(_status("auth_success"))
        await ws.recv()
        await ws.send(frames[0])

    server = await websockets.serve(handler, "127.0.0.1", 0)
    client = _client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", store,
                     batch_events=10_000, batch_seconds=3600)
    # Act
    with pytest.raises(FeedError):
        await asyncio.wait_for(client.run(asyncio.Event()), 20)
    server.close()
    # Assert
    assert len(store.read_many(SYMBOLS, "1m")) == len(minutes)
    store.close()


class PanickingStore(DuckDBStore):
    """A real DuckDB store whose first `fail` upserts die the way polars does: PanicException."""

    def __init__(self, *args: Any, fail: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail = fail

    def upsert_candles(self, candles: pl.DataFrame) -> int:
        if self.fail > 0:
            self.fail -= 1
            raise pl.exceptions.PanicException("the range of the epoch overflowed")
        return super().upsert_candles(candles)


async def test_writer_when_store_panics_then_counted_and_rows_kept_for_next_flush(minutes, tmp_path):
    store = PanickingStore(tmp_path / "s.duckdb", fail=1)
    writer = CandleWriter(store, batch_events=10_000, batch_seconds=3600)
    frame = minutes.with_columns(timeframe=pl.lit("1m"))
    await writer.add(frame)
    with pytest.raises(StoreError, match="PanicException"):
        await writer.flush()
    assert writer.metrics.write_failures == 1 and writer.pending_rows == len(frame)
    await writer.close()  # the next flush writes them
    assert writer.metrics.rows_written == len(frame)
    assert len(store.read_many(SYMBOLS, "1m")) == len(frame)
    store.close()


async def test_writer_when_store_always_panics_then_close_raises_naming_unwritten_rows(minutes, tmp_path):
    store = PanickingStore(tmp_path / "s.duckdb", fail=10**6)
    writer = CandleWriter(store, batch_events=10_000, batch_seconds=3600)
    await writer.add(minutes.with_columns(timeframe=pl.lit("1m")))
    with pytest.raises(StoreError, match=f"{len(minutes)} received candle"):
        await writer.close()
    assert writer.metrics.write_failures == 1
    store.close()


async def test_writer_when_store_refuses_batch_then_good_rows_written_bad_counted(minutes, tmp_path):
    # The store is the last line of defence: a batch it refuses is not retried forever.
    store = DuckDBStore(tmp_path / "s.duckdb")
    writer = CandleWriter(store, batch_events=10_000, batch_seconds=3600)
    frame = minutes.with_columns(timeframe=pl.lit("1m"))
    future = frame.head(1).with_columns(ts=pl.lit(datetime(2100, 1, 1, tzinfo=UTC)).dt.cast_time_unit("us"))
    await writer.add(pl.concat([frame, future]))
    with pytest.raises(DataQualityError, match="implausible_ts"):
        await writer.flush()
    await writer.close()
    assert writer.metrics.rows_rejected == 1 and writer.metrics.rows_written == len(frame)
    assert store.read_many(SYMBOLS, "1m")["ts"].max() < datetime(2100, 1, 1, tzinfo=UTC)
    store.close()


async def test_stream_when_server_drops_soon_after_auth_then_backoff_grows_and_repairs_rate_limited(tmp_path):
    # Arrange: a server that authenticates and drops at once, every time; REST repair on a real
    # loopback REST server that counts its requests.
    from core.feeds.polygon_rest import PolygonRestClient
    from core.feeds.replay_server import ReplayRestServer, ReplayTape

    store = DuckDBStore(tmp_path / "s.duckdb")
    server = await _serve([], close_after=True)
    tape = ReplayTape(pl.DataFrame(schema={"symbol": pl.Utf8, "ts": pl.Datetime("us", "UTC"), "open": pl.Float64,
                                           "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
                                           "volume": pl.Float64}), QUOTE)
    with ReplayRestServer(tape, api_key=KEY) as rest_server:
        rest = PolygonRestClient(base_url=rest_server.url, api_key=KEY, quote=QUOTE)
        client = _client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", store,
                         rest=rest, stable_seconds=5.0, repair_min_interval=3600.0)
        client.reconnect_initial, client.reconnect_max = 0.01, 0.08
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        # Act
        await _until(lambda: client.metrics.connects >= 6, task)
        stop.set()
        await task
        await rest.aclose()
    server.close()
    # Assert: the attempt number keeps growing (no reset on auth), one repair for all connections.
    attempts = client.metrics.backoff_attempts
    assert attempts[:5] == [0, 1, 2, 3, 4]
    assert client.metrics.short_connections >= 5
    assert client.metrics.gap_repairs + client.metrics.repair_failures == 1
    assert client.metrics.repairs_deferred >= 1
    store.close()


async def test_stream_when_connection_was_stable_then_backoff_resets(tmp_path):
    store = DuckDBStore(tmp_path / "s.duckdb")
    server = await _serve([], hold=0.3)
    client = _client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", store, stable_seconds=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    await _until(lambda: client.metrics.connects >= 3, task)
    stop.set()
    await task
    server.close()
    assert client.metrics.backoff_attempts[:2] == [0, 0] and client.metrics.short_connections == 0
    store.close()
