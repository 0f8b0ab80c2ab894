"""The weekly retrain learns from what the deployment streamed: recorded 1m bars re-timed to after the
shipped history are written by the stream's writer into a real DuckDB store; the retrain's bars
(tasks.ml.load_training_bars -> core.training_history) include their complete hours, once each, and
the labelled events of the next retrain include detections on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from core.feeds.ingest import CandleWriter
from core.settings import load_settings
from core.storage.duckdb_store import DuckDBStore
from core.training_history import training_history

COINS = ["BTC", "ETH", "SOL", "XRP", "BNB"]
SHIPPED_END = datetime(2026, 4, 25, 15, tzinfo=UTC)  # after the last shipped 1h bar of these coins
SHIFT = timedelta(days=14)


async def test_training_history_when_stream_stored_newer_bars_then_retrain_bars_and_events_include_them(
    real_candles, tmp_path
) -> None:
    settings = load_settings(data={"var_dir": tmp_path, "symbols": COINS})
    store = DuckDBStore(settings.duckdb_path)
    recorded = real_candles("1m", COINS, datetime(2026, 4, 12, tzinfo=UTC), datetime(2026, 4, 22, tzinfo=UTC))
    streamed = recorded.with_columns(pl.col("ts") + SHIFT)  # 2026-04-26 .. 05-06: newer than the shipped files
    writer = CandleWriter(store, batch_events=5000, batch_seconds=0.05)
    for chunk in streamed.sort("ts").iter_slices(2000):  # as the stream hands them over
        await writer.add(chunk)
    await writer.close()
    # an hour the scans already derived into the store, overlapping a shipped one: kept once
    overlap = real_candles("1h", ["BTC"], SHIPPED_END - timedelta(hours=2), SHIPPED_END)
    store.upsert_candles(overlap)

    bars = training_history(settings, store)

    hours = bars.filter(pl.col("ts") >= SHIPPED_END)
    # every complete hour of the re-timed stretch (2026-04-26 00:00 .. 05-05 23:59), once per coin
    assert hours.group_by("symbol").len().sort("symbol")["len"].to_list() == [10 * 24] * len(COINS)
    assert bars.height == bars.unique(["symbol", "timeframe", "ts"]).height
    btc = bars.filter(pl.col("symbol") == "BTC", pl.col("ts") == datetime(2026, 4, 26, 5, tzinfo=UTC)).row(0, named=True)
    src = recorded.filter(pl.col("symbol") == "BTC", pl.col("ts").is_between(
        datetime(2026, 4, 12, 5, tzinfo=UTC), datetime(2026, 4, 12, 5, 59, tzinfo=UTC)))
    assert btc["open"] == src["open"][0] and btc["close"] == src["close"][-1] and btc["high"] == src["high"].max()
    # the cut at `end` leaves out what closed after it (no look-ahead)
    cut = training_history(settings, store, end=datetime(2026, 4, 30, tzinfo=UTC))
    assert cut["ts"].max() == datetime(2026, 4, 29, 23, tzinfo=UTC)

    from models.dataset import build_events

    events = build_events(bars, settings)
    newest = max(ev.events["ts"].max() for ev in events.values() if ev.events.height)
    assert newest >= SHIPPED_END  # the retrain labels detections on the streamed bars
    store.close()
