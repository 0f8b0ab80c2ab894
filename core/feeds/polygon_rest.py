"""Polygon REST aggregates client (httpx): backfill and gap repair of 1-minute candles.

GET {rest_url}/v2/aggs/ticker/X:<SYM><QUOTE>/range/1/minute/{from_ms}/{to_ms}?adjusted=true&sort=asc&limit=N
(both bounds inclusive, on the bar open time). Pages are followed through `next_url`.

The key goes in the `Authorization: Bearer` header, which Polygon accepts in place of the `apiKey` query
parameter: it never appears in a URL, so no URL we (or httpx) log can leak it, and next_url needs
nothing appended. Retries follow `core.retry`: 429 (honouring Retry-After), 5xx and transport errors
are a `TemporaryFeedError`, retried with capped exponential backoff up to `http_max_retries` times and
then raised as a `TemporaryFeedError` naming the attempts; 401/403 (a retry cannot fix a key) and any
other 4xx raise FeedError at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import polars as pl
from pydantic import SecretStr

from core.errors import FeedError, TemporaryFeedError
from core.feeds.polygon_schemas import ParseCounters, empty_candles, parse_rest_results, ticker_for
from core.plausibility import Bounds
from core.retry import async_retry_policy, retry_after_seconds
from core.settings import Settings
from core.storage.base import CandleStore

log = logging.getLogger(__name__)


@dataclass
class RestMetrics:
    requests: int = 0
    pages: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0


def _ms(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"{ts!r} must be timezone-aware UTC")
    return int(ts.timestamp() * 1000)


class PolygonRestClient:
    bounds: Bounds | None = None  # plausibility bounds of parsed bars (None: the defaults); set by the runner

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        quote: str,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        page_limit: int = 50_000,
        max_backoff: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.quote = quote
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.page_limit = page_limit
        self.sleep = sleep
        self.metrics = RestMetrics()
        self.counters = ParseCounters()
        self._api_key = api_key
        self._client = httpx.AsyncClient(
            timeout=timeout, headers={"Authorization": f"Bearer {api_key.get_secret_value()}"}
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, base_url: str | None = None, api_key: SecretStr | None = None
    ) -> PolygonRestClient:
        key = api_key or settings.feed.polygon_api_key
        if key is None:
            raise FeedError("no Polygon API key: set feed.polygon_api_key (MLCRYPTO_FEED__POLYGON_API_KEY)")
        f = settings.feed
        return cls(
            base_url=base_url or f.polygon_rest_url,
            api_key=key,
            quote=settings.data.quote,
            timeout=f.http_timeout_seconds,
            max_retries=f.http_max_retries,
            backoff=f.http_backoff_seconds,
            page_limit=f.rest_page_limit,
            max_backoff=f.reconnect_max_seconds,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> PolygonRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get_json(self, url: str, params: dict[str, Any] | None) -> dict[str, Any]:
        shown = urlsplit(url).path  # log the path only: never a query string
        what = f"Polygon REST {shown}"
        attempts = self.max_retries + 1
        policy = async_retry_policy(
            what=what, attempts=attempts, initial=self.backoff, cap=self.max_backoff, log=log, sleep=self.sleep
        )
        tries = 0

        async def once() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            if tries > 1:
                self.metrics.retries += 1
            return await self._get_once(url, params, shown)

        try:
            return await policy(once)
        except TemporaryFeedError as exc:
            raise TemporaryFeedError(f"{what} still failing after {tries} attempts ({exc})") from exc

    async def _get_once(self, url: str, params: dict[str, Any] | None, shown: str) -> dict[str, Any]:
        """One request: the body, or TemporaryFeedError for what may pass, FeedError for what will not."""
        self.metrics.requests += 1
        try:
            response = await self._client.get(url, params=params)
        except httpx.TransportError as exc:
            raise TemporaryFeedError(f"transport error {type(exc).__name__}") from None
        status = response.status_code
        if status in (401, 403):
            raise FeedError(
                f"Polygon refused the API key (HTTP {status}) for {shown}: check feed.polygon_api_key "
                "and that the plan includes crypto aggregates; not retrying"
            )
        if status == 429:
            self.metrics.rate_limited += 1
            raise TemporaryFeedError("HTTP 429 rate limited", retry_after=retry_after_seconds(response.headers))
        if status >= 500:
            self.metrics.server_errors += 1
            raise TemporaryFeedError(f"HTTP {status}")
        if status >= 400:
            raise FeedError(f"Polygon answered HTTP {status} for {shown}: {response.text[:300]}")
        try:
            body = response.json()
        except ValueError:
            raise FeedError(f"Polygon answered non-JSON for {shown}: {response.text[:200]!r}") from None
        if not isinstance(body, dict):
            raise FeedError(f"Polygon answered an unexpected body for {shown}: {str(body)[:200]}")
        return body

    async def fetch_minutes(self, symbol: str, start: datetime, end: datetime) -> pl.DataFrame:
        """1m candles of `symbol` with start <= ts <= end (inclusive, like Polygon), all pages."""
        if end < start:
            return empty_candles()
        ticker = ticker_for(symbol, self.quote)
        url: str | None = f"{self.base_url}/v2/aggs/ticker/{ticker}/range/1/minute/{_ms(start)}/{_ms(end)}"
        params: dict[str, Any] | None = {"adjusted": "true", "sort": "asc", "limit": self.page_limit}
        pages: list[pl.DataFrame] = []
        while url:
            body = await self._get_json(url, params)
            self.metrics.pages += 1
            pages.append(parse_rest_results(body.get("results"), symbol, self.counters, self.bounds))
            next_url = body.get("next_url")
            url, params = (next_url, None) if isinstance(next_url, str) and next_url else (None, None)
        frame = pl.concat(pages) if pages else empty_candles()
        return frame.unique(subset=["symbol", "timeframe", "ts"], keep="last").sort("ts")


async def repair_gaps(
    rest: PolygonRestClient, store: CandleStore, symbols: list[str], now: datetime, *, lookback: timedelta | None = None
) -> dict[str, int]:
    """Fill each symbol from its last stored minute to `now` (closed minutes only); returns rows written.

    A symbol with nothing stored is filled from now - lookback when a lookback is given, else skipped.
    """
    last = store.last_bars(symbols, "1m", 1)
    last_ts = dict(zip(last["symbol"].to_list(), last["ts"].to_list(), strict=True))
    minute = timedelta(minutes=1)
    newest_closed = now.astimezone(UTC).replace(second=0, microsecond=0) - minute
    written: dict[str, int] = {}
    for symbol in symbols:
        start = last_ts[symbol] + minute if symbol in last_ts else (now - lookback if lookback else None)
        if start is None or start > newest_closed:
            continue
        frame = await rest.fetch_minutes(symbol, start, newest_closed)
        written[symbol] = await asyncio.to_thread(store.upsert_candles, frame) if not frame.is_empty() else 0
    return written


async def backfill(
    rest: PolygonRestClient, store: CandleStore, symbols: list[str], start: datetime, end: datetime,
    *, chunk: timedelta = timedelta(days=30),
) -> dict[str, int]:
    """Backfill [start, end) of 1m candles per symbol in chunks (one upsert per chunk)."""
    written: dict[str, int] = {}
    for symbol in symbols:
        total, cursor = 0, start
        while cursor < end:
            stop = min(end, cursor + chunk)
            frame = await rest.fetch_minutes(symbol, cursor, stop - timedelta(milliseconds=1))
            if not frame.is_empty():
                total += await asyncio.to_thread(store.upsert_candles, frame)
            cursor = stop
        written[symbol] = total
        log.info("backfilled %s: %d candles", symbol, total)
    return written
