"""Polygon crypto WebSocket client: per-minute aggregates (XA) -> candle rows -> batching writer.

Session: connect; expect status "connected"; send {"action":"auth","params":<key>}; expect
"auth_success" (an "auth_failed" raises FeedError and is NOT retried: reconnecting with a rejected key
only gets the key throttled); send {"action":"subscribe","params":"XA.BTC-USD,..."}; read frames.
https://massive.com/docs/websocket/crypto/aggregates-per-minute

Resilience: a dropped connection reconnects with exponential backoff and full jitter (factor 0.5-1.0)
between reconnect_initial_seconds and reconnect_max_seconds. The backoff resets only after a connection
stayed up for `stable_seconds` (feed.stable_connection_seconds): a server that authenticates and then
drops keeps the backoff growing instead of being hammered. After a (re)connect, once subscribed, the
gap from the last stored minute of each symbol to now is filled from the REST aggregates endpoint
before the buffered stream frames are processed; at most one repair runs per `repair_min_interval`
(feed.repair_min_interval_seconds), a repair due sooner is deferred, not dropped. Upserts are
idempotent, so an overlap between the REST fill and the stream is harmless.

Bad input is never fatal: every frame is parsed inside a boundary (see parse_ws_message) that turns
any failure into a counted bad message, only subscribed pairs and plausible bars are kept, and any
other error of a connection reconnects. The writer is flushed whatever ends the run (`finally`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import websockets
from pydantic import SecretStr

from core.boundary import is_process_control
from core.errors import FeedError
from core.feeds.ingest import CandleWriter
from core.feeds.polygon_rest import PolygonRestClient, repair_gaps
from core.feeds.polygon_schemas import (
    ParseCounters,
    ParsedMessage,
    pair_for,
    parse_ws_message,
)
from core.plausibility import Bounds, RejectLog
from core.retry import capped_backoff

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
# websockets logs every frame at DEBUG, the auth frame (with the key) included: its logger for our
# connections is pinned at INFO so no debug setting can ever print the key.
_WIRE_LOG = logging.getLogger(__name__ + ".wire")
_WIRE_LOG.setLevel(logging.INFO)


@dataclass
class StreamMetrics:
    connects: int = 0
    disconnects: int = 0
    gap_repairs: int = 0
    repaired_rows: int = 0
    repair_failures: int = 0
    repairs_deferred: int = 0  # repairs postponed by the rate limit (run later, never dropped)
    connection_errors: int = 0  # unexpected errors that ended a connection (it reconnected)
    short_connections: int = 0  # connections that dropped before stable_seconds (backoff kept growing)
    backoff_attempts: list[int] = field(default_factory=list)  # the backoff attempt of each reconnect


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PolygonStreamClient:
    def __init__(
        self,
        *,
        url: str,
        api_key: SecretStr,
        symbols: list[str],
        quote: str,
        writer: CandleWriter,
        rest: PolygonRestClient | None = None,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 60.0,
        clock: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
        bounds: Bounds | None = None,
        stable_seconds: float = 30.0,
        repair_min_interval: float = 0.0,
        reject_log_interval: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.symbols = list(symbols)
        self.quote = quote
        self.writer = writer
        self.rest = rest
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.clock = clock
        self.bounds = bounds or Bounds()
        self.stable_seconds = stable_seconds
        self.repair_min_interval = repair_min_interval
        self.monotonic = monotonic
        self.counters = ParseCounters(rejects=RejectLog(log, reject_log_interval))
        self.metrics = StreamMetrics()
        self._subscribed = frozenset(self.symbols)
        self._key = api_key
        self._rng = rng or random.Random()
        self._last_repair: float | None = None
        self._repair_pending = False

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect number `attempt` (0-based): exponential, capped, jittered."""
        base = capped_backoff(attempt, self.reconnect_initial, self.reconnect_max)
        return base * (0.5 + 0.5 * self._rng.random())

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stream until `stop` is set. Raises FeedError on a rejected key; other failures reconnect.

        Whatever ends the run, the writer is closed in `finally` so every received bar is written (or
        the close raises, naming the rows it could not write: never a silent loss)."""
        stop = stop or asyncio.Event()
        try:
            await self._run(stop)
        finally:
            await self.writer.close()

    async def _run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            connected_at: float | None = None
            try:
                async with websockets.connect(
                    self.url, max_size=None, open_timeout=HANDSHAKE_TIMEOUT, logger=_WIRE_LOG
                ) as ws:
                    await self._handshake(ws)
                    self.metrics.connects += 1
                    connected_at = self.monotonic()
                    await self._maybe_repair()
                    await self._read(ws, stop)
            except FeedError:
                raise
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                log.warning("Polygon stream %s disconnected: %s: %s", self.url, type(exc).__name__, exc)
            except BaseException as exc:  # noqa: BLE001 - anything else ends this connection, never the stream
                if is_process_control(exc):
                    raise
                self.metrics.connection_errors += 1
                log.error("Polygon stream %s failed (%s: %s); reconnecting", self.url, type(exc).__name__, exc)
            if stop.is_set():
                break
            self.metrics.disconnects += 1
            await self._flush_quietly()
            if connected_at is not None and self.monotonic() - connected_at >= self.stable_seconds:
                attempt = 0  # a stable connection ended: start the backoff over
            elif connected_at is not None:
                self.metrics.short_connections += 1
            delay = self.backoff(attempt)
            self.metrics.backoff_attempts.append(attempt)
            del self.metrics.backoff_attempts[:-100]
            attempt += 1
            log.info("reconnecting to %s in %.2fs (attempt %d)", self.url, delay, attempt)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    async def _recv_status(self, ws: websockets.ClientConnection) -> list[str]:
        raw = await asyncio.wait_for(ws.recv(), timeout=HANDSHAKE_TIMEOUT)
        parsed = self._parse(raw)
        if not parsed.candles.is_empty():
            await self.writer.add(parsed.candles)
        return [s.status for s in parsed.statuses]

    async def _handshake(self, ws: websockets.ClientConnection) -> None:
        statuses = await self._recv_status(ws)
        if "connected" not in statuses:
            raise websockets.InvalidMessage(f"expected status 'connected' first, got {statuses}")
        await ws.send(json.dumps({"action": "auth", "params": self._key.get_secret_value()}))
        while True:
            statuses = await self._recv_status(ws)
            if "auth_failed" in statuses:
                raise FeedError(
                    f"{self.url} rejected the API key (auth_failed): fix feed.polygon_api_key (feed.replay_api_key "
                    "for the replay server); not reconnecting"
                )
            if "auth_success" in statuses:
                break
        channels = ",".join(f"XA.{pair_for(s, self.quote)}" for s in self.symbols)
        await ws.send(json.dumps({"action": "subscribe", "params": channels}))
        log.info("subscribed to %d pairs on %s", len(self.symbols), self.url)

    def _parse(self, raw: str | bytes) -> ParsedMessage:
        return parse_ws_message(
            raw, self.quote, self.counters, symbols=self._subscribed, bounds=self.bounds, now=self.clock()
        )

    async def _maybe_repair(self) -> None:
        """Repair now, or defer it when the last repair is younger than repair_min_interval."""
        if self.rest is None:
            return
        now = self.monotonic()
        if self._last_repair is not None and now - self._last_repair < self.repair_min_interval:
            if not self._repair_pending:
                self.metrics.repairs_deferred += 1
            self._repair_pending = True
            return
        self._repair_pending = False
        self._last_repair = now
        await self._repair()

    async def _repair(self) -> None:
        """Fill the gap since the last stored minute from REST before reading the stream on."""
        if self.rest is None:
            return
        await self._flush_quietly()
        try:
            written = await repair_gaps(self.rest, self.writer.store, self.symbols, self.clock())
        except FeedError:
            raise
        except Exception as exc:  # the stream stays useful without the repair; health will show the gap
            self.metrics.repair_failures += 1
            log.error("gap repair from REST failed: %s", exc)
            return
        self.metrics.gap_repairs += 1
        self.metrics.repaired_rows += sum(written.values())
        if any(written.values()):
            log.info("gap repaired from REST: %s", written)

    async def _read(self, ws: websockets.ClientConnection, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    return
                raw = recv.result()
                received = time.monotonic()
                parsed = self._parse(raw)
                for status in parsed.statuses:
                    log.info("Polygon status %s: %s", status.status, status.message[:200])
                await self.writer.add(parsed.candles, received)
                if self._repair_pending:
                    await self._maybe_repair()
        finally:
            stopper.cancel()

    async def _flush_quietly(self) -> None:
        try:
            await self.writer.flush()
        except Exception:  # logged by the writer; rows stay pending
            pass
