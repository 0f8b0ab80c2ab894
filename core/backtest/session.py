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
from core.domain import timeframe_duration, ts_bounds
from core.errors import ConfigError, DataQualityError
from core.regime import BENCHMARK
from core.scoring import Scorer
from core.settings import Settings
from core.storage.base import RecordStore, Store

WARMUP = timedelta(days=35)


@dataclass(frozen=True)
class SessionInputs:
    bars: pl.DataFrame
    market_bars: pl.DataFrame
    exit_bars: pl.DataFrame | None


ScorerFor = Callable[[pl.DataFrame], Scorer]  # builds the scorer from the loaded bars
Reader = Callable[[list[str], str, datetime | None, datetime | None], pl.DataFrame]


def store_reader(store: Store) -> Reader:
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


def record_session(store: RecordStore, run_id: str, result: BacktestResult) -> None:
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


def paper_execution(store: RecordStore, settings: Settings, reset: bool) -> LedgerExecution:
    """The paper account (simulated driver + PaperVenue) on this store, starting from an empty book. A
    half-done reset (record kinds that disagree) is refused before anything trades."""
    from core.trading.account import paper_account
    from core.trading.journal import check_journal_agrees, has_journal, reset_journal

    if reset:
        reset_journal(store)
    check_journal_agrees(store)
    if has_journal(store):
        raise ConfigError(
            "the store already holds a paper ledger from an earlier session; replaying history on top of it would "
            "mix two sessions: pass --reset to replace it (or use another var_dir/store)"
        )
    return LedgerExecution(paper_account(store, settings))


def run_session(
    store: Store,
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
    scorer: Scorer | ScorerFor | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    record: bool = True,
) -> tuple[BacktestResult, Report]:
    """`scorer`: a Scorer, or a function building one from the loaded bars (the models' historical
    context scorer needs them); default rule-only."""
    inputs = load_inputs(read or store_reader(store), settings, symbols, timeframe, start, end, exit_timeframe)
    chosen = scorer if scorer is None or isinstance(scorer, Scorer) else scorer(inputs.bars)
    result = run_backtest(
        inputs.bars, settings, start=start, end=end, scorer=chosen, exit_bars=inputs.exit_bars,
        market_bars=inputs.market_bars, execution=execution, progress=progress,
    )
    rid = run_id or run_id_for(kind, symbols, timeframe, start, end, settings)
    report = write_report(result, settings, rid)
    if record and execution is None:  # the ledger already stored the paper session's decisions and trades
        record_session(store, rid, result)
    return result, report


def last_window(store: Store, symbols: list[str], timeframe: str, days: int) -> tuple[datetime, datetime]:
    """The last `days` days up to the newest stored bar of these symbols."""
    cov = store.coverage().filter(pl.col("symbol").is_in(symbols) & (pl.col("timeframe") == timeframe))
    if cov.height == 0:
        raise DataQualityError(f"no {timeframe} bars for {symbols} in the store; run `mlcrypto import` first")
    end = ts_bounds(cov.get_column("last"))[1] + timeframe_duration(timeframe)
    return end - timedelta(days=days), end


def import_for_session(store: Store, settings: Settings, progress: bool = True) -> list:
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
    store: Store, settings: Settings, days: int = 90, progress: Progress | None = None, show_import: bool = True
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


def replay_window(settings: Settings, symbols: list[str], length: timedelta, end: datetime | None) -> tuple[datetime, datetime]:
    """[end - length, end) of a paper replay; `end` defaults to the last hour every traded coin has a
    shipped bar for (some coins' history stops earlier: none is gate-failed for merely having no data)."""
    from core.data_import import load_shipped

    tf = settings.data.detection_timeframe
    if end is None:
        last = load_shipped(settings.data.data_dir, tf, symbols).group_by("symbol").agg(pl.col("ts").max())
        if last.is_empty():
            raise ValueError(f"no shipped {tf} bars for {symbols} in {settings.data.data_dir}")
        first_to_stop: datetime = last["ts"].min()  # type: ignore[assignment]  # polars types min() loosely
        end = first_to_stop + timeframe_duration(tf)
    return end - length, end


@dataclass(frozen=True)
class ReplayTape:
    """Shipped bars a paper replay feeds to the scan flow step by step, as they would have closed."""

    bars: pl.DataFrame
    timeframe: str

    @classmethod
    def load(cls, settings: Settings, symbols: list[str], start: datetime, stop: datetime) -> ReplayTape:
        from core.data_import import load_shipped

        tf = settings.data.detection_timeframe
        return cls(load_shipped(settings.data.data_dir, tf, symbols, start, stop), tf)

    def closed_in(self, start: datetime, end: datetime) -> pl.DataFrame:
        """The bars that opened at or after `start` and closed by `end`."""
        dur = timeframe_duration(self.timeframe)
        return self.bars.filter((pl.col("ts") >= start) & (pl.col("ts") + dur <= end))
