"""Wiring of the streaming ingest from settings: the one function the CLI and the Prefect flow call.

Sources: `polygon` (needs a paid key), `kraken` (the venue's own public data, keyless: WebSocket v2
ohlc + ccxt REST repair), `replay` (recorded bars on loopback, no network). `auto` (feed.source):
Polygon when a key is set, else Kraken when its REST answers, else the replay; the choice is logged.
At start-up the universe is checked against Kraken's markets: coins it cannot trade are named in
the log and in an alert, and streamed from nowhere rather than silently dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from core.errors import FeedError
from core.feeds.ingest import CandleWriter
from core.feeds.kraken_rest import KrakenRest, UniverseCheck
from core.feeds.kraken_ws import KrakenStreamClient
from core.feeds.polygon_rest import PolygonRestClient
from core.feeds.polygon_ws import PolygonStreamClient
from core.plausibility import Bounds
from core.settings import Settings
from core.storage.base import CandleStore

log = logging.getLogger(__name__)


def resolve_source(settings: Settings, source: str = "auto", *, probe: Callable[[], bool] | None = None) -> str:
    """polygon | kraken | replay. With auto (or feed.source=auto): Polygon with a key, else Kraken
    when its public REST answers (probe), else the local replay."""
    if source == "auto":
        source = settings.feed.source
    if source != "auto":
        return source
    if settings.feed.polygon_api_key is not None:
        return "polygon"
    reachable = probe() if probe is not None else kraken_reachable(settings)
    chosen = "kraken" if reachable else "replay"
    log.info("feed source auto -> %s (no Polygon key; Kraken %s)", chosen, "answers" if reachable else "unreachable")
    return chosen


def kraken_reachable(settings: Settings) -> bool:
    rest = KrakenRest.from_settings(settings, attempts=1)
    try:
        rest.check_universe([])
    except FeedError as exc:
        log.info("Kraken REST %s did not answer: %s", settings.feed.kraken_rest_url, exc)
        return False
    return True


def check_universe(rest: KrakenRest, coins: list[str], alert: Callable[[str, list[str]], object] | None = None) -> UniverseCheck:
    """Kraken's markets against the coins to stream; what it cannot trade is named (log + alert)."""
    check = rest.check_universe(coins)
    if not check.ok:
        log.error("universe check: %s", check.describe())
        if alert is not None:
            alert("Kraken cannot trade part of the universe", [check.describe()])
    else:
        log.info("universe check: %s", check.describe())
    return check


async def run_kraken_stream(
    settings: Settings,
    store: CandleStore,
    symbols: list[str],
    stop: asyncio.Event,
    *,
    alert: Callable[[str, list[str]], object] | None = None,
) -> dict[str, Any]:
    """Stream Kraken 1m OHLC of the tradable `symbols` until `stop`; returns the run's metrics."""
    f = settings.feed
    rest = KrakenRest.from_settings(settings)
    check = await asyncio.to_thread(check_universe, rest, symbols, alert)
    if not check.tradable:
        raise FeedError(f"Kraken trades none of {symbols}: {check.describe()}")
    writer = CandleWriter(store, batch_events=f.write_batch_events, batch_seconds=f.write_batch_seconds)
    client = KrakenStreamClient(
        url=f.kraken_ws_url, symbols=check.tradable, quote=settings.data.quote, writer=writer, rest=rest,
        reconnect_initial=f.reconnect_initial_seconds, reconnect_max=f.reconnect_max_seconds,
        repair_lookback=timedelta(minutes=f.kraken_repair_lookback_minutes) or None,
        bounds=Bounds.from_settings(settings), stable_seconds=f.stable_connection_seconds,
    )
    try:
        await client.run(stop)
    finally:
        await writer.flush()
    return {
        "source": "kraken", "rows_written": writer.metrics.rows_written, "batches": writer.metrics.batches,
        "connects": client.metrics.connects, "repaired_rows": client.metrics.repaired_rows,
        "untradable": check.missing + check.inactive, "closed": client.counters.closed,
        "malformed": client.counters.malformed,
    }


@dataclass(frozen=True)
class FeedEndpoints:
    source: str  # polygon | replay
    ws_url: str
    rest_url: str
    api_key: SecretStr


def feed_endpoints(settings: Settings, source: str = "auto") -> FeedEndpoints:
    """polygon when asked (or, with auto, when a key is set); else the local replay server."""
    f = settings.feed
    if source == "auto":
        source = "polygon" if f.polygon_api_key is not None else "replay"
    if source == "polygon":
        if f.polygon_api_key is None:
            raise FeedError("the polygon source needs feed.polygon_api_key (MLCRYPTO_FEED__POLYGON_API_KEY)")
        return FeedEndpoints("polygon", f.polygon_ws_url, f.polygon_rest_url, f.polygon_api_key)
    if source == "replay":
        return FeedEndpoints("replay", f"ws://{f.replay_host}:{f.replay_port}",
                             f"http://{f.replay_host}:{f.replay_rest_port}", f.replay_api_key)
    raise FeedError(f"unknown feed source {source!r}; use polygon, replay or auto")


async def run_stream(
    settings: Settings,
    store: CandleStore,
    *,
    source: str = "auto",
    symbols: list[str] | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Stream until `stop` is set (FeedError on a rejected key); returns the run's metrics."""
    wanted = symbols or list(settings.data.symbols)
    source = resolve_source(settings, source)
    if source == "kraken":
        return await run_kraken_stream(settings, store, wanted, stop or asyncio.Event())
    ends = feed_endpoints(settings, source)
    f = settings.feed
    writer = CandleWriter(store, batch_events=f.write_batch_events, batch_seconds=f.write_batch_seconds)
    bounds = Bounds.from_settings(settings)
    async with PolygonRestClient.from_settings(settings, base_url=ends.rest_url, api_key=ends.api_key) as rest:
        rest.bounds = bounds
        client = PolygonStreamClient(
            url=ends.ws_url, api_key=ends.api_key, symbols=wanted, quote=settings.data.quote, writer=writer,
            rest=rest, reconnect_initial=f.reconnect_initial_seconds, reconnect_max=f.reconnect_max_seconds,
            bounds=bounds, stable_seconds=f.stable_connection_seconds,
            repair_min_interval=f.repair_min_interval_seconds, reject_log_interval=f.reject_log_interval_seconds,
        )
        try:
            await client.run(stop)
        finally:
            summary = {
                "source": ends.source,
                "rows_written": writer.metrics.rows_written,
                "rows_unwritten": writer.pending_rows,
                "write_failures": writer.metrics.write_failures,
                "rows_rejected": writer.metrics.rows_rejected,
                "batches": writer.metrics.batches,
                "connects": client.metrics.connects,
                "short_connections": client.metrics.short_connections,
                "connection_errors": client.metrics.connection_errors,
                "repaired_rows": client.metrics.repaired_rows,
                "repair_failures": client.metrics.repair_failures,
                "repairs_deferred": client.metrics.repairs_deferred,
                "bad_messages": client.counters.bad_by_kind(),
                "parse": client.counters.as_dict(),
                "rest": vars(rest.metrics),
            }
    return summary
