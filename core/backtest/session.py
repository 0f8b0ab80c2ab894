"""Backtest and paper sessions over stored candles: load what the engine needs, run it, write the report,
record decisions and trades in the store. Plain functions so the CLI and Prefect flows stay thin wraps.

Warm-up: detection and the regime need history before the first decision (EMA50, the 72-bar channel
window, the regime's 30-day median of BTC volatility), so bars are loaded from `start - 35 days`;
decisions are only made for signal bars inside [start, end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from core.backtest.engine import BacktestResult, Progress, run_backtest
from core.backtest.execution import Execution, LedgerExecution
from core.backtest.report import Report, write_report
from core.domain import timeframe_duration
from core.errors import ConfigError, DataQualityError, StoreError
from core.regime import BENCHMARK
from core.scoring import Scorer
from core.settings import Settings
from core.storage.base import CandleStore

WARMUP = timedelta(days=35)


@dataclass(frozen=True)
class SessionInputs:
    bars: pl.DataFrame
    market_bars: pl.DataFrame
    exit_bars: pl.DataFrame | None


Reader = Callable[[list[str], str, datetime | None, datetime | None], pl.DataFrame]


def store_reader(store: CandleStore) -> Reader:
    return lambda symbols, timeframe, start, end: store.read_many(symbols, timeframe, start, end)


def files_reader(settings: Settings) -> Reader:
    """Read the shipped files directly (no import needed): the fast path for research backtests."""
    from core.data_import import load_shipped

    return lambda symbols, timeframe, start, end: load_shipped(settings.data.data_dir, timeframe, symbols, start, end)


def load_inputs(
    read: Reader,
    settings: Settings,
    symbols: list[str],
    timeframe: str,
    start: datetime,
    end: datetime,
    exit_timeframe: str | None = None,
) -> SessionInputs:
    """Bars of the traded symbols (with warm-up), the regime's market bars (BTC + monitored coins) and,
    when asked and stored, finer bars for exits."""
    if start >= end:
        raise DataQualityError(f"empty window: start {start} >= end {end}")
    market = sorted(set(settings.data.symbols) | {BENCHMARK})
    wanted = sorted(set(symbols) | set(market))
    everything = read(wanted, timeframe, start - WARMUP, end)
    bars = everything.filter(pl.col("symbol").is_in(symbols))
    if bars.filter(pl.col("ts") >= start).height == 0:
        raise DataQualityError(
            f"no {timeframe} bars for {symbols} between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M}; "
            "pick a covered window (`mlcrypto status` for the store, docs for the shipped files) or import the "
            "candles first (`mlcrypto import`)"
        )
    exit_bars = None
    if exit_timeframe and timeframe_duration(exit_timeframe) < timeframe_duration(timeframe):
        fine = read(symbols, exit_timeframe, start, end)
        exit_bars = fine if fine.height else None
    return SessionInputs(bars, everything.filter(pl.col("symbol").is_in(market)), exit_bars)


def run_id_for(kind: str, symbols: list[str], timeframe: str, start: datetime, end: datetime, settings: Settings) -> str:
    """A readable, deterministic id: the same inputs and settings write to the same directory."""
    import hashlib

    tag = hashlib.sha256(",".join(sorted(symbols)).encode()).hexdigest()[:6]
    return f"{kind}-{timeframe}-{start:%Y%m%d}-{end:%Y%m%d}-{len(symbols)}sym{tag}-{settings.fingerprint()}"


def record_session(store: CandleStore, run_id: str, result: BacktestResult) -> None:
    """Decisions (with why) and closed trades into the store's ledger records, keyed by run and id."""
    decisions = [
        (f"{run_id}:{r['signal_id']}", r | {"run_id": run_id})
        for r in result.decisions.with_columns(pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%z")).to_dicts()
    ]
    trades = [
        (f"{run_id}:{r['position_id']}", r | {"run_id": run_id})
        for r in result.trades.with_columns(
            pl.col("entry_ts", "exit_ts").dt.to_string("%Y-%m-%dT%H:%M:%S%z")
        ).to_dicts()
    ]
    store.put_records("backtest_decisions", decisions)
    store.put_records("backtest_trades", trades)


def reset_paper_ledger(store: CandleStore) -> int:
    """Remove an earlier replayed paper session's ledger (journal and views) in ONE transaction: a kill
    half-way leaves either the whole ledger or none of it."""
    from core.portfolio import JOURNAL, VIEWS

    return store.delete_kinds([JOURNAL, *VIEWS])


# Each view kind, the journal list it is derived from and the id keying it.
_VIEW_SOURCES = {"position": ("positions", "position_id"), "order": ("orders", "client_order_id"),
                 "fill": ("fills", "fill_id"), "trade": ("trades", "position_id"), "decision": ("decisions", "signal_id")}


def check_ledger_agrees(store: CandleStore) -> None:
    """Start-up guard: every record kind of the ledger agrees with the journal (a half-done reset or a
    hand edit is refused, never traded on). A view may lack only the last event's entities (a crash
    between the journal write and its views, which Portfolio.load repairs)."""
    from core.portfolio import JOURNAL, VIEWS

    journal = sorted(store.get_records(JOURNAL), key=lambda kv: kv[0])
    last = journal[-1][1] if journal else {}
    problems = []
    for kind in VIEWS:
        source, id_field = _VIEW_SOURCES[kind]
        ids = {d[id_field] for _, p in journal for d in p.get(source, [])}
        recent = {d[id_field] for d in last.get(source, [])}
        keys = {k for k, _ in store.get_records(kind)}
        if extra := keys - ids:
            problems.append(f"{len(extra)} {kind} record(s) the journal never wrote")
        if missing := ids - keys - recent:
            problems.append(f"{len(missing)} {kind} record(s) of the journal missing")
    if problems:
        raise StoreError(
            "the paper ledger's record kinds disagree (an interrupted reset?): " + "; ".join(problems)
            + ". Run again with --reset to start from an empty book"
        )


def paper_execution(store: CandleStore, settings: Settings, reset: bool) -> LedgerExecution:
    """The paper-trading ledger (Portfolio + PaperVenue) on this store, starting from an empty book."""
    from core.portfolio import JOURNAL, Portfolio
    from core.venues.paper import PaperVenue

    if reset:
        reset_paper_ledger(store)
    check_ledger_agrees(store)
    if store.get_records(JOURNAL):
        raise ConfigError(
            "the store already holds a paper ledger from an earlier session; replaying history on top of it would "
            "mix two sessions: pass --reset to replace it (or use another var_dir/store)"
        )
    return LedgerExecution(Portfolio(store, settings, PaperVenue(settings, store)))


def run_session(
    store: CandleStore,
    settings: Settings,
    *,
    read: Reader | None = None,
    execution: Execution | None = None,
    kind: str,
    symbols: list[str],
    timeframe: str,
    start: datetime,
    end: datetime,
    exit_timeframe: str | None = "5m",
    scorer: Scorer | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    record: bool = True,
    on_loaded: Callable[[SessionInputs], None] | None = None,
) -> tuple[BacktestResult, Report]:
    inputs = load_inputs(read or store_reader(store), settings, symbols, timeframe, start, end, exit_timeframe)
    if on_loaded is not None:
        on_loaded(inputs)
    result = run_backtest(
        inputs.bars, settings, start=start, end=end, scorer=scorer, exit_bars=inputs.exit_bars,
        market_bars=inputs.market_bars, execution=execution, progress=progress,
    )
    rid = run_id or run_id_for(kind, symbols, timeframe, start, end, settings)
    report = write_report(result, settings, rid)
    if record and execution is None:  # the ledger already stored the paper session's decisions and trades
        record_session(store, rid, result)
    return result, report


def last_window(store: CandleStore, symbols: list[str], timeframe: str, days: int) -> tuple[datetime, datetime]:
    """The last `days` days up to the newest stored bar of these symbols."""
    cov = store.coverage().filter(pl.col("symbol").is_in(symbols) & (pl.col("timeframe") == timeframe))
    if cov.height == 0:
        raise DataQualityError(f"no {timeframe} bars for {symbols} in the store; run `mlcrypto import` first")
    end = cov.get_column("last").max() + timeframe_duration(timeframe)
    return end - timedelta(days=days), end


def import_for_session(store: CandleStore, settings: Settings, progress: bool = True) -> list:
    """Main job step 1: the store schema, then the shipped detection-timeframe and 5m candles of the
    monitored coins (idempotent upserts; a second run rewrites the same rows)."""
    from core.data_import import import_candles

    for path in (settings.data.var_dir, settings.reports_dir):
        path.mkdir(parents=True, exist_ok=True)
    store.init_schema()
    return import_candles(
        store, settings.data.data_dir, timeframes=sorted({settings.data.detection_timeframe, "5m"}),
        derived_timeframes=settings.data.derived_timeframes, symbols=list(settings.data.symbols),
        chunk_rows=settings.store.batch_rows, progress=progress,
    )


def run_main_job(
    store: CandleStore, settings: Settings, days: int = 90, progress: Progress | None = None, show_import: bool = True
) -> tuple[list, BacktestResult, Report]:
    """The main job: import, then a rule-only paper session (paper ledger + paper venue) over the last
    `days` days of the monitored coins, starting from a fresh paper book each run."""
    imported = import_for_session(store, settings, progress=show_import)
    symbols = list(settings.data.symbols)
    tf = settings.data.detection_timeframe
    start, end = last_window(store, symbols, tf, days)
    result, report = run_session(
        store, settings, kind="paper", symbols=symbols, timeframe=tf, start=start, end=end,
        execution=paper_execution(store, settings, reset=True), progress=progress,
    )
    return imported, result, report
