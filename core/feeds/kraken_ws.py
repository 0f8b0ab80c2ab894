"""Kraken WebSocket v2 `ohlc` client (keyless): running 1m candles -> CLOSED bars -> batching writer.

Protocol (https://docs.kraken.com/exchange/api-reference/spot-websocket-v2/ohlc): connect to
wss://ws.kraken.com/v2, which sends a `status` update; send {"method": "subscribe", "params":
{"channel": "ohlc", "symbol": ["BTC/USD", ...], "interval": 1, "snapshot": true}, "req_id": n}; one ack
per symbol comes back (success false, with an error, for a pair Kraken does not list); then a
`snapshot` of recent candles and `update` messages of the RUNNING candle on every trade, each candle as
KrakenOhlcCandle below. A candle is final when a newer interval starts for its symbol: only then is it
written as a bar (CandleCloser). Minutes without trades send nothing, so a quiet coin's last candle
closes with its next trade; the REST gap repair after every (re)connect fills what the stream missed.

Resilience as the Polygon client: reconnect with capped, jittered exponential backoff; after each
subscribe the gap from the last stored minute to now is filled from REST (ccxt) before the stream is
read on; upserts are idempotent, so the overlap of snapshot, repair and updates writes no duplicate.
Malformed messages are counted and logged, never fatal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import polars as pl
import websockets
from pydantic import BaseModel, ConfigDict, ValidationError

from core.boundary import is_process_control
from core.domain import CANDLE_SCHEMA
from core.feeds.ingest import CandleWriter
from core.feeds.kraken_rest import KrakenRest, repair_gaps
from core.plausibility import Bounds
from core.retry import capped_backoff

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0


class KrakenOhlcCandle(BaseModel):
    """One candle of a v2 `ohlc` message, as Kraken publishes it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None = None
    trades: int | None = None
    interval_begin: datetime
    interval: int
    timestamp: datetime | None = None


class KrakenOhlcMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    channel: Literal["ohlc"]
    type: Literal["snapshot", "update"]
    data: list[KrakenOhlcCandle]


@dataclass
class KrakenCounters:
    messages: int = 0
    candles: int = 0
    closed: int = 0
    stale: int = 0  # an update for an interval older than the running one
    malformed: int = 0
    unknown_pair: int = 0  # candles of a pair this client did not subscribe
    implausible: int = 0  # candles outside the plausibility bounds (time, prices, volume)
    boundary_errors: int = 0  # any other failure while handling one frame (counted, never fatal)
    heartbeats: int = 0
    rejected_symbols: list[str] = field(default_factory=list)


class CandleCloser:
    """Tracks the running candle per symbol; hands back a candle once a newer interval has started."""

    def __init__(self) -> None:
        self.running: dict[str, KrakenOhlcCandle] = {}

    def feed(self, candles: list[KrakenOhlcCandle], counters: KrakenCounters) -> list[KrakenOhlcCandle]:
        closed: list[KrakenOhlcCandle] = []
        for c in sorted(candles, key=lambda c: c.interval_begin):
            current = self.running.get(c.symbol)
            if current is None or c.interval_begin == current.interval_begin:
                self.running[c.symbol] = c
            elif c.interval_begin > current.interval_begin:
                closed.append(current)
                self.running[c.symbol] = c
            else:
                counters.stale += 1
        counters.closed += len(closed)
        return closed


def candles_frame(candles: list[KrakenOhlcCandle], quote: str) -> pl.DataFrame:
    """Closed v2 candles -> CANDLE_SCHEMA rows keyed by coin ("BTC/USD" -> "BTC")."""
    if not candles:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    suffix = f"/{quote}"
    return pl.DataFrame(
        {
            "symbol": [c.symbol.removesuffix(suffix) for c in candles],
            "timeframe": [f"{c.interval}m" if c.interval < 60 else f"{c.interval // 60}h" for c in candles],
            "ts": [c.interval_begin.astimezone(UTC) for c in candles],
            "open": [c.open for c in candles], "high": [c.high for c in candles], "low": [c.low for c in candles],
            "close": [c.close for c in candles], "volume": [c.volume for c in candles],
        },
        schema=CANDLE_SCHEMA,
    )


@dataclass
class KrakenStreamMetrics:
    connects: int = 0
    disconnects: int = 0
    gap_repairs: int = 0
    repaired_rows: int = 0
    repair_failures: int = 0


class KrakenStreamClient:
    def __init__(
        self,
        *,
        url: str,
        symbols: dict[str, str],  # coin -> Kraken v2 symbol ("BTC" -> "BTC/USD")
        quote: str,
        writer: CandleWriter,
        rest: KrakenRest | None = None,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 60.0,
        repair_lookback: timedelta | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        bounds: Bounds | None = None,
        stable_seconds: float = 30.0,
    ) -> None:
        self.bounds = bounds or Bounds()
        self.stable_seconds = stable_seconds
        self.url = url
        self.symbols = dict(symbols)
        self.quote = quote
        self.writer = writer
        self.rest = rest
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.repair_lookback = repair_lookback
        self.clock = clock
        self.counters = KrakenCounters()
        self.metrics = KrakenStreamMetrics()
        self.closer = CandleCloser()
        self._rng = rng or random.Random()
        self._req_id = 0

    def backoff(self, attempt: int) -> float:
        base = capped_backoff(attempt, self.reconnect_initial, self.reconnect_max)
        return base * (0.5 + 0.5 * self._rng.random())

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stream until `stop` is set; every failure reconnects (after backoff) and repairs the gap."""
        stop = stop or asyncio.Event()
        try:
            await self._run(stop)
        finally:
            await self.writer.close()  # the bars received are written even when the stream dies

    async def _run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            connected_at: float | None = None
            try:
                async with websockets.connect(self.url, max_size=None, open_timeout=HANDSHAKE_TIMEOUT) as ws:
                    await self._subscribe(ws)
                    self.metrics.connects += 1
                    connected_at = time.monotonic()
                    await self._repair()
                    await self._read(ws, stop)
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                log.warning("Kraken stream %s disconnected: %s: %s", self.url, type(exc).__name__, exc)
            except Exception as exc:  # noqa: BLE001 - never fatal: reconnect after backoff
                log.error("Kraken stream %s failed: %s: %.200s; reconnecting", self.url, type(exc).__name__, exc)
            if stop.is_set():
                break
            if connected_at is not None and time.monotonic() - connected_at >= self.stable_seconds:
                attempt = 0  # only a connection that stayed up starts the backoff over (no reconnect storm)
            self.metrics.disconnects += 1
            # The running candles are not final: forget them; the repair brings the closed ones.
            self.closer.running.clear()
            delay = self.backoff(attempt)
            attempt += 1
            log.info("reconnecting to %s in %.2fs (attempt %d)", self.url, delay, attempt)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _subscribe(self, ws: websockets.ClientConnection) -> None:
        self._req_id += 1
        await ws.send(json.dumps({"method": "subscribe", "params": {
            "channel": "ohlc", "symbol": sorted(self.symbols.values()), "interval": 1, "snapshot": True,
        }, "req_id": self._req_id}))
        pending = set(self.symbols.values())
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        while pending:
            raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
            msg = self._decode(raw)
            if msg is None:
                continue
            if msg.get("method") == "subscribe":
                symbol = (msg.get("result") or {}).get("symbol") or msg.get("symbol")
                pending.discard(symbol)
                if not msg.get("success"):
                    self.counters.rejected_symbols.append(str(symbol))
                    log.error("Kraken refused the ohlc subscription of %s: %s", symbol, msg.get("error"))
            else:
                await self._on_frame(msg)
        log.info("subscribed to ohlc of %d pairs on %s", len(self.symbols), self.url)

    async def _repair(self) -> None:
        if self.rest is None:
            return
        try:
            await self.writer.flush()
            written = await repair_gaps(self.rest, self.writer.store, list(self.symbols), self.clock(),
                                        lookback=self.repair_lookback)
        except Exception as exc:  # noqa: BLE001 - the stream stays useful without the repair; the gate shows the gap
            self.metrics.repair_failures += 1
            log.error("gap repair from Kraken REST failed: %s", exc)
            return
        self.metrics.gap_repairs += 1
        self.metrics.repaired_rows += sum(written.values())
        if any(written.values()):
            log.info("gap repaired from Kraken REST: %s", written)

    def _decode(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            msg = json.loads(raw)
        except BaseException as exc:  # RecursionError on deep nesting, ValueError, ...: one bad frame
            if is_process_control(exc):
                raise
            self.counters.malformed += 1
            log.warning("Kraken sent a frame that is not JSON (%s): %.120r", type(exc).__name__, raw[:120])
            return None
        if not isinstance(msg, dict):
            self.counters.malformed += 1
            return None
        return msg

    async def _handle(self, msg: dict[str, Any], received: float) -> None:
        channel = msg.get("channel")
        if channel == "heartbeat":
            self.counters.heartbeats += 1
            return
        if channel != "ohlc":
            if channel == "status":
                log.info("Kraken status: %s", msg.get("data"))
            return
        self.counters.messages += 1
        try:
            parsed = KrakenOhlcMessage.model_validate(msg)
        except ValidationError as exc:
            self.counters.malformed += 1
            log.warning("Kraken ohlc message not understood (%d errors): %.200r", exc.error_count(), msg)
            return
        self.counters.candles += len(parsed.data)
        subscribed = set(self.symbols.values())
        ours = [c for c in parsed.data if c.symbol in subscribed]
        self.counters.unknown_pair += len(parsed.data) - len(ours)
        # A far-future candle would become the "running" one and make every real update look stale.
        plausible = [c for c in ours if self._plausible(c)]
        self.counters.implausible += len(ours) - len(plausible)
        ours = plausible
        closed = self.closer.feed([c for c in ours if c.interval == 1], self.counters)
        if closed:
            await self.writer.add(candles_frame(closed, self.quote), received)

    def _plausible(self, c: KrakenOhlcCandle) -> bool:
        b = self.bounds
        begin = c.interval_begin.astimezone(UTC)
        if begin < b.earliest or begin > self.clock() + timedelta(minutes=max(1, c.interval)):
            return False
        prices = (c.open, c.high, c.low, c.close)
        if not all(math.isfinite(p) and b.min_price <= p <= b.max_price for p in prices):
            return False
        return math.isfinite(c.volume) and 0 <= c.volume <= b.max_volume

    async def _on_frame(self, raw: str | bytes | dict[str, Any]) -> None:
        """One frame inside the input boundary: whatever it holds, it is handled or counted, never
        fatal to the stream (process control still propagates)."""
        try:
            msg = raw if isinstance(raw, dict) else self._decode(raw)
            if msg is not None:
                await self._handle(msg, time.monotonic())
        except BaseException as exc:
            if is_process_control(exc):
                raise
            self.counters.boundary_errors += 1
            log.warning("Kraken frame dropped (%s: %.200s)", type(exc).__name__, exc)

    async def _read(self, ws: websockets.ClientConnection, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    return
                await self._on_frame(recv.result())
        finally:
            stopper.cancel()
