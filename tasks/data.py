"""Data tasks: store init and import, candle loading, the Great Expectations gate, ingest, backfill.

Each task wraps one core call and adds what orchestration owns: retries with delays for what can
fail transiently and no adapter retries itself (the store; see tasks/retries.py), a log line, and for
the gate an artifact visible in the Prefect UI. Network calls are retried by their adapters (core.retry).
Caching is off (NO_CACHE): the store is the cache, and Prefect's result store would pickle frames.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from core.domain import timeframe_duration
from core.quality.results import GateReport
from tasks.retries import ADAPTER_RETRIED, IO_RETRIES
from tasks.runtime import Runtime


@task(name="init_store", **IO_RETRIES)
def init_store(rt: Runtime) -> None:
    """Create or migrate the store's schema and the var directories."""
    for path in (rt.settings.data.var_dir, rt.settings.reports_dir):
        path.mkdir(parents=True, exist_ok=True)
    rt.store.init_schema()


@task(name="import_history", **IO_RETRIES)
def import_history(
    rt: Runtime,
    timeframes: list[str],
    symbols: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, int]:
    """Import the shipped candles (core.data_import) into the store; idempotent, so a retry is safe."""
    from core.data_import import import_candles

    s = rt.settings
    results = import_candles(
        rt.store, s.data.data_dir, timeframes=timeframes, derived_timeframes=s.data.derived_timeframes,
        symbols=symbols or list(s.data.symbols), start=start, end=end, chunk_rows=s.store.batch_rows, progress=False,
    )
    out = {r.timeframe: r.shipped_rows + r.derived_rows for r in results}
    get_run_logger().info("imported %s", out)
    return out


@task(name="load_candles", **IO_RETRIES)
def load_candles(rt: Runtime, symbols: list[str], timeframe: str, bars: int, now: datetime) -> pl.DataFrame:
    """The last `bars` CLOSED bars before `now` of each symbol, in one query (a bar opened at t closes
    at t + timeframe, so only bars with ts + timeframe <= now are used: no look-ahead)."""
    end = now - timeframe_duration(timeframe) + timedelta(microseconds=1)
    return rt.store.last_bars(symbols, timeframe, bars, end=end)


@task(name="derive_candles", **IO_RETRIES)
def derive_candles(rt: Runtime, symbols: list[str], since: datetime, now: datetime) -> int:
    """Resample the streamed finer bars (1m) of [since, now) into the detection timeframe and upsert
    the complete buckets (core.resample emits only complete buckets)."""
    from core.resample import resample

    s = rt.settings
    src, dst = s.data.stream_timeframe, s.data.detection_timeframe
    if timeframe_duration(src) >= timeframe_duration(dst):
        return 0
    fine = rt.store.read_many(symbols, src, since, now)
    if fine.is_empty():
        return 0
    built = resample(fine, dst)
    return rt.store.upsert_candles(built) if built.height else 0


@task(name="validate_candles", **IO_RETRIES)
def validate_candles(rt: Runtime, bars: pl.DataFrame, symbols: list[str], now: datetime) -> GateReport:
    """The GE gate on the candles the scan will use: results stored (kind 'gate_result'), a data-health
    alert for failures, and a table artifact so a failed gate is visible in the Prefect UI."""
    from core.quality.gate import run_gate
    from core.quality.results import alert_report, store_report

    logger = get_run_logger()
    report = run_gate(bars, rt.settings, now, symbols=symbols, gate=rt.gate)
    store_report(rt.store, report)
    if report.failed_symbols:
        alert_report(rt.alerter, report)
        logger.warning("data gate FAILED for %s: left out of this scan", report.failed_symbols)
        create_table_artifact(
            key="data-gate-failures",
            table=[
                {"symbol": r.symbol, "failed": ", ".join(r.failed_expectations), "details": str(r.details)}
                for r in report.results if not r.passed
            ],
            description=f"Symbols left out of the scan at {now:%Y-%m-%d %H:%M} UTC by the data gate",
        )
    else:
        logger.info("data gate passed for %d symbols (%d rows, %.2fs)", len(report.passed_symbols), report.rows, report.seconds)
    return report


@task(name="ingest_bars", **IO_RETRIES)
def ingest_bars(rt: Runtime, bars: pl.DataFrame) -> int:
    """Upsert recorded bars (the offline replay's hour) through the store's idempotent upsert."""
    return rt.store.upsert_candles(bars) if bars.height else 0


@task(name="ingest_stream", **(IO_RETRIES | dict(retries=2, retry_delay_seconds=[5, 30])))
def ingest_stream(rt: Runtime, symbols: list[str], seconds: float | None = None, source: str = "auto") -> dict[str, int]:
    """Stream 1m aggregates into the store: Polygon when a key is set, else the local replay servers
    (started here, on the configured ports) speaking the same protocol. Runs until `seconds` elapse,
    or forever when None (the long-running deployment). The stream reconnects by itself; a rejected key
    raises FeedError and is not retried (no retry storm); Prefect restarts it only after other failures."""
    from core.feeds.ingest import CandleWriter
    from core.feeds.polygon_rest import PolygonRestClient
    from core.feeds.polygon_ws import PolygonStreamClient

    s = rt.settings
    f = s.feed
    from core.feeds.runner import resolve_source, run_kraken_stream

    source = resolve_source(s, source)
    use_polygon = source == "polygon"

    async def main() -> dict[str, int]:
        writer = CandleWriter(rt.store, batch_events=f.write_batch_events, batch_seconds=f.write_batch_seconds)
        stop = asyncio.Event()
        if seconds:
            asyncio.get_running_loop().call_later(seconds, stop.set)
        if source == "kraken":  # the venue's own keyless data; untradable coins are alerted
            from core.alerts import AlertKind

            out = await run_kraken_stream(s, rt.store, symbols, stop, alert=lambda t, lines: rt.alerter.send(
                AlertKind.DATA_HEALTH, t, lines))
            return {k: v for k, v in out.items() if isinstance(v, int)}
        if use_polygon:
            assert f.polygon_api_key is not None
            url, rest_url, key = f.polygon_ws_url, f.polygon_rest_url, f.polygon_api_key
            return await _stream(url, rest_url, key, writer, stop)
        from core.feeds.replay_server import ReplayRestServer, ReplayWsServer, load_tape

        if f.replay_live:  # offline `make up`: re-timed to now, history stored, wall-clock pace
            from core.feeds.replay_live import (
                WallClockReplayServer,
                prepare_live_replay,
            )

            tape = prepare_live_replay(s, rt.store, symbols, datetime.now(UTC))
        else:
            tape = load_tape(s, symbols)
        with ReplayRestServer(tape, api_key=f.replay_api_key, host=f.replay_host, port=f.replay_rest_port) as rest_srv:
            ws = (WallClockReplayServer(tape, api_key=f.replay_api_key, host=f.replay_host, port=f.replay_port)
                  if f.replay_live else
                  ReplayWsServer(tape, api_key=f.replay_api_key, speed=f.replay_speed, host=f.replay_host, port=f.replay_port))
            await ws.start()
            try:
                return await _stream(ws.url, rest_srv.url, f.replay_api_key, writer, stop)
            finally:
                await ws.stop()

    async def _stream(url: str, rest_url: str, key, writer: CandleWriter, stop: asyncio.Event) -> dict[str, int]:  # noqa: ANN001
        rest = PolygonRestClient.from_settings(s, base_url=rest_url, api_key=key)
        client = PolygonStreamClient(
            url=url, api_key=key, symbols=symbols, quote=s.data.quote, writer=writer, rest=rest,
            reconnect_initial=f.reconnect_initial_seconds, reconnect_max=f.reconnect_max_seconds,
        )
        try:
            await client.run(stop)
        finally:
            await writer.flush()
            await rest.aclose()
        return {"rows_written": writer.metrics.rows_written, "batches": writer.metrics.batches,
                "connects": client.metrics.connects, "repaired_rows": client.metrics.repaired_rows}

    stats = asyncio.run(main())
    get_run_logger().info("stream stopped: %s", stats)
    return stats


@task(name="backfill_candles", **ADAPTER_RETRIED)
def backfill_candles(
    rt: Runtime, symbols: list[str], start: datetime, end: datetime, source: str = "auto", timeframe: str = "1h"
) -> dict[str, int]:
    """Fill the store for [start, end): Polygon REST 1m aggregates when a key is set, else Kraken's
    public OHLC via ccxt (keyless; its newest 720 candles), or Binance klines (source=binance, deep
    history, USDT). The clients retry temporary failures themselves (core.retry), so Prefect adds no
    retries. All upsert idempotently, so a re-run backfill writes no duplicate."""
    s = rt.settings
    use_polygon = source == "polygon" or (source == "auto" and s.feed.polygon_api_key is not None)
    if not use_polygon and source in ("auto", "kraken"):
        from core.feeds.kraken_rest import KrakenRest
        from core.feeds.kraken_rest import backfill as kraken_backfill

        return kraken_backfill(KrakenRest.from_settings(s), rt.store, symbols, timeframe, start, end)
    if use_polygon:
        from core.feeds.polygon_rest import PolygonRestClient, backfill

        async def main() -> dict[str, int]:
            async with PolygonRestClient.from_settings(s) as rest:
                return await backfill(rest, rt.store, symbols, start, end)

        return asyncio.run(main())
    from core.feeds.binance_klines import BinanceKlinesClient, backfill_binance

    with BinanceKlinesClient.from_settings(s, quote=s.feed.binance_quote) as client:
        return backfill_binance(client, rt.store, symbols, timeframe, start, end)
