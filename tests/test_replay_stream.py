"""Replay server -> stream client -> DuckDB store, end to end on loopback (real sockets, real store)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from pydantic import SecretStr

from core.feeds.ingest import CandleWriter
from core.feeds.polygon_rest import PolygonRestClient
from core.feeds.polygon_ws import PolygonStreamClient
from core.feeds.replay_server import ReplayRestServer, ReplayTape, ReplayWsServer
from core.storage.duckdb_store import DuckDBStore

KEY = SecretStr("test-key")
SYMBOLS = ["BTC", "ETH"]


@pytest.fixture
def minutes(real_candles) -> pl.DataFrame:
    """Two hours of real 1m bars of two coins (240 events)."""
    start = datetime(2026, 4, 1, tzinfo=UTC)
    return real_candles("1m", SYMBOLS, start, start + timedelta(hours=2)).drop("timeframe")


@pytest.fixture
def duck(tmp_path):
    s = DuckDBStore(tmp_path / "store.duckdb")
    s.init_schema()
    yield s
    s.close()


def _client(url: str, store, rest=None, initial: float = 0.05) -> PolygonStreamClient:
    writer = CandleWriter(store, batch_events=50, batch_seconds=0.05)
    return PolygonStreamClient(
        url=url, api_key=KEY, symbols=SYMBOLS, quote="USDT", writer=writer, rest=rest,
        reconnect_initial=initial, reconnect_max=0.2,
    )


async def _wait_for(cond, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _stored(store) -> pl.DataFrame:
    return store.read_many(SYMBOLS, "1m")


async def test_replay_stream_when_tape_played_fast_then_store_equals_recorded_candles(minutes, store):
    """On both store backends (DuckDB file and real Postgres, from conftest's `store` fixture)."""
    # Arrange
    tape = ReplayTape(minutes, "USDT")
    async with ReplayWsServer(tape, api_key=KEY, speed=0, events_per_message=37) as server:
        client = _client(server.url, store)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        # Act
        await server.finished.wait()
        await _wait_for(lambda: client.writer.metrics.rows_received >= len(minutes))
        stop.set()
        await task
    # Assert
    got = _stored(store).drop("timeframe")
    want = minutes.select(got.columns).sort("symbol", "ts")
    assert got.equals(want)
    assert client.counters.aggregates == len(minutes)
    assert client.metrics.connects == 1


async def test_replay_stream_when_server_killed_and_restarted_later_then_gap_repaired_without_duplicates(minutes, duck):
    store = duck
    # Arrange: the replay runs at 3000x (a minute every 20 ms); REST serves what the replay has closed.
    tape = ReplayTape(minutes, "USDT")
    n_minutes = minutes["ts"].n_unique()
    with ReplayRestServer(tape, api_key=KEY) as rest_server:
        rest = PolygonRestClient(base_url=rest_server.url, api_key=KEY, quote="USDT", backoff=0.01, page_limit=7)
        server = await ReplayWsServer(tape, api_key=KEY, speed=3000).start()
        port = server.port
        client = _client(server.url, store, rest=rest)
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await _wait_for(lambda: client.writer.metrics.rows_received >= 40)
        # Act: crash the server, let 30 minutes of the tape pass unseen, restart on the same port.
        await server.stop()
        killed_at = max(tape.closed_until_ms, 0)
        restart_ts = pl.from_epoch(pl.Series([killed_at + 30 * 60_000]), time_unit="ms").dt.replace_time_zone("UTC")[0]
        server2 = await ReplayWsServer(tape, api_key=KEY, speed=3000, port=port, start=restart_ts).start()
        await server2.finished.wait()
        try:
            await _wait_for(lambda: len(_stored(store)) >= len(minutes), timeout=20)
        except AssertionError:  # say which minutes are missing, for whoever has to debug it
            missing = minutes.join(_stored(store), on=["symbol", "ts"], how="anti")
            raise AssertionError(f"{len(missing)} minutes missing, first {missing.head(3).to_dicts()}; "
                                 f"{client.metrics}, pending {client.writer.pending_rows}") from None
        stop.set()
        await task
        await server2.stop()
        await rest.aclose()
    # Assert: every recorded minute exactly once, values identical, and REST did fill the hole.
    got = _stored(store)
    assert got.select(pl.struct("symbol", "ts").is_duplicated().any()).item() is False
    assert got.group_by("symbol").len()["len"].to_list() == [n_minutes, n_minutes]
    assert got.drop("timeframe").equals(minutes.select(got.drop("timeframe").columns).sort("symbol", "ts"))
    assert client.metrics.connects == 2
    assert client.metrics.repaired_rows >= 2 * 30
    assert rest.metrics.pages > 1  # the 7-row page limit forced next_url pagination


async def test_run_stream_when_wired_from_settings_then_replay_source_fills_store(minutes, duck):
    # Arrange: settings point at the replay servers (feed.source=replay: auto would try Kraken first).
    from core.feeds.runner import run_stream
    from core.settings import load_settings

    tape = ReplayTape(minutes, "USDT")
    with ReplayRestServer(tape, api_key=KEY) as rest_server:
        async with ReplayWsServer(tape, api_key=KEY, speed=0) as server:
            settings = load_settings(feed={"source": "replay", "replay_port": server.port, "replay_rest_port": rest_server.port,
                                           "replay_api_key": KEY.get_secret_value(), "write_batch_seconds": 0.05},
                                     data={"quote": "USDT"})
            stop = asyncio.Event()
            task = asyncio.create_task(run_stream(settings, duck, symbols=SYMBOLS, stop=stop))
            # Act
            await server.finished.wait()
            await _wait_for(lambda: len(_stored(duck)) >= len(minutes))
            stop.set()
            summary = await task
    # Assert
    assert summary["source"] == "replay" and summary["rows_written"] == len(minutes)
    assert summary["parse"]["aggregates"] == len(minutes)
