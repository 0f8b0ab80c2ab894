"""Drive a paper account over recorded bars with GIVEN entries (no scan): open each entry when its signal
bar closes, then apply every bar. A harness for the book and its restart-safety (the kill -9 test, the
ledger benchmark); trading sessions go through core.backtest. Restart-safe: rerunning it on a reloaded
account replays nothing
twice (opening is idempotent per signal, bars already applied to a position are skipped)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from core.domain import Scores, Signal, timeframe_duration
from core.positions import Bar
from core.trading.account import Account
from core.trading.entries import plan_entry


@dataclass(frozen=True)
class Entry:
    signal: Signal
    scores: Scores
    notional: float


def run_session(
    account: Account,
    bars: pl.DataFrame,
    entries: Sequence[Entry],
    on_step: Callable[[datetime], None] | None = None,
) -> Account:
    """`bars`: symbol, timeframe, ts, OHLC of one timeframe. One position per symbol: an entry whose
    symbol is still held (or has resting orders) when its signal bar closes is skipped."""
    tf = str(bars.get_column("timeframe")[0])
    dur = timeframe_duration(tf)
    by_close: dict[datetime, list[Entry]] = {}
    for e in entries:
        by_close.setdefault(e.signal.ts + timeframe_duration(e.signal.timeframe), []).append(e)
    for (ts,), group in bars.sort("ts", "symbol").partition_by("ts", as_dict=True, maintain_order=True).items():
        for e in by_close.get(ts, []):
            # "Held when the signal bar closed", judged from what each position did up to ts (not from its
            # state now), so a replay after a restart takes exactly the decisions of the first run.
            held = any(
                p.symbol == e.signal.symbol
                and p.created_ts <= ts
                and (p.status != "closed" or (p.last_bar_ts is not None and p.last_bar_ts >= ts))
                for p in account.book.positions.values()
            )
            opened = f"pos:{e.signal.signal_id}" in account.book.positions
            if opened or not held:
                account.open(plan_entry(e.signal, e.scores, e.notional, account.settings))
        for r in group.iter_rows(named=True):
            account.on_bar(r["symbol"], Bar(r["ts"], r["open"], r["high"], r["low"], r["close"], dur))
        if on_step is not None:
            on_step(ts)
    return account
