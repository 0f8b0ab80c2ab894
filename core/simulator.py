"""The one trade simulator: loops core.positions.step over the bars after a signal.

Used for labels (every historical detection event) and by the backtester. The bars may be finer than
the signal timeframe (e.g. 5m bars under a 1h signal); only bars starting at or after the signal bar's
close are used, so nothing inside the signal bar leaks in. A hole in the data longer than the
`strategy.max_bridged_gap` setting (the one detection uses) ends the trade at the last close before it
(END_OF_DATA): a label never bridges a hole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from core.domain import ExitReason, OrderType, Scores, Signal, timeframe_duration
from core.errors import DataQualityError
from core.positions import Bar, ManagedPosition, end_of_data, open_position, step
from core.settings import Settings

SIM_BAR_COLUMNS = ("ts", "open", "high", "low", "close")


@dataclass(frozen=True)
class TradeOutcome:
    filled: bool
    entry_ts: datetime | None  # open time of the bar of the first fill
    entry_price: float | None  # average fill price
    exit_ts: datetime | None  # close time of the exit bar
    exit_price: float | None
    exit_reason: ExitReason | None  # None: nothing filled
    gross_return: float  # (exit - avg) / avg
    net_return: float  # net P&L (all fees) / entry cost
    bars_held: int  # entry bar .. exit bar, inclusive
    hold_hours: float
    max_favorable: float  # max high / avg - 1 over the held bars
    max_adverse: float  # min low / avg - 1 over the held bars (<= 0 unless gapped up)
    filled_levels: int
    fees: float = 0.0
    quantity: float = 0.0

    def as_row(self) -> dict[str, object]:
        d = {k: getattr(self, k) for k in _OUTCOME_FIELDS}
        d["exit_reason"] = None if self.exit_reason is None else self.exit_reason.value
        return d


_OUTCOME_FIELDS = tuple(f.name for f in fields(TradeOutcome))


def rule_only_scores(signal: Signal) -> Scores:
    """The plan's own TP/SL/hold: what a label is simulated with when no model scores are given."""
    return Scores(
        confidence=0.5,
        take_profit_pct=signal.plan.take_profit_pct,
        stop_loss_pct=signal.plan.stop_loss_pct,
        hold=signal.plan.max_hold,
    )


def _infer_duration(ts_us: np.ndarray, fallback: timedelta) -> timedelta:
    if ts_us.size < 2:
        return fallback
    diffs = np.diff(ts_us)
    return timedelta(microseconds=int(diffs[diffs > 0].min())) if (diffs > 0).any() else fallback


def _run(
    pos: ManagedPosition,
    ts: Sequence[datetime],
    ts_us: np.ndarray,
    o: Sequence[float],
    h: Sequence[float],
    lo: Sequence[float],
    c: Sequence[float],
    duration: timedelta,
    settings: Settings,
) -> TradeOutcome:
    """Step through the prepared bars (all start at/after pos.created_ts); mark out at the end."""
    # Same rule as detection: a hole longer than the setting ends a stretch.
    max_gap_us = (settings.strategy.max_bridged_gap + duration) / timedelta(microseconds=1)
    holes = np.flatnonzero(np.diff(ts_us) > max_gap_us)
    n = int(holes[0]) + 1 if holes.size else len(ts)  # stop at the first hole: never bridge it
    entry_i = -1
    last = -1
    for i in range(n):
        bar = Bar(ts[i], o[i], h[i], lo[i], c[i], duration)
        step(pos, bar, settings)
        last = i
        if entry_i < 0 and pos.quantity > 0:
            entry_i = i
        if pos.status == "closed":
            break
    if pos.status != "closed" and last >= 0:
        end_of_data(pos, Bar(ts[last], o[last], h[last], lo[last], c[last], duration), settings)
    return _outcome(pos, entry_i, last, h, lo)


def _outcome(pos: ManagedPosition, entry_i: int, last: int, h: Sequence[float], lo: Sequence[float]) -> TradeOutcome:
    filled_levels = sum(1 for lv in pos.entry_levels if lv.filled)
    if pos.quantity == 0 or pos.exit_price is None or pos.entry_ts is None or pos.exit_ts is None:
        return TradeOutcome(False, None, None, None, None, None, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0)
    avg = pos.avg_price
    held_h, held_l = h[entry_i : last + 1], lo[entry_i : last + 1]  # lists or arrays
    return TradeOutcome(
        filled=True,
        entry_ts=pos.entry_ts,
        entry_price=avg,
        exit_ts=pos.exit_ts,
        exit_price=pos.exit_price,
        exit_reason=pos.exit_reason,
        gross_return=pos.exit_price / avg - 1,
        net_return=pos.net_pnl / pos.cost,
        bars_held=last - entry_i + 1,
        hold_hours=(pos.exit_ts - pos.entry_ts) / timedelta(hours=1),
        max_favorable=max(held_h) / avg - 1,
        max_adverse=min(held_l) / avg - 1,
        filled_levels=filled_levels,
        fees=pos.fees,
        quantity=pos.quantity,
    )


def _check_bars(bars: pl.DataFrame) -> None:
    missing = [col for col in SIM_BAR_COLUMNS if col not in bars.columns]
    if missing:
        raise DataQualityError(f"bars lack columns {missing}; simulation needs {list(SIM_BAR_COLUMNS)}")
    nulls = sum(bars.get_column(col).null_count() for col in SIM_BAR_COLUMNS)
    if nulls:
        raise DataQualityError(f"bars have {nulls} null values in {list(SIM_BAR_COLUMNS)}; drop or repair them first")
    o, h, lo, c = (pl.col(k) for k in ("open", "high", "low", "close"))
    bad = bars.filter(
        (pl.min_horizontal(o, h, lo, c) <= 0)
        | (lo > pl.min_horizontal(o, c))
        | (h < pl.max_horizontal(o, c))
        | ~pl.all_horizontal(x.is_finite() for x in (o, h, lo, c))
    )
    if bad.height:
        first = bad.row(0, named=True)
        raise DataQualityError(
            f"{bad.height} bars have inconsistent or non-positive OHLC (first: {first}); repair the candles first"
        )


def simulate_trade(
    signal: Signal,
    scores: Scores | None,
    future_bars: pl.DataFrame,
    settings: Settings,
    notional: float = 1000.0,
) -> TradeOutcome:
    """Simulate one trade on the bars starting at/after the signal bar's close (any finer timeframe)."""
    _check_bars(future_bars)
    bars = future_bars
    if "symbol" in bars.columns:
        bars = bars.filter(pl.col("symbol") == signal.symbol)
    created = signal.ts + timeframe_duration(signal.timeframe)
    bars = bars.filter(pl.col("ts") >= created).sort("ts")
    if bars.get_column("ts").is_duplicated().any():
        raise ValueError(f"{signal.symbol}: duplicate bar timestamps; pass one timeframe, unique on ts")
    pos = open_position(signal, scores or rule_only_scores(signal), notional, settings)
    ts_us = bars.get_column("ts").dt.epoch("us").to_numpy()
    if "timeframe" in bars.columns and bars.height:
        duration = timeframe_duration(str(bars.get_column("timeframe")[0]))
    else:
        duration = _infer_duration(ts_us, timeframe_duration(signal.timeframe))
    o, h, lo, c = (bars.get_column(k).cast(pl.Float64).to_list() for k in ("open", "high", "low", "close"))
    return _run(pos, bars.get_column("ts").to_list(), ts_us, o, h, lo, c, duration, settings)


def simulate_many(
    signal_rows: pl.DataFrame | Sequence[Signal],
    bars: pl.DataFrame,
    settings: Settings,
    scores_for: Callable[[Signal], Scores] | None = None,
    notional: float = 1000.0,
) -> pl.DataFrame:
    """Label every detection event: one TradeOutcome row per signal (signal order kept).

    `signal_rows` is detect_all's frame (or a list of Signals); `bars` holds symbol, ts and OHLC of one
    timeframe. Each symbol's bars are sliced once with searchsorted, and each trade sees only the
    horizon it can use: entry expiry + max hold (+ one bar).
    """
    if isinstance(signal_rows, pl.DataFrame):
        from core.strategies.registry import signals_from_frame  # strategies build the Signal objects

        signals = signals_from_frame(signal_rows)
    else:
        signals = list(signal_rows)
    _check_bars(bars)
    if "symbol" not in bars.columns:
        raise ValueError("bars need a symbol column to label many signals")
    bars = bars.sort("symbol", "ts")
    dupes = bars.select(pl.struct("symbol", "ts").is_duplicated().sum()).item()
    if dupes:
        raise DataQualityError(f"bars hold {dupes} duplicate (symbol, ts) rows; pass one timeframe, unique per bar")
    scorer = scores_for or rule_only_scores
    per_symbol: dict[str, tuple] = {}
    for (sym,), part in bars.partition_by("symbol", as_dict=True, maintain_order=True).items():
        ts_us = part.get_column("ts").dt.epoch("us").to_numpy()
        tf = str(part.get_column("timeframe")[0]) if "timeframe" in part.columns else None
        duration = timeframe_duration(tf) if tf else _infer_duration(ts_us, timedelta(hours=1))
        per_symbol[str(sym)] = (
            part.get_column("ts").to_list(),
            ts_us,
            *(part.get_column(k).cast(pl.Float64).to_list() for k in ("open", "high", "low", "close")),
            duration,
        )
    rows: list[dict[str, object]] = []
    one_us = timedelta(microseconds=1)
    for sig in signals:
        scores = scorer(sig)
        pos = open_position(sig, scores, notional, settings)
        data = per_symbol.get(sig.symbol)
        if data is None:
            out = _outcome(pos, -1, -1, [], [])
        else:
            ts, ts_us, o, h, lo, c, duration = data
            start_us = (pos.created_ts - _EPOCH) // one_us
            expiry = sig.plan.entry_expiry if sig.plan.entry_type is OrderType.LIMIT and sig.plan.entry_expiry else timedelta(0)
            horizon = expiry + pos.hold + duration
            i0 = int(np.searchsorted(ts_us, start_us, "left"))
            i1 = int(np.searchsorted(ts_us, start_us + horizon // one_us, "right"))
            sl = slice(i0, i1)
            out = _run(pos, ts[sl], ts_us[sl], o[sl], h[sl], lo[sl], c[sl], duration, settings)
        rows.append({"signal_id": sig.signal_id, "symbol": sig.symbol, "strategy": sig.strategy.value,
                     "ts": sig.ts, **out.as_row()})
    return pl.DataFrame(rows, schema=OUTCOME_SCHEMA)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "signal_id": pl.Utf8(),
    "symbol": pl.Utf8(),
    "strategy": pl.Utf8(),
    "ts": pl.Datetime("us", "UTC"),
    "filled": pl.Boolean(),
    "entry_ts": pl.Datetime("us", "UTC"),
    "entry_price": pl.Float64(),
    "exit_ts": pl.Datetime("us", "UTC"),
    "exit_price": pl.Float64(),
    "exit_reason": pl.Utf8(),
    "gross_return": pl.Float64(),
    "net_return": pl.Float64(),
    "bars_held": pl.Int64(),
    "hold_hours": pl.Float64(),
    "max_favorable": pl.Float64(),
    "max_adverse": pl.Float64(),
    "filled_levels": pl.Int64(),
    "fees": pl.Float64(),
    "quantity": pl.Float64(),
}
