"""Batching writer: parsed candle rows -> idempotent store upserts.

Rows are buffered and written when `batch_events` rows are pending or `batch_seconds` have passed since
the first pending row, whichever comes first. Inside a batch, a key (symbol, timeframe, ts) seen twice
keeps the row that arrived LAST (Polygon may resend a corrected minute); across batches the store's
upsert does the same, so duplicates and out-of-order events never create a second row.

The store is synchronous; writes run in a worker thread, in the background, so the event loop keeps
reading the socket while a batch commits (rows arriving meanwhile form the next, larger batch; past
20 batches pending, add() waits for the running write: backpressure instead of unbounded memory). A failed write keeps its rows pending and is retried on the next flush: nothing
is dropped because the store was briefly unavailable. Every failure counts in `write_failures`, a
native panic (polars' PanicException is a BaseException) included. A batch the store REFUSES as bad
data (DataQualityError) is not retried forever: its acceptable rows are kept, the others counted in
`rows_rejected`. `close()` raises StoreError when received rows remain unwritten: never a silent loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from core.boundary import is_process_control
from core.errors import DataQualityError, StoreError
from core.plausibility import store_bounds
from core.storage.base import CandleStore
from core.storage.validation import split_plausible

log = logging.getLogger(__name__)

KEY = ["symbol", "timeframe", "ts"]


@dataclass
class IngestMetrics:
    rows_received: int = 0
    rows_written: int = 0
    batches: int = 0
    write_failures: int = 0
    rows_rejected: int = 0  # rows of a refused batch the store would not accept on their own
    # Seconds from a row's arrival to its batch being committed (queryable), one per written batch's
    # oldest row and newest row; the bench reads percentiles from here.
    latencies: list[float] = field(default_factory=list)


class CandleWriter:
    def __init__(
        self,
        store: CandleStore,
        *,
        batch_events: int = 500,
        batch_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        keep_latencies: int = 100_000,
    ) -> None:
        self.store = store
        self.batch_events = batch_events
        self.batch_seconds = batch_seconds
        self.clock = clock
        self.keep_latencies = keep_latencies
        self.metrics = IngestMetrics()
        self._pending: list[tuple[pl.DataFrame, float]] = []  # (rows, arrival time)
        self._pending_rows = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.max_pending_rows = batch_events * 20  # beyond this, add() waits for the running write

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    async def add(self, candles: pl.DataFrame, received_at: float | None = None) -> None:
        if candles.is_empty():
            return
        self._pending.append((candles, self.clock() if received_at is None else received_at))
        self._pending_rows += len(candles)
        self.metrics.rows_received += len(candles)
        if self._pending_rows >= self.batch_events:
            # Write in the background and keep reading: rows arriving meanwhile form the next batch.
            if self._inflight is None or self._inflight.done():
                self._inflight = asyncio.create_task(self._drain())
            elif self._pending_rows >= self.max_pending_rows:
                await asyncio.shield(self._inflight)  # backpressure: the store is slower than the feed
        if self._pending_rows and (self._timer is None or self._timer.done()):
            self._timer = asyncio.create_task(self._flush_later())  # whatever is left, within batch_seconds

    async def _drain(self) -> None:
        while self._pending_rows >= self.batch_events:
            if not await self._flush_quietly():
                return  # the timer retries later; no tight loop against a failing store

    async def _flush_later(self) -> None:
        # Loop until nothing is pending: rows that arrive while this flush waits for the lock or the
        # store are not in its batch, and add() starts no second timer while this one runs.
        # A write in flight (lock held) may fail and hand its rows back, so it counts as pending too.
        while True:
            await asyncio.sleep(self.batch_seconds)
            await self._flush_quietly()
            if not self._pending_rows and not self._lock.locked():
                return

    async def _flush_quietly(self) -> bool:
        try:
            await self.flush()
        except Exception:  # already logged by flush; the rows stay pending for the next flush
            return False
        return True

    async def flush(self) -> int:
        """Write everything pending; returns rows written (0 when nothing was pending)."""
        async with self._lock:
            if not self._pending:
                return 0
            taken, self._pending = self._pending, []
            rows = self._pending_rows
            self._pending_rows = 0
            frame = pl.concat([f for f, _ in taken], how="vertical_relaxed")
            frame = frame.unique(subset=KEY, keep="last", maintain_order=True)
            write = asyncio.ensure_future(asyncio.to_thread(self.store.upsert_candles, frame))
            try:
                written = await asyncio.shield(write)
            except asyncio.CancelledError:
                # The thread writes whether or not we are cancelled (close() cancels the timer): hold
                # the lock until it has, so a later batch can never overtake it and be overwritten.
                await asyncio.gather(write, return_exceptions=True)
                raise
            except BaseException as exc:  # noqa: BLE001 - a native panic too: see core.boundary
                if is_process_control(exc):
                    raise
                self.metrics.write_failures += 1
                if isinstance(exc, DataQualityError):  # refused data: retrying the same batch cannot help
                    frame, dropped = split_plausible(frame, store_bounds(self.store))
                    self.metrics.rows_rejected += dropped
                    taken, rows = ([(frame, min(t for _, t in taken))] if len(frame) else []), len(frame)
                self._pending = taken + self._pending
                self._pending_rows += rows
                log.error("writing %d candles failed, kept for the next flush: %s: %s",
                          rows, type(exc).__name__, str(exc)[:300])
                if isinstance(exc, Exception):
                    raise
                raise StoreError(f"writing {rows} candles failed: {type(exc).__name__}: {exc}") from exc
            done = self.clock()
            self.metrics.rows_written += written
            self.metrics.batches += 1
            lat = self.metrics.latencies
            lat.extend(done - t for _, t in taken)
            if len(lat) > self.keep_latencies:
                del lat[: len(lat) - self.keep_latencies]
            return written

    async def close(self) -> None:
        """Write everything pending; StoreError naming the rows left unwritten when that fails."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        if self._inflight is not None:
            await self._inflight
        try:
            await self.flush()
        except Exception as exc:
            raise StoreError(
                f"{self._pending_rows} received candle(s) could not be written "
                f"({self.metrics.write_failures} write failure(s)): {exc}"
            ) from exc
