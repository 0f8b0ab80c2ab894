"""Market-data commands: `mlcrypto stream`, `replay-server`, `backfill` (Kraken, keyless), `backfill-polygon`, `health`.

Times given without an offset are read as UTC. The replay source is the offline default: `stream`
uses it whenever no Polygon key is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from core.domain import timeframe_duration
from core.errors import TradingSystemError
from core.settings import Settings
from core.storage.factory import open_store
from deployments.commands.data import _fail, _settings, _split, _store, _when

console = Console()
err = Console(stderr=True)

SymbolsOpt = Annotated[
    list[str] | None, typer.Option("--symbols", "-s", help="Symbols (repeat or comma-separate); default: data.symbols.")
]


def _symbols(values: list[str] | None, settings: Settings) -> list[str]:
    return _split(values) if values else list(settings.data.symbols)


async def _until_signal(stop: asyncio.Event, seconds: float | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if seconds:
        loop.call_later(seconds, stop.set)


def stream(
    symbols: SymbolsOpt = None,
    source: Annotated[str, typer.Option(help="polygon | kraken | replay | auto (feed.source: Polygon with a key, else Kraken, else the replay).")] = "auto",
    seconds: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")] = None,
) -> None:
    """Stream 1m aggregates (XA) into the store, repairing gaps from REST after every reconnect."""
    from core.feeds.runner import feed_endpoints, resolve_source, run_stream

    settings = _settings()
    wanted = _symbols(symbols, settings)

    async def main() -> dict:
        store = open_store(settings)
        stop = asyncio.Event()
        await _until_signal(stop, seconds)
        chosen = await asyncio.to_thread(resolve_source, settings, source)
        url = settings.feed.kraken_ws_url if chosen == "kraken" else feed_endpoints(settings, chosen).ws_url
        console.print(f"streaming {len(wanted)} symbols from {chosen} ({url}); Ctrl-C to stop")
        try:
            return await run_stream(settings, store, source=chosen, symbols=wanted, stop=stop)
        finally:
            store.close()

    try:
        summary = asyncio.run(main())
    except TradingSystemError as exc:
        raise _fail(exc) from None
    console.print(summary)


def replay_server(
    symbols: SymbolsOpt = None,
    speed: Annotated[float | None, typer.Option(help="1 = real time, N = N times faster, 0 = as fast as possible.")] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Where the replay clock starts (ISO, UTC); earlier bars are history, served by REST only."),
    ] = None,
    end: Annotated[str | None, typer.Option(help="End of the replay, exclusive (ISO, UTC).")] = None,
    path: Annotated[Path | None, typer.Option(help="Parquet of 1m candles (default: data_dir/ohlcv_1m.parquet).")] = None,
    from_store: Annotated[bool, typer.Option("--from-store", help="Replay the store's 1m candles instead.")] = False,
    exit_when_done: Annotated[bool, typer.Option(help="Exit once the tape has been played.")] = False,
) -> None:
    """Serve recorded candles over the Polygon WebSocket protocol, plus REST aggregates for gap repair."""
    from core.feeds.replay_server import ReplayRestServer, ReplayWsServer, load_tape

    settings = _settings()
    f = settings.feed
    wanted = _symbols(symbols, settings) if symbols else None
    store = _store(settings) if from_store else None
    try:
        tape = load_tape(settings, wanted or list(settings.data.symbols) if from_store else wanted,
                         end=_when(end, "--end"), path=path, store=store)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        if store is not None:
            store.close()

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signal(stop, None)
        with ReplayRestServer(tape, api_key=f.replay_api_key, host=f.replay_host, port=f.replay_rest_port) as rest:
            ws = ReplayWsServer(tape, api_key=f.replay_api_key, speed=f.replay_speed if speed is None else speed,
                                start=_when(start, "--start"),
                                host=f.replay_host, port=f.replay_port, events_per_message=f.replay_events_per_message)
            async with ws:
                console.print(f"{len(tape)} bars recorded; replay from {start or 'the first bar'} on {ws.url} "
                              f"(REST {rest.url}); waiting for a subscriber")
                waits = [asyncio.ensure_future(stop.wait())]
                if exit_when_done:
                    waits.append(asyncio.ensure_future(ws.finished.wait()))
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
                console.print(f"sent {ws.sent_events} events to {ws.connections} connection(s)")

    asyncio.run(main())


def backfill_kraken(
    symbols: SymbolsOpt = None,
    timeframe: Annotated[str, typer.Option(help="Bar size: 1m 5m 15m 1h 4h 1d.")] = "1m",
    start: Annotated[str | None, typer.Option(help="First bar (ISO, UTC); default: as far back as Kraken serves.")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive (ISO, UTC); default: now.")] = None,
) -> None:
    """Fill the store from Kraken's public OHLC through ccxt (no key; closed candles only). Kraken serves
    the newest 720 candles of each interval (12 hours of 1m, 30 days of 1h): older bars are reported
    as unavailable (for deep history: `mlcrypto backfill-binance`, USDT pairs)."""
    from core.feeds.kraken_rest import KRAKEN_WINDOW, KrakenRest, backfill
    from core.feeds.runner import check_universe

    settings = _settings()
    stop = _when(end, "--end") or datetime.now(UTC)
    first = _when(start, "--start") or stop - KRAKEN_WINDOW * timeframe_duration(timeframe)
    store = open_store(settings)
    try:
        rest = KrakenRest.from_settings(settings)
        check = check_universe(rest, _symbols(symbols, settings))
        if check.missing or check.inactive:
            err.print(f"[yellow]{check.describe()}[/yellow]")
        written = backfill(rest, store, list(check.tradable), timeframe, first, stop)
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    table = Table("symbol", "bars written", title=f"Kraken {timeframe} {first:%Y-%m-%d %H:%M} -> {stop:%Y-%m-%d %H:%M} UTC")
    for sym, n in written.items():
        table.add_row(sym, f"{n:,}")
    console.print(table)
    if rest.metrics.unavailable_minutes:
        console.print(f"older than Kraken's {KRAKEN_WINDOW}-candle window, not available: "
                      f"{rest.metrics.unavailable_minutes:,} minutes in all")


def backfill_polygon(
    start: Annotated[str, typer.Option(help="First minute (ISO, UTC).")],
    end: Annotated[str, typer.Option(help="End, exclusive (ISO, UTC).")],
    symbols: SymbolsOpt = None,
    rest_url: Annotated[str | None, typer.Option(help="Override feed.polygon_rest_url (e.g. the replay server).")] = None,
) -> None:
    """Backfill 1m candles from Polygon REST aggregates (pagination, 429/5xx backoff, 401 stops)."""
    from core.feeds.polygon_rest import PolygonRestClient, backfill

    settings = _settings()
    wanted = _symbols(symbols, settings)
    first, stop = _when(start, "--start"), _when(end, "--end")
    if first is None or stop is None or stop <= first:
        raise typer.BadParameter("--end must be after --start", param_hint="--end")

    async def main() -> dict[str, int]:
        store = open_store(settings)
        try:
            async with PolygonRestClient.from_settings(settings, base_url=rest_url) as rest:
                return await backfill(rest, store, wanted, first, stop)
        finally:
            store.close()

    try:
        written = asyncio.run(main())
    except TradingSystemError as exc:
        raise _fail(exc) from None
    for symbol, rows in written.items():
        console.print(f"{symbol}: {rows} candles")


def health(
    symbols: SymbolsOpt = None,
    timeframe: Annotated[str | None, typer.Option(help="Timeframe to check (default: data.detection_timeframe).")] = None,
    bars: Annotated[int, typer.Option(help="Bars per symbol the gate checks (what a scan uses).")] = 200,
    now: Annotated[str | None, typer.Option(help="Check as of this time (ISO, UTC); default: now.")] = None,
    alert: Annotated[bool, typer.Option(help="Send a data-health alert on failure.")] = True,
) -> None:
    """Per-symbol freshness, gaps and gate result; exit code 1 when any symbol fails."""
    from core.alerts import SlackAlerter
    from core.quality.gate import CandleGate, apply_gate

    settings = _settings()
    tf = timeframe or settings.data.detection_timeframe
    wanted = _symbols(symbols, settings)
    as_of = _when(now, "--now") or datetime.now(UTC)
    store = _store(settings)
    try:
        window = store.last_bars(wanted, tf, bars, end=as_of)
        coverage = store.coverage().filter(pl.col("timeframe") == tf)
        gate = CandleGate(settings)
        _, report = apply_gate(window, settings, as_of, store=store, symbols=wanted, gate=gate, timeframe=tf,
                               alerter=SlackAlerter.from_settings(settings) if alert else None)
        derived = gate.derived(window, as_of) if not window.is_empty() else None
    except TradingSystemError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    per_symbol = (
        derived.group_by("symbol").agg(
            last=pl.col("ts").max(),
            stale=pl.col("stale_bars").max(),
            window_missing=pl.col("gap_bars").clip(lower_bound=0).sum(),
        ) if derived is not None else pl.DataFrame(schema={"symbol": pl.Utf8})
    )
    info = {r["symbol"]: r for r in per_symbol.iter_rows(named=True)}
    total_missing = dict(zip(coverage["symbol"].to_list(), coverage["missing"].to_list(), strict=True))
    table = Table(title=f"data health {tf} as of {as_of:%Y-%m-%d %H:%M} UTC (last {bars} bars)")
    for col in ("symbol", "last bar", "age (bars)", "missing (window)", "missing (all)", "gate", "failed"):
        table.add_column(col)
    for r in report.results:
        i = info.get(r.symbol, {})
        last = i.get("last")
        table.add_row(
            r.symbol,
            f"{last:%Y-%m-%d %H:%M}" if last else "-",
            f"{i['stale']:.1f}" if i.get("stale") is not None else "-",
            f"{i.get('window_missing', 0):.0f}" if i else "-",
            str(total_missing.get(r.symbol, "-")),
            "[green]pass[/green]" if r.passed else "[red]FAIL[/red]",
            ", ".join(r.failed_expectations),
        )
    console.print(table)
    empty = [r.symbol for r in report.results if "has_bars" in r.failed_expectations]
    if empty:
        console.print(f"[red]FAIL[/red] no {tf} bars in the store for: {', '.join(empty)}")
    console.print(f"gate: {len(report.passed_symbols)} passed, {len(report.failed_symbols)} failed in {report.seconds:.2f}s")
    if not report.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("stream")(stream)
    app.command("replay-server")(replay_server)
    app.command("backfill")(backfill_kraken)
    app.command("backfill-polygon")(backfill_polygon)
    app.command("health")(health)
