"""Keyless public backfill from Binance spot klines (httpx): fills the store on a machine with internet
and no local data.

GET {binance_rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=<ms>&endTime=<ms>&limit=1000
answers an array of klines, each an array (the raw shape, named BinanceKline below):
[open time ms, open, high, low, close, volume, close time ms, quote volume, trades, taker base volume,
taker quote volume, ignore], prices and volumes as strings. Pages are walked forward from the last open
time; the still-open last kline (close time > now) is dropped, so only closed bars are stored.
Retries follow `core.retry`: 429 (rate limit) and 418 (IP banned for ignoring 429s) honour Retry-After,
5xx and transport errors back off exponentially with jitter, up to http_max_retries retries, then raise a
TemporaryFeedError naming the attempts; any other 4xx (e.g. an invalid symbol) raises FeedError at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import polars as pl

from core.domain import CANDLE_SCHEMA, timeframe_duration
from core.errors import FeedError, TemporaryFeedError
from core.retry import MAX_RETRY_AFTER_S, retry_after_seconds, retry_policy
from core.settings import Settings

log = logging.getLogger(__name__)

MAX_LIMIT = 1000  # Binance's maximum klines per request
# The twelve fields of one raw kline, in Binance's order.
BINANCE_KLINE_FIELDS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_base_volume", "taker_quote_volume", "ignore",
)
BINANCE_INTERVALS = {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "4h": "4h", "1d": "1d"}


def _ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"{ts!r} must be timezone-aware UTC")
    return int(ts.timestamp() * 1000)


def parse_klines(body: Any, symbol: str, timeframe: str, now: datetime) -> pl.DataFrame:
    """Raw BinanceKline arrays -> CANDLE_SCHEMA frame of CLOSED bars (close time <= now)."""
    if not isinstance(body, list):
        raise FeedError(f"Binance klines for {symbol}: expected a JSON array, got {str(body)[:200]}")
    bad = [i for i, k in enumerate(body) if not isinstance(k, list) or len(k) < 7]
    if bad:
        raise FeedError(f"Binance klines for {symbol}: {len(bad)} malformed kline(s), first {body[bad[0]]!r:.200}")
    if not body:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    raw = pl.DataFrame(
        [k[:7] for k in body], schema=list(BINANCE_KLINE_FIELDS[:7]), orient="row", infer_schema_length=None
    )
    try:
        frame = raw.select(
            symbol=pl.lit(symbol),
            timeframe=pl.lit(timeframe),
            ts=pl.from_epoch(pl.col("open_time").cast(pl.Int64), "ms").dt.replace_time_zone("UTC"),
            **{c: pl.col(c).cast(pl.Utf8).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")},
            close_time=pl.col("close_time").cast(pl.Int64),
        )
    except pl.exceptions.PolarsError as exc:
        raise FeedError(f"Binance klines for {symbol}: unparseable values ({exc})") from None
    return frame.filter(pl.col("close_time") <= _ms(now)).drop("close_time").cast(pl.Schema(CANDLE_SCHEMA))


@dataclass
class KlineMetrics:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0


class BinanceKlinesClient:
    """Synchronous, keyless client of /api/v3/klines with pagination and backoff."""

    def __init__(
        self,
        *,
        base_url: str,
        quote: str = "USDT",
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        limit: int = MAX_LIMIT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.quote = quote
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.limit = min(limit, MAX_LIMIT)
        self.clock = clock
        self.sleep = sleep
        self.metrics = KlineMetrics()
        self._client = httpx.Client(timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> BinanceKlinesClient:
        f = settings.feed
        kwargs: dict[str, Any] = dict(
            base_url=f.binance_rest_url, quote=settings.data.quote, timeout=f.http_timeout_seconds,
            max_retries=f.http_max_retries, backoff=f.http_backoff_seconds, max_backoff=f.reconnect_max_seconds,
        )
        return cls(**{**kwargs, **overrides})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> BinanceKlinesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, params: dict[str, Any]) -> Any:
        what = f"Binance klines {params.get('symbol')}"
        policy = retry_policy(
            what=what, attempts=self.max_retries + 1, initial=self.backoff, cap=self.max_backoff, log=log, sleep=self.sleep
        )
        tries = 0

        def once() -> Any:
            nonlocal tries
            tries += 1
            if tries > 1:
                self.metrics.retries += 1
            return self._get_once(params)

        try:
            return policy(once)
        except TemporaryFeedError as exc:
            raise TemporaryFeedError(f"{what} still failing after {tries} attempts ({exc})") from exc

    def _get_once(self, params: dict[str, Any]) -> Any:
        """One request: the JSON body, or TemporaryFeedError for what may pass, FeedError for what will not."""
        self.metrics.requests += 1
        try:
            response = self._client.get(f"{self.base_url}/api/v3/klines", params=params)
        except httpx.TransportError as exc:
            raise TemporaryFeedError(f"transport error {type(exc).__name__}") from None
        status = response.status_code
        if status in (418, 429):
            self.metrics.rate_limited += 1
            wait = retry_after_seconds(response.headers)
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                # Binance lengthens a ban (2 minutes up to 3 days) for clients that come back early.
                raise FeedError(f"Binance HTTP {status}: this IP may not call again for {wait:.0f} s; not retrying")
            raise TemporaryFeedError(f"HTTP {status} rate limited", retry_after=wait)
        if status >= 500:
            self.metrics.server_errors += 1
            raise TemporaryFeedError(f"HTTP {status}")
        if status >= 400:
            raise FeedError(f"Binance answered HTTP {status} for {params.get('symbol')}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError:
            raise FeedError(f"Binance answered non-JSON: {response.text[:200]!r}") from None

    def fetch(self, symbol: str, timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        """Closed bars of `symbol` with start <= ts < end, all pages."""
        if timeframe not in BINANCE_INTERVALS:
            raise ValueError(f"timeframe {timeframe!r} has no Binance interval; use one of {list(BINANCE_INTERVALS)}")
        step_ms = int(timeframe_duration(timeframe).total_seconds() * 1000)
        cursor, stop = _ms(start), _ms(end) - 1
        pages: list[pl.DataFrame] = []
        while cursor <= stop:
            body = self._get({
                "symbol": f"{symbol.upper()}{self.quote}", "interval": BINANCE_INTERVALS[timeframe],
                "startTime": cursor, "endTime": stop, "limit": self.limit,
            })
            page = parse_klines(body, symbol.upper(), timeframe, self.clock())
            pages.append(page)
            if not isinstance(body, list) or len(body) < self.limit:
                break  # last page
            cursor = int(body[-1][0]) + step_ms
        frame = pl.concat(pages) if pages else pl.DataFrame(schema=CANDLE_SCHEMA)
        return frame.unique(["symbol", "timeframe", "ts"], keep="last").sort("ts")


def backfill_binance(
    client: BinanceKlinesClient, store: Any, symbols: list[str], timeframe: str, start: datetime, end: datetime
) -> dict[str, int]:
    """Fetch [start, end) per symbol and upsert it (one transaction per symbol); rows written per symbol."""
    written: dict[str, int] = {}
    for symbol in symbols:
        frame = client.fetch(symbol, timeframe, start, end)
        written[symbol] = store.upsert_candles(frame) if not frame.is_empty() else 0
    return written
