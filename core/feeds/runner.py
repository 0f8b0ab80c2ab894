"""Wiring of the streaming ingest from settings: the one function the CLI and the Prefect flow call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from core.errors import FeedError
from core.feeds.ingest import CandleWriter
from core.feeds.polygon_rest import PolygonRestClient
from core.feeds.polygon_ws import PolygonStreamClient
from core.plausibility import Bounds
from core.settings import Settings
from core.storage.base import CandleStore


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
    ends = feed_endpoints(settings, source)
    f = settings.feed
    wanted = symbols or list(settings.data.symbols)
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
