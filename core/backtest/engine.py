"""The backtest engine: history replayed through the same scan -> score -> manage -> execute path as
paper trading.

1. detection once over the whole history (vectorised; a value at bar t uses bars <= t only):
   registry.window_signals, detect_all's rows of the window as Signals;
2. every signal scored in one batch (scores depend on the signal alone, not on the book);
3. a loop over the detection bars' close times, visiting only times with signals or open positions:
   open positions get the bar that just closed - or its finer bars (e.g. 5m) when an exit frame covers
   that whole bar - through the execution backend (core.positions rules; see execution.py), then
   core.trading.scan.plan_scan (THE scan function the Prefect scan calls too) decides on the signals
   of that bar with the book valued at that close (core.trading.valuation), and the taken entries
   become positions whose orders rest from that close on.

Deterministic: no clock, no randomness, ties broken by name.
"""

from __future__ import annotations

import functools
import gc
import json
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import polars as pl

from core.backtest.execution import Execution, FastExecution
from core.domain import Regime, timeframe_duration, ts_bounds
from core.errors import DataQualityError
from core.manager import StrategyManager, Verdict
from core.positions import Bar, ManagedPosition
from core.regime import regime_frame
from core.scoring import BatchScored, RuleOnlyScorer, Scorer
from core.settings import Settings
from core.strategies.base import validate_bars
from core.strategies.registry import window_signals
from core.trading.scan import plan_scan
from core.trading.valuation import marked, risk_view

Progress = Callable[[int, int], None]
P = ParamSpec("P")
R = TypeVar("R")

_US = 1_000_000
_TICK = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Series:
    """One symbol's bars as flat arrays (ts in epoch microseconds of the bar open): the loop reads single
    elements, where array.array (like a list) is several times faster than numpy scalar indexing, and
    building it is one copy of the column's buffer instead of a Python object per value."""

    ts: array[int]
    open: array[float]
    high: array[float]
    low: array[float]
    close: array[float]


_PRICES = ("open", "high", "low", "close")


def _by_symbol(bars: pl.DataFrame) -> dict[str, _Series]:
    out: dict[str, _Series] = {}
    cols = bars.select(
        "symbol",
        pl.col("ts").dt.cast_time_unit("us").dt.epoch("us").alias("t"),
        pl.col("open", "high", "low", "close").cast(pl.Float64),
    )
    for (sym,), part in cols.partition_by("symbol", as_dict=True, maintain_order=True).items():
        ts: array[int] = array("q", part.get_column("t").to_numpy().tobytes())
        prices: list[array[float]] = [array("d", part.get_column(c).to_numpy().tobytes()) for c in _PRICES]
        out[str(sym)] = _Series(ts, *prices)
    return out


_REGIMES = {r.value: r for r in Regime}


def _regime_lookup(
    market_bars: pl.DataFrame, settings: Settings, start: datetime, end: datetime, validated: bool
) -> tuple[list[int], list[Regime], list[str], pl.DataFrame]:
    """The regime rows as lists for bisect (bar open ts in us, regime, reason) and the window's changes."""
    rf = regime_frame(market_bars, settings, validated=validated).sort("ts")
    changes = (
        rf.filter((pl.col("regime") != pl.col("regime").shift(1)).fill_null(True))
        .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        .select(pl.col("ts").dt.cast_time_unit("us"), "regime", "reason")
    )
    return (
        rf.get_column("ts").dt.cast_time_unit("us").dt.epoch("us").to_list(),
        [_REGIMES[r] for r in rf.get_column("regime").to_list()],
        rf.get_column("reason").to_list(),
        changes,
    )


def _series_and_timeline(
    bars: pl.DataFrame, exit_bars: pl.DataFrame | None, start: datetime, end: datetime
) -> tuple[int, dict[str, _Series], dict[str, _Series], list[int]]:
    """The window's bar count, its per-symbol series (and the finer exit bars'), and the sorted distinct
    bar open times the loop walks."""
    window = bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    series = _by_symbol(window)
    fine = _by_symbol(exit_bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))) if exit_bars is not None else {}
    timeline = window.get_column("ts").dt.cast_time_unit("us").dt.epoch("us").unique().sort().to_list()
    return window.height, series, fine, timeline


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)  # exact (no float rounding of the microseconds)



class _GcPause:
    """The cyclic garbage collector paused while any backtest runs (Prefect may run several in threads):
    the first to enter pauses it, the last to leave restores what it was.

    The first backtest of a process also freezes (gc.freeze) the objects alive when it starts: the
    imported modules, classes and pydantic schemas, which live as long as the process. Every later full
    collection, and the one at interpreter exit, then skips them (about 0.1 s of a 1.4 s whole-process
    run). Once per process, so whatever else is frozen with them is bounded: later objects are collected
    as usual."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._was_enabled = False
        self._froze = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._froze:
                gc.freeze()
                self._froze = True
            if self._active == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._was_enabled:
                gc.enable()


_GC_PAUSE = _GcPause()


def _gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn` with the cyclic garbage collector paused. A backtest allocates hundreds of thousands of
    small acyclic objects (signals, verdicts, bars, fills); the collector's repeated passes over them
    and over everything imported cost about 15% of the run and free nothing that reference counting
    does not free anyway."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _GC_PAUSE:
            return fn(*args, **kwargs)

    return wrapper


# decision_rows(): the DECISION_SCHEMA rows without `features`, and the features dicts.
DecisionRows = tuple[list[tuple[Any, ...]], list[dict[str, Any]]]


@dataclass
class BacktestResult:
    settings_fingerprint: str
    timeframe: str
    start: datetime
    end: datetime
    symbols: list[str]
    bars: int
    signals: int
    trades: pl.DataFrame
    equity: pl.DataFrame
    fills: pl.DataFrame
    regime_changes: pl.DataFrame
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    decision_rows: DecisionRows = field(default_factory=lambda: ([], []), repr=False)  # see decision_rows()

    @functools.cached_property
    def decisions(self) -> pl.DataFrame:
        """Every decision (DECISION_SCHEMA), built on first read: a caller that reads only the trades (a
        rule-only sweep, the whole-process bench) skips the features JSON and the frame of ~18k decisions
        (~0.17 s of a 6-month 134-coin run). The rows are plain values taken when the run ended."""
        return _decision_rows_frame(*self.decision_rows)


@_gc_paused
def run_backtest(
    bars: pl.DataFrame,
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    scorer: Scorer | None = None,
    exit_bars: pl.DataFrame | None = None,
    market_bars: pl.DataFrame | None = None,
    use_regime: bool = True,
    execution: Execution | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Replay `bars` (one timeframe, many symbols, sorted by (symbol, ts)); decisions only for signal bars
    with start <= ts < end (earlier bars warm the indicators up).

    The regime comes from `market_bars` (BTC + the monitored coins; default: `bars`), as of each signal
    bar's close; `use_regime=False` trades as if always NORMAL. Exits are checked on `exit_bars` (a finer
    timeframe of the same symbols) wherever they cover a whole detection bar. `execution` defaults to the
    in-memory FastExecution; pass LedgerExecution(paper_account(...)) for the paper book and venue."""
    t0, c0 = time.perf_counter(), time.process_time()
    tf = validate_bars(bars)
    dur = timeframe_duration(tf)
    dur_us = int(dur / timedelta(microseconds=1))
    first, last = ts_bounds(bars.get_column("ts"))
    start = start or first
    end = end or (last + dur)
    if start >= end:
        raise DataQualityError(f"backtest window is empty: start {start} >= end {end}")
    timings: dict[str, float] = {}

    # 1. detection over the whole history (warm-up included), then the window's signals only.
    signals = window_signals(bars, settings, start, end, validated=True)
    timings["detect_s"] = time.perf_counter() - t0
    # The regime and the per-symbol series are polars/numpy work that releases the GIL: a second thread
    # computes them (in this order) while the signals are scored in Python. Same results, only
    # overlapped; regime_s is then the wait for them.
    pool = ThreadPoolExecutor(max_workers=1)
    market = market_bars if market_bars is not None else bars
    # market_bars=None: the regime reads the bars validated above.
    regime_job = pool.submit(_regime_lookup, market, settings, start, end, market_bars is None) if use_regime else None
    series_job = pool.submit(_series_and_timeline, bars, exit_bars, start, end)
    pool.shutdown(wait=False)  # the worker ends after these two jobs
    batch = BatchScored(signals, (scorer or RuleOnlyScorer(settings)).score(signals))
    timings["score_s"] = time.perf_counter() - t0 - timings["detect_s"]
    by_bar: dict[int, list[int]] = {}
    for i, s in enumerate(signals):
        by_bar.setdefault(int(s.ts.timestamp() * _US), []).append(i)

    # Regime as of each bar close (the last regime row at or before it; NORMAL before the first).
    reg_ts, reg_val, reg_why, changes = regime_job.result() if regime_job else ([], [], [], _empty_changes())
    timings["regime_s"] = time.perf_counter() - t0 - timings["detect_s"] - timings["score_s"]

    window_bars, series, fine, timeline = series_job.result()
    fine_dur = timeframe_duration(validate_bars(exit_bars)) if exit_bars is not None else None
    fine_per_bar = int(dur / fine_dur) if fine_dur else 0

    # A hole: the symbol's next bar opens more than max_bridged_gap after the last one closed (the label
    # simulator's rule). A position never bridges one: it is closed at the last close before it.
    hole_us = (settings.strategy.max_bridged_gap + dur) // _TICK
    manager = StrategyManager(settings)
    ex: Execution = execution if execution is not None else FastExecution(settings)
    marks: dict[str, float] = {}
    open_pos: list[ManagedPosition] = []
    cursor: dict[str, int] = {}  # next bar index per position id
    closed: list[ManagedPosition] = []
    stranded: list[ManagedPosition] = []  # open in the ledger, their symbol's data ended (ledger mode)
    verdicts: list[Verdict] = []
    curve: list[tuple[int, float, float, float]] = []  # ts (close, us), cash, equity, open notional
    n = len(timeline)
    signal_bars = by_bar.keys()

    c_loop = time.process_time()
    for k, t in enumerate(timeline):
        if progress is not None and k % 2048 == 0:
            progress(k, n)
        if not open_pos and t not in signal_bars:
            continue
        close_us = t + dur_us
        t_dt = _dt(t)  # the open time of every bar stepped below (one datetime per step, not per position)
        # 2. step open positions on the bar that opened at t (or its finer bars).
        still: list[ManagedPosition] = []
        ending: list[ManagedPosition] = []  # their symbol's data ends with this bar
        holed: list[ManagedPosition] = []  # a hole follows this bar of their symbol
        for pos in open_pos:
            ser = series[pos.symbol]
            i = cursor[pos.position_id]
            while i < len(ser.ts) and ser.ts[i] < t:
                i += 1  # bars before t were already visited (or precede the position)
            if i < len(ser.ts) and ser.ts[i] == t:
                _apply(ex, pos, ser, i, t_dt, fine.get(pos.symbol), fine_per_bar, fine_dur)
                marks[pos.symbol] = ser.close[i]
                i += 1
                if i < len(ser.ts) and ser.ts[i] - ser.ts[i - 1] > hole_us and pos.status != "closed":
                    cursor[pos.position_id] = i
                    holed.append(pos)  # held while this step decides, then out at this close
                    continue
            cursor[pos.position_id] = i
            if i >= len(ser.ts) and pos.status != "closed":
                if not ex.closes_at_end:
                    stranded.append(pos)  # stays open in the ledger; no bar will come for it
                    continue
                # The symbol's data ends here: the position is still held while this step decides (as in
                # a paper book), then marked out at its last close, at this step.
                ending.append(pos)
                continue
            (closed if pos.status == "closed" else still).append(pos)
        open_pos = still
        # 3. decide on this bar's signals with the book marked at its close.
        idx = by_bar.get(t)
        if idx:
            for j in idx:  # a signal's price is the close of its bar (the bar that opened at t): no lookup
                marks[signals[j].symbol] = signals[j].price
            view = risk_view(ex.cash, open_pos + ending + holed + stranded, marks)
            r_i = bisect_right(reg_ts, t) - 1
            regime = (reg_val[r_i], reg_why[r_i]) if r_i >= 0 else (Regime.NORMAL, "no regime data")
            plan = plan_scan(
                [signals[j] for j in idx], view, ex.decided, regime, None, batch, settings, _dt(close_us), manager
            )
            verdicts.extend(plan.verdicts)
            ex.record_skipped(plan.skipped_verdicts)
            for entry in plan.entries:
                opened = ex.open(entry)
                if opened is None:
                    continue  # the paper venue's minimums refused it: recorded as skipped by the account
                pos = opened
                ser = series[pos.symbol]
                cursor[pos.position_id] = c_i = bisect_left(ser.ts, close_us)
                if 0 < c_i < len(ser.ts) and ser.ts[c_i] - ser.ts[c_i - 1] > hole_us:
                    ex.data_hole(pos, _bar(ser, c_i - 1))  # its orders never rest on a price after the hole
                    closed.append(pos)
                elif c_i < len(ser.ts):
                    open_pos.append(pos)
                elif ex.closes_at_end:  # no bar left to fill on: it lapses unfilled
                    ex.end_of_data(pos, _bar(ser, len(ser.ts) - 1))
                    closed.append(pos)
                else:
                    stranded.append(pos)
        for pos in ending:
            ex.end_of_data(pos, _bar(series[pos.symbol], len(series[pos.symbol].ts) - 1))
            (closed if pos.status == "closed" else open_pos).append(pos)
        for pos in holed:
            ex.data_hole(pos, _bar(series[pos.symbol], cursor[pos.position_id] - 1))
            closed.append(pos)
        equity, notional = marked(ex.cash, open_pos + stranded, marks)
        curve.append((close_us, ex.cash, equity, notional))

    # Every symbol's series ends inside the loop: with closes_at_end nothing is open here; otherwise the
    # positions whose data ended stay open in the ledger and are marked at their last close.
    stranded += open_pos
    if progress is not None:
        progress(n, n)
    timings["loop_s"] = time.perf_counter() - t0 - sum(timings.values())
    timings["loop_cpu_s"] = time.process_time() - c_loop  # the loop is single-threaded Python
    timings["cpu_s"] = time.process_time() - c0  # all threads: with other jobs on the cores, wall time lies
    return BacktestResult(
        settings_fingerprint=settings.fingerprint(),
        timeframe=tf,
        start=start,
        end=end,
        symbols=sorted(series),
        bars=window_bars,
        signals=len(signals),
        trades=trades_frame(closed),
        equity=_curve_frame(curve),
        fills=ex.fills(),
        regime_changes=changes,
        seconds=time.perf_counter() - t0,
        timings=timings,
        decision_rows=decision_rows(verdicts),
    )


def _apply(
    ex: Execution,
    pos: ManagedPosition,
    ser: _Series,
    i: int,
    ts: datetime,
    fine: _Series | None,
    fine_per_bar: int,
    fine_dur: timedelta | None,
) -> None:
    """Apply bar i (opening at `ts`), or its finer bars when they cover it completely (exits resolved
    inside the bar)."""
    t = ser.ts[i]
    if fine is not None and fine_dur is not None and fine_per_bar > 1:
        a = bisect_left(fine.ts, t)
        b = a + fine_per_bar
        if b <= len(fine.ts) and fine.ts[a] == t and fine.ts[b - 1] - t == (fine_per_bar - 1) * (fine_dur // _TICK):
            for j in range(a, b):
                ex.apply_bar(pos, Bar(_dt(fine.ts[j]), fine.open[j], fine.high[j], fine.low[j], fine.close[j], fine_dur))
                if pos.status == "closed":
                    return
            return
    ex.apply_bar(pos, Bar(ts, ser.open[i], ser.high[i], ser.low[i], ser.close[i]))


def _bar(ser: _Series, i: int) -> Bar:
    return Bar(_dt(ser.ts[i]), ser.open[i], ser.high[i], ser.low[i], ser.close[i])


TS_US = pl.Datetime("us", "UTC")


def trades_frame(closed: list[ManagedPosition]) -> pl.DataFrame:
    from core.backtest.metrics import TRADE_SCHEMA

    rows = [
        {
            "position_id": p.position_id,
            "symbol": p.symbol,
            "strategy": p.strategy.value,
            "entry_ts": p.entry_ts,
            "exit_ts": p.exit_ts,
            "entry_price": p.avg_price,
            "exit_price": p.exit_price,
            "quantity": p.quantity,
            "gross_pnl": p.gross_pnl,
            "fees": p.fees,
            "net_pnl": p.net_pnl,
            "exit_reason": p.exit_reason.value if p.exit_reason else None,
            "signal_id": p.signal_id,
        }
        for p in closed
        if p.status == "closed" and p.quantity > 0
    ]
    return pl.DataFrame(rows, schema=TRADE_SCHEMA).sort("exit_ts", "symbol", "position_id")


DECISION_SCHEMA: dict[str, pl.DataType] = {
    "signal_id": pl.Utf8(),
    "symbol": pl.Utf8(),
    "strategy": pl.Utf8(),
    "ts": TS_US,
    "taken": pl.Boolean(),
    "reason": pl.Utf8(),  # core.domain.ReasonCode
    "detail": pl.Utf8(),
    "regime": pl.Utf8(),
    "confidence": pl.Float64(),
    "expected_value": pl.Float64(),
    "notional": pl.Float64(),
    "rule_only": pl.Boolean(),
    "model_version": pl.Utf8(),
    "take_profit_pct": pl.Float64(),
    "stop_loss_pct": pl.Float64(),
    "size_multiplier": pl.Float64(),
    "features": pl.Utf8(),  # JSON object: the strategy's features at the signal bar (inputs of the models)
}


# json.dumps(features, allow_nan=True, sort_keys=True), with the encoder built once instead of per row.
_FEATURES_JSON = json.JSONEncoder(allow_nan=True, sort_keys=True)


def decision_rows(verdicts: list[Verdict]) -> DecisionRows:
    """DECISION_SCHEMA rows without `features`, and the features dicts apart (encoded when the frame is
    built), read from the manager's verdicts (the values a Decision would hold). Plain values and the
    dicts apart: the garbage collector stops tracking a tuple of atoms after one pass but never one
    holding a dict, so a result keeping ~18k models (or such tuples) would be walked on every full pass
    for as long as it lives, and at exit."""
    rows = [
        (
            # The StrEnum members themselves: they are str, and the frame stores their values.
            v.signal.signal_id, v.signal.symbol, v.signal.strategy, v.ts, v.taken,
            v.code, v.detail, v.regime, v.scores.confidence, v.ev, v.notional,
            v.scores.rule_only, v.scores.model_version, v.scores.take_profit_pct, v.scores.stop_loss_pct,
            v.scores.size_multiplier,
        )
        for v in verdicts
    ]
    return rows, [v.signal.features for v in verdicts]


def _decision_rows_frame(rows: list[tuple[Any, ...]], features: list[dict[str, Any]]) -> pl.DataFrame:
    encode = _FEATURES_JSON.encode
    return pl.DataFrame(
        [(*r, encode(f)) for r, f in zip(rows, features, strict=True)], schema=DECISION_SCHEMA, orient="row"
    )


def _curve_frame(curve: list[tuple[int, float, float, float]]) -> pl.DataFrame:
    schema = {"ts": pl.Int64, "cash": pl.Float64, "equity": pl.Float64, "open_notional": pl.Float64}
    return pl.DataFrame(curve, schema=schema, orient="row").with_columns(
        pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC")
    )


def _empty_changes() -> pl.DataFrame:
    return pl.DataFrame(schema={"ts": TS_US, "regime": pl.Utf8, "reason": pl.Utf8})
