"""Polygon crypto WebSocket client: per-minute aggregates (XA) -> candle rows -> batching writer.

Session: connect; expect status "connected"; send {"action":"auth","params":<key>}; expect
"auth_success" (an "auth_failed" raises FeedError and is NOT retried: reconnecting with a rejected key
only gets the key throttled); send {"action":"subscribe","params":"XA.BTC-USD,..."}; read frames.
https://massive.com/docs/websocket/crypto/aggregates-per-minute

Resilience: a dropped connection reconnects with exponential backoff and full jitter (factor 0.5-1.0)
between reconnect_initial_seconds and reconnect_max_seconds. After every (re)connect, once subscribed,
the gap from the last stored minute of each symbol to now is filled from the REST aggregates endpoint
before the buffered stream frames are processed; upserts are idempotent, so an overlap between the
REST fill and the stream is harmless. Malformed frames, wrong types and unknown events are counted in
`counters` and logged, never fatal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import websockets
from pydantic import SecretStr

from core.errors import FeedError
from core.feeds.ingest import CandleWriter
from core.feeds.polygon_rest import PolygonRestClient, repair_gaps
from core.feeds.polygon_schemas import ParseCounters, pair_for, parse_ws_message
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
    ) -> None:
        self.url = url
        self.symbols = list(symbols)
        self.quote = quote
        self.writer = writer
        self.rest = rest
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.clock = clock
        self.counters = ParseCounters()
        self.metrics = StreamMetrics()
        self._key = api_key
        self._rng = rng or random.Random()

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect number `attempt` (0-based): exponential, capped, jittered."""
        base = capped_backoff(attempt, self.reconnect_initial, self.reconnect_max)
        return base * (0.5 + 0.5 * self._rng.random())

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stream until `stop` is set. Raises FeedError on a rejected key; other failures reconnect."""
        stop = stop or asyncio.Event()
        attempt = 0
        while not stop.is_set():
            try:
                async with websockets.connect(
                    self.url, max_size=None, open_timeout=HANDSHAKE_TIMEOUT, logger=_WIRE_LOG
                ) as ws:
                    await self._handshake(ws)
                    self.metrics.connects += 1
                    attempt = 0
                    await self._repair()
                    await self._read(ws, stop)
            except FeedError:
                raise
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                log.warning("Polygon stream %s disconnected: %s: %s", self.url, type(exc).__name__, exc)
            if stop.is_set():
                break
            self.metrics.disconnects += 1
            await self._flush_quietly()
            delay = self.backoff(attempt)
            attempt += 1
            log.info("reconnecting to %s in %.2fs (attempt %d)", self.url, delay, attempt)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
        await self.writer.close()

    async def _recv_status(self, ws: websockets.ClientConnection) -> list[str]:
        raw = await asyncio.wait_for(ws.recv(), timeout=HANDSHAKE_TIMEOUT)
        parsed = parse_ws_message(raw, self.quote, self.counters)
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
                parsed = parse_ws_message(raw, self.quote, self.counters)
                for status in parsed.statuses:
                    log.info("Polygon status %s: %s", status.status, status.message)
                await self.writer.add(parsed.candles, received)
        finally:
            stopper.cancel()

    async def _flush_quietly(self) -> None:
        try:
            await self.writer.flush()
        except Exception:  # logged by the writer; rows stay pending
            pass
