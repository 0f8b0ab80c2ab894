"""Strategy-engine commands: `mlcrypto signals` (run the three detectors over a window of the shipped
history) and `mlcrypto regime` (the circuit breaker's regime over that window)."""

from __future__ import annotations

from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from core.data_import import load_shipped
from core.errors import TradingSystemError
from core.regime import regime_frame
from core.strategies.registry import FEATURE_NAMES, detect_all
from deployments.commands.data import EndOpt, StartOpt, SymbolsOpt, _fail, _settings, _split, _when

console = Console()
TimeframeOpt = Annotated[str | None, typer.Option(help="Detection timeframe; default: data.detection_timeframe (1h).")]
LastOpt = Annotated[int, typer.Option(help="How many of the latest rows to print.")]


def _bars(symbols: list[str] | None, start: str | None, end: str | None, timeframe: str | None):  # noqa: ANN202
    settings = _settings()
    tf = timeframe or settings.data.detection_timeframe
    syms = _split(symbols) or list(settings.data.symbols)
    bars = load_shipped(settings.data.data_dir, tf, syms, _when(start, "--start"), _when(end, "--end"))
    if bars.is_empty():
        console.print(f"[red]no {tf} bars for {syms} in that window under {settings.data.data_dir}[/red]")
        raise typer.Exit(1)
    return settings, bars.sort("symbol", "ts")


def signals(symbols: SymbolsOpt = None, start: StartOpt = None, end: EndOpt = None,
            timeframe: TimeframeOpt = None, last: LastOpt = 10) -> None:
    """Run DCA, swing and channel detection over shipped candles; print counts and the latest signals."""
    settings, bars = _bars(symbols, start, end, timeframe)
    try:
        rows = detect_all(bars, settings)
    except TradingSystemError as exc:
        raise _fail(exc) from None
    counts = rows.group_by("strategy").agg(pl.len().alias("signals"), pl.col("symbol").n_unique().alias("symbols"))
    t = Table("strategy", "signals", "symbols", title=f"{bars.height:,} bars, {bars['symbol'].n_unique()} symbols")
    for r in counts.sort("strategy").iter_rows(named=True):
        t.add_row(r["strategy"], f"{r['signals']:,}", str(r["symbols"]))
    console.print(t)
    latest = Table("ts", "symbol", "strategy", "price", "TP", "SL", "key features", title=f"latest {last} signals")
    for r in rows.tail(last).iter_rows(named=True):
        names = FEATURE_NAMES[r["strategy"]][:3]
        feats = ", ".join(f"{k}={r['features'][k]:.3g}" for k in names if r["features"][k] is not None)
        latest.add_row(f"{r['ts']:%Y-%m-%d %H:%M}", r["symbol"], r["strategy"], f"{r['price']:.6g}",
                       f"{r['tp_pct']:.2%}", f"{r['sl_pct']:.2%}", feats)
    console.print(latest)


def regime(symbols: SymbolsOpt = None, start: StartOpt = None, end: EndOpt = None,
           timeframe: TimeframeOpt = None, last: LastOpt = 10) -> None:
    """The circuit breaker's regime per bar over shipped candles: share of time in each, and the latest changes."""
    settings, bars = _bars(symbols, start, end, timeframe)
    try:
        frame = regime_frame(bars, settings)
    except TradingSystemError as exc:
        raise _fail(exc) from None
    share = frame.group_by("regime").agg(pl.len().alias("bars")).with_columns((pl.col("bars") / frame.height).alias("share"))
    t = Table("regime", "bars", "share", title=f"regime over {frame.height:,} BTC bars")
    for r in share.sort("bars", descending=True).iter_rows(named=True):
        t.add_row(r["regime"], f"{r['bars']:,}", f"{r['share']:.1%}")
    console.print(t)
    changes = frame.filter(pl.col("regime") != pl.col("regime").shift(1)).tail(last)
    c = Table("ts", "regime", "reason", title=f"latest {last} regime changes")
    for r in changes.iter_rows(named=True):
        c.add_row(f"{r['ts']:%Y-%m-%d %H:%M}", r["regime"], r["reason"])
    console.print(c)


def register(app: typer.Typer) -> None:
    app.command("signals")(signals)
    app.command("regime")(regime)
