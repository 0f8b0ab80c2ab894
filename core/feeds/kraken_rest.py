"""Kraken public REST market data through ccxt (keyless): the venue's markets, and closed 1m (or any
Kraken interval) OHLC candles for backfill and gap repair.

Kraken's GET /0/public/OHLC?pair=..&interval=..&since=.. answers
{"error": [], "result": {"<pair id>": [[time, open, high, low, close, vwap, volume, count], ...], "last": <s>}}
(https://docs.kraken.com/api-reference/market-data/get-ohlc-data). Three quirks shape this module:
- the last entry is the current, not-yet-committed candle and is ALWAYS present, whatever `since`
  says; `last` is the newest committed candle's time and the cursor for the next page. Rows newer than
  `last` are dropped here: only closed candles become bars;
- only the newest 720 candles of an interval are served (12 hours of 1m); older data cannot be had
  from OHLC at all, so a backfill reaching further back reports the minutes it could not get;
- errors come as strings in `error` with HTTP 200 ("EQuery:Unknown asset pair", "EService:Unavailable",
  "EAPI:Rate limit exceeded"); ccxt maps them to its exception classes, which are mapped here onto
  TemporaryFeedError (retried by core.retry) or FeedError (not retried).

ccxt's `fetch_ohlcv(symbol, tf, since)` sends `since - one interval` (Kraken's `since` is exclusive)
and filters the rows to >= since, so paging by `since = (last + interval)` asks Kraken for `since=last`.
The raw response stays readable as `exchange.last_json_response`, which is where `last` comes from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import ccxt  # type: ignore[import-untyped]
import polars as pl

from core.domain import CANDLE_SCHEMA, timeframe_duration
from core.errors import FeedError, TemporaryFeedError
from core.retry import call_with_retry, retry_after_seconds
from core.settings import Settings
from core.storage.base import CandleStore

log = logging.getLogger(__name__)

KRAKEN_WINDOW = 720  # candles per interval Kraken serves from OHLC, the newest ones only
KRAKEN_TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")  # the project's timeframes Kraken has natively
_TEMPORARY = (ccxt.NetworkError, ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.ExchangeNotAvailable)


def make_exchange(rest_url: str, *, timeout_seconds: float, rate_limit_ms: int) -> Any:
    """A keyless ccxt kraken pointed at `rest_url` (the real API, or a local double in tests)."""
    base = rest_url.rstrip("/")
    return ccxt.kraken({
        "urls": {"api": {"public": base, "private": base}},
        "timeout": int(timeout_seconds * 1000),
        "enableRateLimit": rate_limit_ms > 0,
        "rateLimit": max(1, rate_limit_ms),
        "enableLastJsonResponse": True,  # Kraken's `last` paging cursor is only in the raw answer
        "enableLastResponseHeaders": True,  # Retry-After
    })


@dataclass
class UniverseCheck:
    """Which coins the venue trades against `quote`; `missing` must be named, never silently dropped."""

    quote: str
    tradable: dict[str, str] = field(default_factory=dict)  # coin -> ccxt unified symbol ("BTC/USD")
    missing: list[str] = field(default_factory=list)
    inactive: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.inactive

    def describe(self) -> str:
        parts = [f"{len(self.tradable)} coins tradable on Kraken against {self.quote}"]
        if self.missing:
            parts.append(f"no {self.quote} market for {', '.join(self.missing)}")
        if self.inactive:
            parts.append(f"market not online for {', '.join(self.inactive)}")
        return "; ".join(parts)


@dataclass
class KrakenRestMetrics:
    requests: int = 0
    rows: int = 0
    unclosed_dropped: int = 0
    unavailable_minutes: int = 0  # asked for but older than Kraken's 720-candle window


def _ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"{ts!r} must be timezone-aware UTC")
    return int(ts.timestamp() * 1000)


class KrakenRest:
    """Synchronous, keyless Kraken market data via ccxt with the project's retry policy."""

    def __init__(
        self,
        exchange: Any,
        *,
        quote: str = "USD",
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.quote = quote
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.metrics = KrakenRestMetrics()
        self._symbols: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> KrakenRest:
        f = settings.feed
        exchange = make_exchange(
            overrides.pop("rest_url", f.kraken_rest_url), timeout_seconds=f.http_timeout_seconds,
            rate_limit_ms=f.kraken_rate_limit_ms,
        )
        kwargs: dict[str, Any] = {
            "quote": settings.data.quote, "attempts": f.http_max_retries + 1, "backoff": f.http_backoff_seconds,
            "max_backoff": f.reconnect_max_seconds,
        }
        return cls(exchange, **{**kwargs, **overrides})

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        def once() -> Any:
            self.metrics.requests += 1
            try:
                return fn()
            except _TEMPORARY as exc:
                headers = self.exchange.last_response_headers or {}
                raise TemporaryFeedError(f"Kraken {what}: {type(exc).__name__}: {str(exc)[:300]}",
                                         retry_after=retry_after_seconds(headers)) from None
            except ccxt.BaseError as exc:
                raise FeedError(f"Kraken {what}: {type(exc).__name__}: {str(exc)[:300]}") from None

        return call_with_retry(once, what=f"Kraken {what}", attempts=self.attempts, initial=self.backoff,
                               cap=self.max_backoff, log=log, sleep=self.sleep)

    def check_universe(self, coins: list[str]) -> UniverseCheck:
        """Load Kraken's markets (/0/public/AssetPairs, /0/public/Assets) and split `coins` into
        tradable and missing against the quote; remembers the unified symbols for fetches."""
        markets: dict[str, Any] = self._call("markets", lambda: self.exchange.load_markets(reload=True))
        check = UniverseCheck(self.quote)
        for coin in coins:
            unified = f"{coin.upper()}/{self.quote}"
            market = markets.get(unified)
            if market is None:
                check.missing.append(coin)
            elif market.get("active") is False:
                check.inactive.append(coin)
            else:
                check.tradable[coin] = unified
        self._symbols.update(check.tradable)
        return check

    def unified(self, coin: str) -> str:
        if coin.upper() not in self._symbols:
            self.check_universe([coin.upper()])
        found = self._symbols.get(coin.upper())
        if found is None:
            raise FeedError(f"Kraken has no online {coin}/{self.quote} market")
        return found

    def fetch_closed(self, coin: str, timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        """Closed candles of `coin` with start <= ts < end, paging on Kraken's `last` cursor."""
        if timeframe not in KRAKEN_TIMEFRAMES:
            raise ValueError(f"timeframe {timeframe!r} is not a Kraken interval; use one of {KRAKEN_TIMEFRAMES}")
        unified = self.unified(coin)
        step = int(timeframe_duration(timeframe).total_seconds() * 1000)
        cursor, stop = _ms(start), _ms(end)
        rows: list[list[Any]] = []
        first_served: int | None = None
        while cursor < stop:
            page = self._call(f"OHLC {unified}", partial(self.exchange.fetch_ohlcv, unified, timeframe, since=cursor))
            body = self.exchange.last_json_response or {}
            last = body.get("result", {}).get("last") if isinstance(body, dict) else None
            if not isinstance(last, int):
                raise FeedError(f"Kraken OHLC {unified}: answer without an integer `last`: {str(body)[:200]}")
            committed_ms = last * 1000
            closed = [r for r in page if r[0] <= committed_ms]
            self.metrics.unclosed_dropped += len(page) - len(closed)
            if closed and first_served is None:
                first_served = closed[0][0]
            rows.extend(r for r in closed if cursor <= r[0] < stop)
            nxt = committed_ms + step
            if nxt <= cursor or not closed:
                break  # nothing newer is committed yet
            cursor = nxt
        if first_served is not None and first_served > _ms(start):
            self.metrics.unavailable_minutes += (first_served - _ms(start)) // 60_000
            log.warning("Kraken OHLC serves only the newest %d %s candles: %s before %s is not available",
                        KRAKEN_WINDOW, timeframe, coin, datetime.fromtimestamp(first_served / 1000, UTC))
        frame = ohlcv_frame(rows, coin.upper(), timeframe)
        self.metrics.rows += frame.height
        return frame


def ohlcv_frame(rows: list[list[Any]], symbol: str, timeframe: str) -> pl.DataFrame:
    """ccxt OHLCV rows [ms, o, h, l, c, v] -> CANDLE_SCHEMA, one row per timestamp (the last seen)."""
    if not rows:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    raw = pl.DataFrame(rows, schema=["ms", "open", "high", "low", "close", "volume"], orient="row",
                       infer_schema_length=None)
    frame = raw.select(
        symbol=pl.lit(symbol), timeframe=pl.lit(timeframe),
        ts=pl.from_epoch(pl.col("ms").cast(pl.Int64), "ms").dt.replace_time_zone("UTC"),
        **{c: pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")},
    ).cast(CANDLE_SCHEMA)  # type: ignore[arg-type]
    return frame.unique(["symbol", "timeframe", "ts"], keep="last").sort("ts")


def backfill(
    rest: KrakenRest, store: CandleStore, coins: list[str], timeframe: str, start: datetime, end: datetime
) -> dict[str, int]:
    """Fetch [start, end) per coin and upsert it (idempotent); rows written per coin."""
    written: dict[str, int] = {}
    for coin in coins:
        frame = rest.fetch_closed(coin, timeframe, start, end)
        written[coin] = store.upsert_candles(frame) if not frame.is_empty() else 0
    return written


async def repair_gaps(
    rest: KrakenRest, store: CandleStore, coins: list[str], now: datetime, *, lookback: timedelta | None = None
) -> dict[str, int]:
    """Fill each coin from its last stored minute to `now` (closed minutes only); rows written per coin.
    A coin with nothing stored is filled from now - lookback when given, else skipped."""
    last = await asyncio.to_thread(store.last_bars, coins, "1m", 1)
    last_ts = dict(zip(last["symbol"].to_list(), last["ts"].to_list(), strict=True))
    minute = timedelta(minutes=1)
    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    written: dict[str, int] = {}
    for coin in coins:
        start = last_ts[coin] + minute if coin in last_ts else (end - lookback if lookback else None)
        if start is None or start >= end:
            continue
        frame = await asyncio.to_thread(rest.fetch_closed, coin, "1m", start, end)
        written[coin] = await asyncio.to_thread(store.upsert_candles, frame) if not frame.is_empty() else 0
    return written
