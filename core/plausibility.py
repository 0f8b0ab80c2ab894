"""Plausibility bounds of a candle: the ONE place every entry (stream, REST, import, store) asks.

A bar is plausible when its open time lies in [earliest, now + one bar], its prices are finite and
inside [min_price, max_price], its volume is finite and inside [0, max_volume], and its integers
(the epoch timestamp) fit in int64. The bounds come from settings.data (earliest_bar, min_price,
max_price, max_volume); `Bounds()` holds the same defaults for callers without settings.

Rejections are counted per kind and logged through `RejectLog`: once per kind per interval with the
count since the last line, so a 4.4 MB frame of 40,000 bad events writes one WARNING, not 40,000.
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from core.settings import Settings

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
EARLIEST_BAR = datetime(2009, 1, 3, tzinfo=UTC)  # the Bitcoin genesis block: no crypto bar is older
MIN_PRICE = 1e-12
MAX_PRICE = 1e9
MAX_VOLUME = 1e18

# Rejection kinds (also the counter names of the feed's ParseCounters).
TS_OUT_OF_RANGE = "implausible_ts"
PRICE_OUT_OF_RANGE = "implausible_price"
VOLUME_OUT_OF_RANGE = "implausible_volume"
INT_OVERFLOW = "int_overflow"

_preview = reprlib.Repr()
_preview.maxlevel = 3  # safe on 200k-deep nesting: reprlib never recurses past this
_preview.maxstring = 80
_preview.maxother = 80
_preview.maxlist = _preview.maxdict = 6


def preview(value: Any) -> str:
    """A short, bounded repr of untrusted input for logs (never recurses deeply, never huge)."""
    try:
        return _preview.repr(value)[:200]
    except Exception:  # noqa: BLE001 - a repr that fails is not worth a crash
        return f"<{type(value).__name__}>"


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


@dataclass(frozen=True)
class Bounds:
    earliest: datetime = EARLIEST_BAR
    min_price: float = MIN_PRICE
    max_price: float = MAX_PRICE
    max_volume: float = MAX_VOLUME

    @classmethod
    def from_settings(cls, settings: Settings) -> Bounds:
        d = settings.data
        return cls(d.earliest_bar, d.min_price, d.max_price, d.max_volume)

    @property
    def earliest_ms(self) -> int:
        return int(self.earliest.timestamp() * 1000)

    def latest_ms(self, now: datetime, step_ms: int) -> int:
        """The newest acceptable open time: now plus one bar (a bar still forming is fine)."""
        return int(now.timestamp() * 1000) + step_ms

    def checks(self, now: datetime, step_ms: pl.Expr | int) -> list[tuple[str, pl.Expr]]:
        """(kind, expression true for a BAD row) on a frame with int64 `ts_ms` (epoch milliseconds)
        and float open/high/low/close/volume. Checking the integer epoch before any conversion to a
        datetime keeps polars away from the overflow panics an absurd timestamp causes."""
        step = step_ms if isinstance(step_ms, pl.Expr) else pl.lit(step_ms, dtype=pl.Int64)
        ts = pl.col("ts_ms")
        now_ms = int(now.timestamp() * 1000)
        prices = [pl.col(c) for c in ("open", "high", "low", "close")]
        v = pl.col("volume")
        return [
            (TS_OUT_OF_RANGE, (ts < self.earliest_ms) | (ts > pl.lit(now_ms, dtype=pl.Int64) + step)),
            (
                PRICE_OUT_OF_RANGE,
                pl.any_horizontal(
                    [~p.is_finite() | (p < self.min_price) | (p > self.max_price) for p in prices]
                ),
            ),
            (VOLUME_OUT_OF_RANGE, ~v.is_finite() | (v < 0) | (v > self.max_volume)),
        ]

    def reason(self, now: datetime, step_ms: pl.Expr | int) -> pl.Expr:
        """The first failed check's kind per row, null when the row is plausible."""
        expr: Any = pl.lit(None, dtype=pl.Utf8)
        for kind, bad in reversed(self.checks(now, step_ms)):
            expr = pl.when(bad.fill_null(True)).then(pl.lit(kind)).otherwise(expr)
        return expr


def store_bounds(store: Any) -> Bounds | None:
    """The bounds a store applies (None for a store without them; proxies answer anything to getattr)."""
    bounds = getattr(store, "bounds", None)
    return bounds if isinstance(bounds, Bounds) else None


class RejectLog:
    """Counts rejections per kind and logs each kind at most once per `interval` seconds."""

    def __init__(
        self, log: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.interval = interval
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._unreported: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    def reject(self, kind: str, n: int = 1, example: str = "") -> None:
        if n <= 0:
            return
        self.counts[kind] += n
        self._unreported[kind] += n
        now = self.clock()
        last = self._last.get(kind)
        if last is None or now - last >= self.interval:
            self.log.warning(
                "dropped %d %s input(s) (total %d, next report for this kind in >= %.0fs); e.g. %s",
                self._unreported[kind], kind, self.counts[kind], self.interval, example,
            )
            self._last[kind] = now
            self._unreported[kind] = 0
