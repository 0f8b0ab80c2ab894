"""Kraken keyless market data: the local Kraken double (itself checked against the published protocol),
the ccxt REST adapter (markets, closed-candle paging, errors, the 720 window) and the WebSocket v2
stream (only closed candles stored; drop -> reconnect -> REST gap repair) into a real DuckDB store."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import websockets

from core.domain import CANDLE_SCHEMA
from core.errors import FeedError
from core.feeds.ingest import CandleWriter
from core.feeds.kraken_rest import KrakenRest, backfill, make_exchange
from core.feeds.kraken_ws import KrakenStreamClient
from core.storage.duckdb_store import DuckDBStore
from tests.kraken_server import KrakenDouble, KrakenState

T0 = datetime(2026, 4, 3, 8, 0, tzinfo=UTC)
COINS = ["BTC", "ETH", "XRP"]


@pytest.fixture(scope="module")
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1m", COINS, T0 - timedelta(hours=13), T0 + timedelta(hours=1)).drop("timeframe")


def _expected(bars: pl.DataFrame, coins: list[str], start: datetime, end: datetime) -> pl.DataFrame:
    sel = bars.filter(pl.col("symbol").is_in(coins), pl.col("ts") >= start, pl.col("ts") < end)
    return sel.with_columns(timeframe=pl.lit("1m")).select(list(CANDLE_SCHEMA)).cast(CANDLE_SCHEMA).sort("symbol", "ts")


@pytest.fixture
def store(tmp_path):
    s = DuckDBStore(tmp_path / "k.duckdb")
    yield s
    s.close()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _rest(double: KrakenDouble, **kw) -> KrakenRest:
    return KrakenRest(make_exchange(double.rest_url, timeout_seconds=5, rate_limit_ms=0), backoff=0.01,
                      sleep=lambda s: None, **kw)


async def _double(bars: pl.DataFrame, now: datetime, **kw) -> KrakenDouble:
    return await KrakenDouble(KrakenState(bars, COINS, now=now, **kw)).start()


# --- the double itself ---------------------------------------------------------------------------------


async def test_kraken_double_when_ohlc_asked_then_committed_after_since_then_running_candle_and_last(bars) -> None:
    now = T0 + timedelta(seconds=20)
    d = await _double(bars, now)
    try:
        since = int((T0 - timedelta(minutes=3)).timestamp())
        body = await asyncio.to_thread(_get, f"{d.rest_url}/0/public/OHLC?pair=XBTUSD&interval=1&since={since}")
        full = await asyncio.to_thread(_get, f"{d.rest_url}/0/public/OHLC?pair=XXBTZUSD&interval=1")
        bad = await asyncio.to_thread(_get, f"{d.rest_url}/0/public/OHLC?pair=FOOUSD&interval=1")
        bad_iv = await asyncio.to_thread(_get, f"{d.rest_url}/0/public/OHLC?pair=XBTUSD&interval=2")
    finally:
        await d.stop()
    rows = body["result"]["XXBTZUSD"]
    times = [r[0] for r in rows]
    # since is exclusive: the 2 committed minutes after it, then the running 08:00 candle
    assert times == [since + 60, since + 120, int(T0.timestamp())]
    assert body["result"]["last"] == since + 120
    rec = bars.filter(pl.col("symbol") == "BTC", pl.col("ts") == T0).row(0, named=True)
    assert float(rows[-1][4]) != pytest.approx(rec["close"]) or rec["close"] == rec["open"]  # not final yet
    assert all(isinstance(v, str) for v in rows[0][1:7])
    # only the newest 720 committed candles, plus the running one
    assert len(full["result"]["XXBTZUSD"]) == 721
    assert full["result"]["XXBTZUSD"][0][0] == int((T0 - timedelta(minutes=720)).timestamp())
    assert bad == {"error": ["EQuery:Unknown asset pair"]}
    assert bad_iv == {"error": ["EGeneral:Invalid arguments"]}


async def test_kraken_double_when_subscribed_then_ack_per_symbol_snapshot_then_updates(bars) -> None:
    d = await _double(bars, T0 + timedelta(seconds=5), snapshot_depth=3)
    try:
        async with websockets.connect(d.ws_url) as ws:
            status = json.loads(await ws.recv())
            await ws.send(json.dumps({"method": "subscribe", "params": {
                "channel": "ohlc", "symbol": ["BTC/USD", "BNB/USD"], "interval": 1}, "req_id": 7}))
            acks = [json.loads(await ws.recv()) for _ in range(2)]
            snap = json.loads(await ws.recv())
            await d.advance(1)
            updates = [json.loads(await ws.recv()) for _ in range(3)]  # 08:00 final, then 08:01 partials
    finally:
        await d.stop()
    assert status["channel"] == "status" and status["data"][0]["api_version"] == "v2"
    ok = next(a for a in acks if a["success"])
    refused = next(a for a in acks if not a["success"])
    assert ok["result"]["symbol"] == "BTC/USD" and ok["req_id"] == 7
    assert refused["symbol"] == "BNB/USD" and "not supported" in refused["error"]
    assert snap["type"] == "snapshot"
    begins = [c["interval_begin"][:16] for c in snap["data"]]
    assert begins == ["2026-04-03T07:57", "2026-04-03T07:58", "2026-04-03T07:59", "2026-04-03T08:00"]
    assert [u["type"] for u in updates] == ["update"] * 3
    assert [u["data"][0]["interval_begin"][:16] for u in updates] == ["2026-04-03T08:00"] + ["2026-04-03T08:01"] * 2
    final = bars.filter(pl.col("symbol") == "BTC", pl.col("ts") == T0).row(0, named=True)
    assert updates[0]["data"][0]["close"] == final["close"] and updates[0]["data"][0]["volume"] == final["volume"]


# --- REST through ccxt -------------------------------------------------------------------------------


async def test_kraken_rest_when_universe_checked_then_missing_and_offline_coins_named(bars) -> None:
    d = await _double(bars, T0, offline={"ETH"})
    try:
        check = await asyncio.to_thread(_rest(d).check_universe, ["BTC", "ETH", "XRP", "BNB"])
    finally:
        await d.stop()
    assert check.tradable == {"BTC": "BTC/USD", "XRP": "XRP/USD"}
    assert check.missing == ["BNB"] and check.inactive == ["ETH"]
    assert "BNB" in check.describe() and "ETH" in check.describe() and not check.ok


async def test_kraken_rest_when_backfilled_then_closed_bars_equal_recorded_and_window_reported(bars, store) -> None:
    now = T0 + timedelta(minutes=30, seconds=40)
    d = await _double(bars, now)
    rest = _rest(d)
    try:
        written = await asyncio.to_thread(backfill, rest, store, COINS, "1m", T0 - timedelta(hours=13), now)
        again = await asyncio.to_thread(backfill, rest, store, COINS, "1m", T0 - timedelta(hours=13), now)
    finally:
        await d.stop()
    first = now.replace(second=0) - timedelta(minutes=720)
    want = _expected(bars, COINS, first, now.replace(second=0))  # 08:30 is still running: not stored
    got = store.read_many(COINS, "1m").sort("symbol", "ts")
    assert got.equals(want)
    assert written == again == {c: 720 for c in COINS}
    assert rest.metrics.unclosed_dropped >= 3
    assert rest.metrics.unavailable_minutes == 2 * 3 * 90  # two backfills; 19:00..20:30 is out of the window


async def test_kraken_rest_when_service_unavailable_then_retried_and_unknown_pair_not_retried(bars) -> None:
    d = await _double(bars, T0 + timedelta(minutes=5), script=[(200, "EService:Unavailable"), (503, None)])
    rest = _rest(d)
    try:
        frame = await asyncio.to_thread(rest.fetch_closed, "ETH", "1m", T0, T0 + timedelta(minutes=5))
        with pytest.raises(FeedError, match="no online BNB/USD market"):
            await asyncio.to_thread(rest.fetch_closed, "BNB", "1m", T0, T0 + timedelta(minutes=5))
        ohlc_calls = [p for p, _ in d.state.requests if p == "/0/public/OHLC"]
    finally:
        await d.stop()
    assert frame.equals(_expected(bars, ["ETH"], T0, T0 + timedelta(minutes=5)))
    assert len(ohlc_calls) == 3  # two faults (HTTP 200 with an error, HTTP 503), then the answer


# --- WebSocket v2 stream -------------------------------------------------------------------------------


async def _wait_rows(store: DuckDBStore, n: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while store.read_many(COINS, "1m").height < n and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


async def test_kraken_stream_when_minutes_pass_then_only_closed_candles_stored_equal_recorded(bars, store) -> None:
    d = await _double(bars, T0 + timedelta(seconds=10), snapshot_depth=2)
    writer = CandleWriter(store, batch_events=1000, batch_seconds=0.05)
    client = KrakenStreamClient(url=d.ws_url, symbols={c: f"{c}/USD" for c in COINS}, quote="USD", writer=writer)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        while client.metrics.connects == 0:
            await asyncio.sleep(0.02)
        await d.advance(5)  # now 08:05:10; 08:05 is running
        await _wait_rows(store, 3 * 7)
    finally:
        stop.set()
        await task
        await d.stop()
    got = store.read_many(COINS, "1m").sort("symbol", "ts")
    assert got.equals(_expected(bars, COINS, T0 - timedelta(minutes=2), T0 + timedelta(minutes=5)))
    assert client.counters.closed == 3 * 7 and client.counters.malformed == 0


async def test_kraken_stream_when_connection_dropped_then_reconnects_and_repairs_gap_without_duplicates(bars, store) -> None:
    d = await _double(bars, T0 + timedelta(seconds=10), snapshot_depth=1)
    rest = _rest(d)
    await asyncio.to_thread(rest.check_universe, COINS)
    writer = CandleWriter(store, batch_events=1000, batch_seconds=0.05)
    client = KrakenStreamClient(url=d.ws_url, symbols={c: f"{c}/USD" for c in COINS}, quote="USD", writer=writer,
                                rest=rest, reconnect_initial=0.3, reconnect_max=0.3,
                                clock=lambda: d.state.now, repair_lookback=timedelta(minutes=30))
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        while client.metrics.connects == 0:
            await asyncio.sleep(0.02)
        await d.advance(3)
        await d.drop_clients()
        await d.advance(10)  # ten minutes the stream never sees
        while client.metrics.connects < 2:
            await asyncio.sleep(0.02)
        await d.advance(2)
        await _wait_rows(store, 3 * 45)
    finally:
        stop.set()
        await task
        await d.stop()
    got = store.read_many(COINS, "1m").sort("symbol", "ts")
    want = _expected(bars, COINS, T0 - timedelta(minutes=30), T0 + timedelta(minutes=15))
    assert got.equals(want)  # every minute once, none missing, the running 08:15 candle absent
    assert client.metrics.repaired_rows >= 3 * 10 and client.metrics.disconnects == 1


# --- wiring: source choice and the `mlcrypto backfill` command -------------------------------------------


async def test_resolve_source_when_no_key_then_kraken_if_it_answers_else_replay(bars) -> None:
    from core.feeds.runner import resolve_source
    from core.settings import Settings

    d = await _double(bars, T0)
    try:
        up = Settings(feed={"kraken_rest_url": d.rest_url, "kraken_rate_limit_ms": 0})
        got_up = await asyncio.to_thread(resolve_source, up, "auto")
    finally:
        await d.stop()
    down = Settings(feed={"kraken_rest_url": d.rest_url, "kraken_rate_limit_ms": 0, "http_max_retries": 0})
    assert got_up == "kraken"
    assert await asyncio.to_thread(resolve_source, down, "auto") == "replay"  # the double is gone
    assert resolve_source(Settings(feed={"polygon_api_key": "k"}), "auto") == "polygon"
    assert resolve_source(Settings(feed={"source": "replay"}), "auto") == "replay"


async def test_backfill_cli_when_coin_not_listed_then_named_and_the_rest_stored(bars, tmp_path, monkeypatch) -> None:
    import typer
    from typer.testing import CliRunner

    from deployments.commands import feeds

    app = typer.Typer()
    feeds.register(app)
    now = T0 + timedelta(minutes=20, seconds=5)
    d = await _double(bars, now)
    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MLCRYPTO_FEED__KRAKEN_REST_URL", d.rest_url)
    monkeypatch.setenv("MLCRYPTO_FEED__KRAKEN_RATE_LIMIT_MS", "0")
    monkeypatch.setenv("COLUMNS", "200")
    try:
        result = await asyncio.to_thread(CliRunner().invoke, app, [
            "backfill", "-s", "BTC,BNB,XRP", "--start", "2026-04-03T07:00", "--end", now.isoformat()])
    finally:
        await d.stop()
    assert result.exit_code == 0, result.output
    assert "no USD market for BNB" in result.output
    with DuckDBStore(tmp_path / "var" / "store.duckdb") as s:
        got = s.read_many(["BTC", "XRP", "BNB"], "1m").sort("symbol", "ts")
    assert got.equals(_expected(bars, ["BTC", "XRP"], T0 - timedelta(hours=1), T0 + timedelta(minutes=20)))
