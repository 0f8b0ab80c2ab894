"""Position management, one call: the closed bars since each open position last saw one go through the
account's driver (resting grid levels fill or expire, stops/TP/trailing/max hold/range break exit);
live, the venue's fills are booked before and after. Bars already applied are skipped, so running this
every minute, or again after a crash, applies each bar once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from core.domain import timeframe_duration
from core.positions import Bar, Exited, Filled, ManagedPosition
from core.trading.account import Account
from core.trading.driver import Mode

Reader = Callable[[list[str], str, datetime | None, datetime | None], pl.DataFrame]


@dataclass
class ManageOutcome:
    bars_applied: int = 0
    fills: list[tuple[str, Filled]] = field(default_factory=list)
    exits: list[tuple[str, Exited]] = field(default_factory=list)  # positions closed (filled exits)
    exits_sent: list[tuple[str, Exited]] = field(default_factory=list)  # live: exit orders sent, fill pending
    open_positions: int = 0
    equity: float = 0.0


def closed_bars(read: Reader, positions: list[ManagedPosition], timeframe: str, now: datetime) -> pl.DataFrame:
    """The bars of the positions' symbols that closed by `now`, from the earliest one not yet applied."""
    dur = timeframe_duration(timeframe)
    since = min((p.last_bar_ts + dur) if p.last_bar_ts else p.created_ts for p in positions)
    symbols = sorted({p.symbol for p in positions})
    return read(symbols, timeframe, since, now).filter(pl.col("ts") + dur <= now)


def manage(account: Account, read: Reader, now: datetime, timeframe: str | None = None) -> ManageOutcome:
    """`timeframe` finer than the detection timeframe resolves exits inside a bar (e.g. 5m bars)."""
    s = account.settings
    tf = timeframe or s.data.detection_timeframe
    bar_duration: timedelta | None = None if tf == s.data.detection_timeframe else timeframe_duration(tf)
    live = account.mode is Mode.LIVE
    out = ManageOutcome()
    reported = account.driver.sync(account, resubmit=True)
    active = account.book.open_positions()
    if active:
        bars = closed_bars(read, active, tf, now)
        for sym, o, h, lo, c, ts in bars.select("symbol", "open", "high", "low", "close", "ts").iter_rows():
            out.bars_applied += 1
            for ev in account.on_bar(sym, Bar(ts, o, h, lo, c, bar_duration)):
                if isinstance(ev, Filled):
                    out.fills.append((sym, ev))
                elif isinstance(ev, Exited):
                    (out.exits_sent if live else out.exits).append((sym, ev))
        if out.bars_applied:
            reported += account.driver.sync(account, resubmit=False)
    for ev in reported:  # the venue's fills: an order's symbol; an exit fill names no order here
        if isinstance(ev, Filled):
            order = account.book.orders.get(ev.client_order_id)
            out.fills.append((order.symbol if order is not None else "", ev))
        elif isinstance(ev, Exited):
            out.exits.append(("", ev))
    out.open_positions = len(account.book.open_positions())
    out.equity = account.book.equity()
    return out

