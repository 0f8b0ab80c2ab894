"""Polygon REST aggregates client against the replay REST server (real HTTP on loopback)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from pydantic import SecretStr

from core.errors import FeedError, TemporaryFeedError
from core.feeds.polygon_rest import PolygonRestClient, backfill
from core.feeds.replay_server import ReplayRestServer, ReplayTape
from core.storage.duckdb_store import DuckDBStore

KEY = SecretStr("rest-key")
START = datetime(2026, 4, 2, tzinfo=UTC)


@pytest.fixture
def minutes(real_candles) -> pl.DataFrame:
    return real_candles("1m", ["BTC", "SOL"], START, START + timedelta(minutes=45)).drop("timeframe")


@pytest.fixture
def rest_server(minutes):
    tape = ReplayTape(minutes, "USDT")
    tape.close_all()
    with ReplayRestServer(tape, api_key=KEY) as server:
        yield server


def _client(server: ReplayRestServer, key: SecretStr = KEY, waits: list[float] | None = None, **kw) -> PolygonRestClient:
    async def sleep(seconds: float) -> None:  # records the policy's waits instead of spending them
        if waits is not None:
            waits.append(seconds)

    opts = {"backoff": 0.01, "max_retries": 3, "page_limit": 10, "sleep": sleep} | kw
    return PolygonRestClient(base_url=server.url, api_key=key, quote="USDT", **opts)


def _btc(minutes: pl.DataFrame) -> pl.DataFrame:
    return minutes.filter(pl.col("symbol") == "BTC").sort("ts")


async def test_rest_fetch_when_more_bars_than_limit_then_follows_next_url_pages(rest_server, minutes):
    async with _client(rest_server) as client:
        got = await client.fetch_minutes("BTC", START, START + timedelta(hours=1))
    assert client.metrics.pages == 5  # 45 bars, 10 per page
    assert got.drop("timeframe").equals(_btc(minutes).select(got.drop("timeframe").columns))
    assert set(got["timeframe"]) == {"1m"}


async def test_rest_fetch_when_rate_limited_then_waits_retry_after_and_succeeds(rest_server, minutes):
    rest_server.fail_next(429, times=2, retry_after=7)
    waits: list[float] = []
    async with _client(rest_server, waits=waits, page_limit=100) as client:
        got = await client.fetch_minutes("BTC", START, START + timedelta(hours=1))
    assert client.metrics.rate_limited == 2 and client.metrics.retries == 2
    assert waits == [7.0, 7.0]  # the server's Retry-After, not the 0.01 s backoff
    assert len(got) == 45
    assert [s for _, s in rest_server.requests] == [429, 429, 200]


async def test_rest_fetch_when_server_errors_then_backs_off_and_succeeds(rest_server):
    rest_server.fail_next(500)
    rest_server.fail_next(503)
    waits: list[float] = []
    async with _client(rest_server, waits=waits, page_limit=100, backoff=0.25) as client:
        got = await client.fetch_minutes("SOL", START, START + timedelta(minutes=9))
    assert client.metrics.server_errors == 2
    assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 0.75  # exponential from 0.25 s, jitter <= 0.25 s
    assert len(got) == 10  # both bounds inclusive, like Polygon


async def test_rest_fetch_when_server_keeps_failing_then_temporary_feed_error_after_max_retries(rest_server):
    rest_server.fail_next(500, times=10)
    async with _client(rest_server, max_retries=2) as client:
        with pytest.raises(TemporaryFeedError, match="still failing after 3 attempts .HTTP 500"):
            await client.fetch_minutes("BTC", START, START + timedelta(hours=1))
    assert len(rest_server.requests) == 3


async def test_rest_fetch_when_other_4xx_then_feed_error_without_retry(rest_server):
    rest_server.fail_next(400)
    async with _client(rest_server) as client:
        with pytest.raises(FeedError, match="HTTP 400") as err:
            await client.fetch_minutes("BTC", START, START + timedelta(hours=1))
    assert not isinstance(err.value, TemporaryFeedError)
    assert len(rest_server.requests) == 1


async def test_rest_fetch_when_key_rejected_then_clear_error_without_retry(rest_server):
    async with _client(rest_server, key=SecretStr("wrong-key")) as client:
        with pytest.raises(FeedError, match="refused the API key") as err:
            await client.fetch_minutes("BTC", START, START + timedelta(hours=1))
    assert "wrong-key" not in str(err.value) and not isinstance(err.value, TemporaryFeedError)
    assert rest_server.requests == [(rest_server.requests[0][0], 401)]


async def test_rest_backfill_when_run_twice_then_store_holds_each_bar_once(rest_server, minutes, tmp_path):
    store = DuckDBStore(tmp_path / "s.duckdb")
    async with _client(rest_server) as client:
        first = await backfill(client, store, ["BTC", "SOL"], START, START + timedelta(hours=1), chunk=timedelta(minutes=20))
        await backfill(client, store, ["BTC", "SOL"], START, START + timedelta(hours=1))
    stored = store.read_many(["BTC", "SOL"], "1m")
    store.close()
    assert first == {"BTC": 45, "SOL": 45}
    assert stored.drop("timeframe").equals(minutes.sort("symbol", "ts").select(stored.drop("timeframe").columns))
