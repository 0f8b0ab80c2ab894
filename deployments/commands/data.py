"""Data commands: `mlcrypto init`, `import`, `status`, `backfill-binance`.

CLI dates (--start/--end) are read as UTC when they carry no offset (operator input, documented).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.errors import ConfigError, TradingSystemError
from core.redact import known_secrets, redact
from core.settings import Settings, load_settings
from core.storage.base import CandleStore
from core.storage.factory import open_store


def _out(*objects: object, err: bool = False) -> None:
    """A console per call: it picks up the terminal width (and COLUMNS) at the time of printing.
    Error text is redacted by value: no configured secret is ever printed (core/redact.py)."""
    if err:
        secrets = known_secrets()
        objects = tuple(redact(o, secrets) if isinstance(o, str) else o for o in objects)
    Console(stderr=err).print(*objects)


SymbolsOpt = Annotated[
    list[str] | None, typer.Option("--symbols", "-s", help="Symbols (repeat or comma-separate); default: the universe.")
]
StartOpt = Annotated[str | None, typer.Option(help="First bar open time, ISO (UTC when no offset), e.g. 2024-01-01.")]
EndOpt = Annotated[str | None, typer.Option(help="End (exclusive), ISO (UTC when no offset).")]


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip().upper() for x in values for v in x.split(",") if v.strip()]


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        message = f"{value!r} is not an ISO date/time, e.g. 2024-01-01 or 2024-01-01T12:00"
        raise typer.BadParameter(message, param_hint=name) from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _out(f"[red]configuration error:[/red] {exc}", err=True)
        raise typer.Exit(2) from None


def _store(settings: Settings) -> CandleStore:
    try:
        return open_store(settings)
    except TradingSystemError as exc:
        _out(f"[red]store error:[/red] {exc}", err=True)
        raise typer.Exit(1) from None


def _fail(exc: Exception) -> typer.Exit:
    _out(f"[red]{type(exc).__name__}:[/red] {exc}", err=True)
    return typer.Exit(1)


def init() -> None:
    """Create the var directories and the store schema (safe to run again)."""
    settings = _settings()
    for path in (settings.data.var_dir, settings.reports_dir, settings.data.var_dir / "mlflow"):
        path.mkdir(parents=True, exist_ok=True)
    store = _store(settings)
    try:
        store.init_schema()
    except TradingSystemError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    where = settings.duckdb_path if settings.store.backend == "duckdb" else "postgres (store.postgres_dsn)"
    _out(f"var dir: {settings.data.var_dir}\nstore: {settings.store.backend} at {where}, schema ready")


def import_data(
    symbols: SymbolsOpt = None,
    timeframes: Annotated[
        list[str] | None, typer.Option("--timeframes", "-t", help="Timeframes; default: shipped + derived.")
    ] = None,
    start: StartOpt = None,
    end: EndOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Import the shipped candle files (data.data_dir) into the store, deriving coarser timeframes."""
    from core.data_import import import_candles

    settings = _settings()
    syms = _split(symbols) or list(settings.data.universe)
    tfs = [t.strip() for x in timeframes or [] for t in x.split(",") if t.strip()] or None
    store = _store(settings)
    try:
        results = import_candles(
            store, settings.data.data_dir, timeframes=tfs, derived_timeframes=settings.data.derived_timeframes,
            symbols=syms, start=_when(start, "--start"), end=_when(end, "--end"),
            chunk_rows=settings.store.batch_rows, progress=progress,
        )
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    table = Table("timeframe", "shipped rows", "derived rows", "source", title=f"imported from {settings.data.data_dir}")
    for r in results:
        table.add_row(r.timeframe, f"{r.shipped_rows:,}", f"{r.derived_rows:,}", r.source)
    _out(table)


def status(
    symbol: Annotated[str | None, typer.Option(help="Only this symbol; with --timeframe, list its gaps.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Only this timeframe.")] = None,
) -> None:
    """Coverage of the store: first/last bar, rows and missing bars per symbol and timeframe."""
    import polars as pl

    from core.domain import TIMEFRAME_DURATION
    from core.plausibility import Bounds

    settings = _settings()
    store = _store(settings)
    try:
        cov = store.coverage()
        if symbol:
            cov = cov.filter(pl.col("symbol") == symbol.upper())
        if timeframe:
            cov = cov.filter(pl.col("timeframe") == timeframe)
        gap_counts = {
            (s, t): len(store.gaps(s, t)) for s, t, m in cov.select("symbol", "timeframe", "missing").iter_rows() if m
        }
        gap_list = store.gaps(symbol.upper(), timeframe) if symbol and timeframe else None
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    if cov.is_empty():
        _out("store is empty: run `mlcrypto import` (or `mlcrypto backfill-binance`)")
        return
    # Timestamps are formatted by polars: a bar dated year 20000 (an older store, written before the
    # plausibility bounds) has no Python datetime and must not crash the report that should reveal it.
    fmt = "%Y-%m-%d %H:%M"
    shown = cov.with_columns(pl.col("first", "last").dt.strftime(fmt))
    table = Table("symbol", "timeframe", "first", "last", "rows", "missing", "gaps", title=f"store: {settings.store.backend}")
    for r in shown.iter_rows(named=True):
        table.add_row(
            r["symbol"], r["timeframe"], r["first"], r["last"],
            f"{r['rows']:,}", f"{r['missing']:,}", str(gap_counts.get((r["symbol"], r["timeframe"]), 0)),
        )
    _out(table)
    bounds = Bounds.from_settings(settings)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    step_ms = pl.col("timeframe").replace_strict(
        {tf: int(d.total_seconds() * 1000) for tf, d in TIMEFRAME_DURATION.items()}, default=0, return_dtype=pl.Int64)
    outside = cov.filter((pl.col("first").dt.epoch("ms") < bounds.earliest_ms)
                         | (pl.col("last").dt.epoch("ms") > now_ms + step_ms))
    if not outside.is_empty():
        names = ", ".join(f"{s} {t}" for s, t in outside.select("symbol", "timeframe").iter_rows())
        _out(f"[red]implausible bars stored[/red] (before {bounds.earliest:%Y-%m-%d} or after now + 1 bar) in: {names}; "
             "they were written before the plausibility bounds: delete them", err=True)
    if gap_list is not None and not gap_list.is_empty():
        gaps = Table("gap start", "gap end (exclusive)", "missing bars", title=f"gaps of {symbol.upper()} {timeframe}")
        for g in gap_list.with_columns(pl.col("gap_start", "gap_end").dt.strftime(fmt)).iter_rows(named=True):
            gaps.add_row(g["gap_start"], g["gap_end"], f"{g['missing']:,}")
        _out(gaps)


def backfill_binance_cmd(
    symbols: SymbolsOpt = None,
    timeframe: Annotated[str, typer.Option(help="Bar size: 1m 5m 15m 1h 4h 1d.")] = "1h",
    start: StartOpt = None,
    end: EndOpt = None,
    days: Annotated[int, typer.Option(min=1, help="When --start is absent: this many days before --end.")] = 30,
) -> None:
    """Fill the store from Binance public klines (no key needed; closed bars only)."""
    from core.feeds.binance_klines import BinanceKlinesClient, backfill_binance

    settings = _settings()
    syms = _split(symbols) or list(settings.data.symbols)
    stop = _when(end, "--end") or datetime.now(UTC)
    begin = _when(start, "--start") or stop - timedelta(days=days)
    store = _store(settings)
    try:
        with BinanceKlinesClient.from_settings(settings, quote=settings.feed.binance_quote) as client:
            written = backfill_binance(client, store, syms, timeframe, begin, stop)
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    table = Table("symbol", "bars written", title=f"Binance {timeframe} {begin:%Y-%m-%d %H:%M} -> {stop:%Y-%m-%d %H:%M} UTC")
    for sym, n in written.items():
        table.add_row(sym, f"{n:,}")
    _out(table)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("import")(import_data)
    app.command("status")(status)
    app.command("backfill-binance")(backfill_binance_cmd)
