"""Replay-as-live: recorded real bars re-timed so the newest replayed bar closes now (whole-hour shift,
history in the store, the rest paced by the wall clock over the Polygon protocol), and a deployed
scan right after start-up passes the gate and decides."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import websockets
from pydantic import SecretStr

from core.feeds.replay_live import WallClockReplayServer, plan_live_replay
from core.feeds.replay_server import ReplayTape

ANCHOR = datetime(2026, 4, 7, 22, tzinfo=UTC)
KEY = SecretStr("replay")


def test_plan_live_replay_when_now_mid_hour_then_newest_history_bar_closes_now_and_values_unchanged(real_candles) -> None:
    now = datetime(2030, 1, 2, 15, 37, 20, tzinfo=UTC)
    minutes = real_candles("1m", ["BTC", "ETH"], ANCHOR - timedelta(hours=3), ANCHOR + timedelta(hours=3))
    hours = real_candles("1h", ["BTC", "ETH", "SOL"], ANCHOR - timedelta(days=2), ANCHOR + timedelta(days=1))

    plan = plan_live_replay(minutes, hours, anchor=ANCHOR, now=now)

    assert plan.offset == datetime(2030, 1, 2, 15, tzinfo=UTC) - ANCHOR and plan.offset % timedelta(hours=1) == timedelta(0)
    assert plan.history_1m["ts"].max() == datetime(2030, 1, 2, 15, 36, tzinfo=UTC)  # closes at 15:37, now
    assert plan.live["ts"].min() == datetime(2030, 1, 2, 15, 37, tzinfo=UTC)
    assert plan.history_tf["ts"].max() == datetime(2030, 1, 2, 14, tzinfo=UTC)  # the last closed hour
    assert set(plan.history_tf["symbol"]) == {"BTC", "ETH", "SOL"}
    back = pl.concat([plan.history_1m, plan.live]).with_columns(pl.col("ts") - plan.offset).sort("symbol", "ts")
    assert back.equals(minutes.sort("symbol", "ts"))  # re-timed only: every bar once, values untouched


async def test_wall_clock_replay_when_minutes_close_then_each_sent_only_after_its_close(real_candles) -> None:
    bars = real_candles("1m", ["BTC"], ANCHOR, ANCHOR + timedelta(minutes=3)).drop("timeframe")
    tape = ReplayTape(bars, "USD")
    s0 = tape.s_ms[0] / 1000
    skew = (s0 + 120 - 0.5) - time.time()  # minute 0 has closed, minute 1 closes in 0.5 s, minute 2 in 60.5 s
    server = WallClockReplayServer(tape, api_key=KEY, wall=lambda: time.time() + skew)
    await server.start()
    try:
        async with websockets.connect(server.url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"action": "auth", "params": "replay"}))
            await ws.recv()
            await ws.send(json.dumps({"action": "subscribe", "params": "XA.BTC-USD"}))
            await ws.recv()
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert tape.closed_until_ms == tape.s_ms[0] + 60_000
            second = json.loads(await asyncio.wait_for(ws.recv(), 5))
            try:
                third = await asyncio.wait_for(ws.recv(), 2)
            except TimeoutError:
                third = None
    finally:
        await server.stop()
    assert [e["s"] for e in first] == [tape.s_ms[0]] and [e["s"] for e in second] == [tape.s_ms[1]]
    assert third is None  # minute 2 has not closed on the wall clock yet


def test_scan_and_trade_when_live_replay_prepared_then_first_deployed_scan_passes_gate_and_decides(
    prefect_harness: str, tmp_path, monkeypatch
) -> None:
    from core.feeds.replay_live import prepare_live_replay
    from core.settings import load_settings
    from core.storage.duckdb_store import DuckDBStore
    from flows.scan_and_trade import scan_and_trade

    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path / "var"))
    settings = load_settings()
    (tmp_path / "var").mkdir()
    now = datetime.now(UTC)
    with DuckDBStore(settings.duckdb_path) as store:
        tape = prepare_live_replay(settings, store, ["BTC", "ETH", "SOL", "BNB", "XRP"], now)
    assert tape.s_ms[0] == int(now.replace(second=0, microsecond=0).timestamp() * 1000)

    state = scan_and_trade(derive=True, return_state=True)  # what the 5-minute schedule runs

    assert state.is_completed(), state.message
    out = state.result()
    assert len(out.gate_failed) < len(settings.data.symbols)  # the re-timed bars are fresh
    assert out.decisions, "the anchor's previous hour carries signals: the first scan must decide"
    # The UI shows the paper book the run left: totals and the positions it opened (pending entries).
    from tests.prefect_support import artifacts

    arts = {a.key: a for a in artifacts(state.state_details.flow_run_id)}
    assert {"scan-report", "scan-decisions", "paper-book", "paper-book-positions"} <= set(arts)
    assert "| capital | 1,000.00 |" in arts["paper-book"].data
    taken = sorted(d["symbol"] for d in out.decisions if d["taken"])
    rows = json.loads(arts["paper-book-positions"].data)
    assert sorted(r["symbol"] for r in rows) == taken


def test_prepare_live_replay_when_stream_restarted_later_then_first_offset_kept(tmp_path) -> None:
    from core.feeds.replay_live import prepare_live_replay
    from core.settings import load_settings
    from core.storage.duckdb_store import DuckDBStore

    settings = load_settings(data={"var_dir": tmp_path})
    # A start in the recent past: the store refuses bars from the future (core.plausibility).
    first = (datetime.now(UTC) - timedelta(days=1)).replace(minute=20, second=30, microsecond=0)
    later = first + timedelta(hours=2, minutes=7)
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        tape1 = prepare_live_replay(settings, store, ["BTC"], first)
        tape2 = prepare_live_replay(settings, store, ["BTC"], later)
        stored = store.read_many(["BTC"], "1m")
    offset = first.replace(minute=0, second=0) - ANCHOR
    assert tape1.s_ms[0] == int(first.replace(second=0).timestamp() * 1000)
    assert tape2.s_ms[0] == int(later.replace(second=0).timestamp() * 1000)
    # one mapping: every stored minute is a recorded minute shifted by the first start's offset
    assert stored["ts"].max() == later.replace(second=0) - timedelta(minutes=1)
    recorded = tape2.frame.filter(pl.col("symbol") == "BTC").head(1)
    assert recorded["ts"][0] - offset == ANCHOR + timedelta(hours=2, minutes=27)
