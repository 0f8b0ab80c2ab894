"""Replay-as-live: recorded real bars re-timed so the newest replayed bar closes NOW, the history before
it written to the store, and the rest streamed at wall-clock pace over the Polygon protocol (the
local replay servers). `make up` on a machine with no network then looks, to every flow, like a live
market: the freshness gate passes and scans decide.

Re-timing shifts every timestamp by one whole number of hours (`offset = floor_hour(now) - anchor`), so
hourly bars stay on hour boundaries and the recorded minute `anchor + now.minute` becomes the current
minute. The store gets, before the stream starts:
- the shipped detection-timeframe bars (all monitored coins) of the hours closed before now;
- the recorded 1m bars closed before now (the minutes of the current hour so far, and earlier ones).
The stream then sends each later 1m bar once its (re-timed) minute has closed on the wall clock.

The anchor (feed.replay_anchor, default 2026-04-07 22:00 UTC) is chosen so that decisions come at once:
the hour before it (21:00) and the next two hours carry 7, 9 and 6 swing signals in the shipped data,
so the first scan after start-up (every 5 minutes) decides on 21:00, and the following hours decide on
bars that the stream itself completed. The 1m recording runs to 2026-04-22 12:07: about 14.5 days of
wall-clock replay from this anchor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
from pydantic import SecretStr

from core.data_import import load_shipped
from core.domain import CANDLE_SCHEMA, timeframe_duration
from core.feeds.polygon_schemas import MINUTE_MS
from core.feeds.replay_server import ReplayTape, ReplayWsServer
from core.settings import Settings
from core.storage.base import CandleStore

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
OFFSET_RECORD = "replay_live_offset"  # store record kind: anchor -> the offset of the first start


@dataclass(frozen=True)
class LiveReplayPlan:
    offset: timedelta
    history_tf: pl.DataFrame  # detection-timeframe bars closed before now (re-timed)
    history_1m: pl.DataFrame  # 1m bars closed before now (re-timed)
    live: pl.DataFrame  # 1m bars from the current minute on (re-timed), to stream


def _floor(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=ts.tzinfo)
    return ts - (ts - epoch) % step


def plan_live_replay(
    recorded_1m: pl.DataFrame, shipped_tf: pl.DataFrame, *, anchor: datetime, now: datetime, timeframe: str = "1h",
    offset: timedelta | None = None,
) -> LiveReplayPlan:
    """Split recorded bars, re-timed by whole hours so `anchor` becomes the current hour (or by a given
    `offset`: the one of an earlier start), into what has closed by `now` (history) and what is still
    to come (live)."""
    if anchor.tzinfo is None or now.tzinfo is None:
        raise ValueError("anchor and now must be timezone-aware UTC")
    if anchor != _floor(anchor, HOUR):
        raise ValueError(f"replay anchor {anchor} must be on an hour boundary")
    if offset is None:
        offset = _floor(now, HOUR) - anchor
    if offset % HOUR:
        raise ValueError(f"replay offset {offset} must be whole hours")
    cut = _floor(now, timedelta(minutes=1))
    step = timeframe_duration(timeframe)
    shift = pl.col("ts") + offset
    minutes = recorded_1m.with_columns(ts=shift, timeframe=pl.lit("1m")).select(list(CANDLE_SCHEMA)).cast(CANDLE_SCHEMA)  # type: ignore[arg-type]
    hours = shipped_tf.with_columns(ts=shift).select(list(CANDLE_SCHEMA)).cast(CANDLE_SCHEMA)  # type: ignore[arg-type]
    return LiveReplayPlan(
        offset=offset,
        history_tf=hours.filter(pl.col("ts") + step <= _floor(now, step)),
        history_1m=minutes.filter(pl.col("ts") < cut),
        live=minutes.filter(pl.col("ts") >= cut).sort("ts", "symbol"),
    )


def prepare_live_replay(
    settings: Settings, store: CandleStore, symbols: list[str], now: datetime, *, history_days: int = 40
) -> ReplayTape:
    """Write the re-timed history into the store and return the tape of bars still to stream."""
    anchor = settings.feed.replay_anchor
    tf = settings.data.detection_timeframe
    path = settings.data.data_dir / "ohlcv_1m.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no recorded 1m candles at {path}; set data.data_dir")
    recorded = load_shipped(settings.data.data_dir, "1m", symbols)
    shipped = load_shipped(settings.data.data_dir, tf, list(settings.data.symbols),
                           anchor - timedelta(days=history_days), anchor + timedelta(days=30))
    # A restarted stream (the supervisor restarts it) keeps the first start's offset: the store never
    # holds one recorded minute under two timestamps. A new anchor starts a new mapping.
    saved = dict(store.get_records(OFFSET_RECORD)).get(anchor.isoformat())
    offset = timedelta(seconds=saved["offset_seconds"]) if saved else None
    plan = plan_live_replay(recorded, shipped, anchor=anchor, now=now, timeframe=tf, offset=offset)
    store.put_records(OFFSET_RECORD, [(anchor.isoformat(), {"offset_seconds": plan.offset.total_seconds()})])
    if plan.live.is_empty():
        raise ValueError(f"nothing left to replay after {anchor} in {path}")
    written = store.upsert_candles(plan.history_tf) + store.upsert_candles(plan.history_1m)
    log.info("replay-as-live: recorded %s shown as %s (offset %s); %d history bars stored, %d bars to stream",
             anchor, _floor(now, HOUR), plan.offset, written, plan.live.height)
    return ReplayTape(plan.live, settings.data.quote)


class WallClockReplayServer(ReplayWsServer):
    """The replay server pacing by the wall clock: a bar is sent once its (re-timed) minute has closed
    by `wall()`, whenever the first client subscribed; REST serves what has closed so far."""

    def __init__(self, tape: ReplayTape, *, api_key: SecretStr, host: str = "127.0.0.1", port: int = 0,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(tape, api_key=api_key, speed=1.0, host=host, port=port)
        self.wall = wall

    async def _publish(self) -> None:
        tape, i, n = self.tape, 0, len(self.tape)
        await self._subscribed.wait()
        while i < n:
            close_ms = tape.s_ms[i] + MINUTE_MS
            wait = close_ms / 1000 - self.wall()
            if wait > 0:
                await asyncio.sleep(wait)
            j = i
            while j < n and tape.s_ms[j] == tape.s_ms[i]:
                j += 1
            tape.closed_until_ms = max(tape.closed_until_ms, close_ms)
            await self._broadcast(i, j)
            i = j
        self.finished.set()
