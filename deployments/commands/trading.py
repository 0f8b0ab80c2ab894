"""Trading commands: `mlcrypto backtest`, `mlcrypto paper`, and the main job `mlcrypto run`.

The logic lives in core.backtest.session; these commands parse options, show progress and print the
report tables.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from core.errors import TradingSystemError
from core.settings import Settings
from deployments.commands.data import EndOpt, StartOpt, SymbolsOpt, _fail, _settings, _split, _store, _when

console = Console()

TimeframeOpt = Annotated[str | None, typer.Option(help="Detection timeframe; default: data.detection_timeframe (1h).")]
ExitTfOpt = Annotated[
    str, typer.Option(help="Finer timeframe for exits where stored (e.g. 5m); 'none' to exit on detection bars.")
]


def _progress_bar(desc: str):  # noqa: ANN202
    bar = tqdm(total=0, desc=desc, unit="bar-step", leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def _fmt(v: object, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2%}" if pct else f"{v:,.2f}"
    return str(v)


def print_report(report) -> None:  # noqa: ANN001
    s = report.summary
    head = Table(title=f"report {report.run_id}", show_header=False)
    for key in ("start", "end", "timeframe", "symbols", "bars", "signals", "decisions_taken", "trades", "scoring"):
        head.add_row(key, _fmt(s[key]))
    for key in ("final_equity", "pnl", "fees", "sharpe"):
        head.add_row(key, _fmt(s[key]))
    for key in ("total_return", "win_rate", "max_drawdown", "exposure"):
        head.add_row(key, _fmt(s[key], pct=True))
    skips = s.get("skips_by_code") or {}
    head.add_row("skips by code", ", ".join(f"{k} {n}" for k, n in skips.items()) or "none")
    head.add_row("seconds", _fmt(s["seconds"]))
    console.print(head)
    for title, frame, key in (("per strategy", report.by_strategy, "strategy"), ("per coin", report.by_symbol, "symbol")):
        t = Table(key, "trades", "win rate", "avg win", "avg loss", "P&L", "fees", "Sharpe", "max DD", "exposure", title=title)
        for r in frame.iter_rows(named=True):
            t.add_row(
                r[key], str(r["trades"]), _fmt(r["win_rate"], True), _fmt(r["avg_win"]), _fmt(r["avg_loss"]),
                _fmt(r["pnl"]), _fmt(r["fees"]), _fmt(r["sharpe"]), _fmt(r["max_drawdown"], True), _fmt(r["exposure"], True),
            )
        console.print(t)
    console.print(f"artifacts: {report.directory}")


def _session(
    settings: Settings, kind: str, symbols: list[str], timeframe: str, start: datetime | None, end: datetime | None,
    days: int, exit_timeframe: str, source: str, reset: bool = False,
) -> None:
    from core.backtest.session import files_reader, last_window, paper_execution, run_session, store_reader

    store = _store(settings)
    try:
        read = files_reader(settings) if source == "files" else store_reader(store)
        if end is None or start is None:
            if source == "files":
                probe = read(symbols, timeframe, None, None)
                last = probe.get_column("ts").max() if probe.height else None
                if last is None:
                    raise _fail(TradingSystemError(f"no {timeframe} bars for {symbols} in {settings.data.data_dir}"))
                from core.domain import timeframe_duration

                window = (last + timeframe_duration(timeframe) - timedelta(days=days), last + timeframe_duration(timeframe))
            else:
                window = last_window(store, symbols, timeframe, days)
            end = end or window[1]
            start = start or (end - timedelta(days=days))
        execution = paper_execution(store, settings, reset) if kind == "paper" else None
        bar, update = _progress_bar(f"{kind} {timeframe}")
        try:
            _, report = run_session(
                store, settings, read=read, execution=execution, kind=kind, symbols=symbols, timeframe=timeframe,
                start=start, end=end,
                exit_timeframe=None if exit_timeframe.lower() == "none" else exit_timeframe, progress=update,
            )
        finally:
            bar.close()
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    print_report(report)


def backtest(
    start: StartOpt = None,
    end: EndOpt = None,
    symbols: SymbolsOpt = None,
    timeframe: TimeframeOpt = None,
    days: Annotated[int, typer.Option(min=1, help="Window length when --start is absent.")] = 90,
    exit_timeframe: ExitTfOpt = "5m",
    source: Annotated[str, typer.Option(help="'store' (imported candles) or 'files' (the shipped parquet files).")] = "store",
) -> None:
    """Replay history through detect -> score -> manage -> execute (rule-only until a champion model exists)."""
    settings = _settings()
    if source not in {"store", "files"}:
        raise typer.BadParameter("use 'store' or 'files'", param_hint="--source")
    syms = _split(symbols) or list(settings.data.symbols)
    _session(settings, "backtest", syms, timeframe or settings.data.detection_timeframe,
             _when(start, "--start"), _when(end, "--end"), days, exit_timeframe, source)


def paper(
    days: Annotated[int, typer.Option(min=1, help="Replay the last N days of stored candles.")] = 90,
    symbols: SymbolsOpt = None,
    exit_timeframe: ExitTfOpt = "5m",
    reset: Annotated[bool, typer.Option(help="Replace the store's earlier paper ledger.")] = False,
) -> None:
    """A rule-only paper session over the last N days in the store: the same engine, with the paper
    book (core.trading.account) and the paper venue executing the orders; everything journalled in the store."""
    settings = _settings()
    syms = _split(symbols) or list(settings.data.symbols)
    _session(settings, "paper", syms, settings.data.detection_timeframe, None, None, days, exit_timeframe, "store", reset)


def run(
    days: Annotated[
        int | None, typer.Option(min=1, help="Days replayed as Prefect flow runs (default schedule.replay_days).")
    ] = None,
    step_hours: Annotated[int | None, typer.Option(min=1, help="Simulated hours per scan flow run (default 1).")] = None,
    train: Annotated[str, typer.Option(help="auto (train when no champion) | always | never (rule-only).")] = "auto",
    verbose: Annotated[bool, typer.Option(help="Show Prefect's INFO logs.")] = False,
) -> None:
    """The main job as Prefect flow runs (flows/offline_session.py): init the store, import the shipped
    candles, train or load the models, replay the last days hour by hour through ingest -> gate ->
    scan-and-trade -> manage, then ML vs rule-only over the out-of-sample window, and the report.
    (`mlcrypto paper` is the rule-only paper session through the engine alone.)"""
    from deployments.commands.ops import run_main_job

    if train not in {"auto", "always", "never"}:
        raise typer.BadParameter("use auto, always or never", param_hint="--train")
    try:
        run_main_job(days, step_hours, train, verbose)
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
    app.command("paper")(paper)
    app.command("run")(run)
