"""Where the engine's taken entries are executed. Both backends run the one copy of the position rules
(core.positions); they differ in bookkeeping:

- FastExecution: an in-memory cash book folded from the position events (core.positions.step). For
  research backtests over years of bars: nothing is written until the report.
- LedgerExecution: the paper-trading path itself: a core.trading.account.Account with the simulated
  driver and its PaperVenue (orders placed at the venue, filled there by the shared fill function,
  every event journalled in the store). For paper sessions; slower because each event is a store write.

A test runs both on the same window and asserts identical trades, fees and cash.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

import polars as pl

from core.domain import ClosedTrade, ExitReason, Fill, Order
from core.manager import Verdict
from core.positions import Bar, Exited, Expired, Filled, ManagedPosition, end_of_data, step
from core.settings import Settings
from core.trading.account import Account
from core.trading.entries import PlannedEntry
from core.trading.simulated import SimulatedDriver

TS_US = pl.Datetime("us", "UTC")
FILL_SCHEMA: dict[str, pl.DataType] = {
    "position_id": pl.Utf8(), "client_order_id": pl.Utf8(), "side": pl.Utf8(), "ts": TS_US,
    "price": pl.Float64(), "quantity": pl.Float64(), "fee": pl.Float64(), "liquidity": pl.Utf8(),
}


class Execution(Protocol):
    closes_at_end: bool  # True: positions still open when a symbol's data ends are marked out

    @property
    def cash(self) -> float: ...

    @property
    def decided(self) -> Collection[str]:
        """Signal ids decided before (the scan never decides a signal twice)."""

    def open(self, entry: PlannedEntry) -> ManagedPosition | None: ...

    def record_skipped(self, verdicts: list[Verdict]) -> None: ...

    def apply_bar(self, pos: ManagedPosition, bar: Bar) -> None: ...

    def end_of_data(self, pos: ManagedPosition, last_bar: Bar) -> None: ...

    def data_hole(self, pos: ManagedPosition, last_bar: Bar) -> None:
        """The symbol's next bar is further away than strategy.max_bridged_gap: out at the last close
        before the hole (a taker market exit, reason DATA_HOLE), resting entries cancelled."""

    def fills(self) -> pl.DataFrame: ...


class FastExecution:
    closes_at_end = True

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cash = settings.risk.capital
        self._fills: list[tuple[Any, ...]] = []

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def decided(self) -> Collection[str]:
        return ()  # each signal bar is visited once

    def open(self, entry: PlannedEntry) -> ManagedPosition:
        return entry.position

    def record_skipped(self, verdicts: list[Verdict]) -> None:
        """Decisions are kept by the engine and written with the report."""

    def apply_bar(self, pos: ManagedPosition, bar: Bar) -> None:
        self._book(pos, step(pos, bar, self._settings))

    def end_of_data(self, pos: ManagedPosition, last_bar: Bar) -> None:
        self._book(pos, end_of_data(pos, last_bar, self._settings))

    def data_hole(self, pos: ManagedPosition, last_bar: Bar) -> None:
        self._book(pos, end_of_data(pos, last_bar, self._settings, ExitReason.DATA_HOLE))

    def _book(self, pos: ManagedPosition, events: list[Any]) -> None:
        # Entry fill: pay price x qty + fee; exit: receive price x qty - fee. Each event once.
        for ev in events:
            if isinstance(ev, Filled):
                self._cash -= ev.price * ev.quantity + ev.fee
                self._fills.append(
                    (pos.position_id, ev.client_order_id, "buy", ev.ts, ev.price, ev.quantity, ev.fee, ev.liquidity)
                )
            elif isinstance(ev, Exited):
                self._cash += ev.price * ev.quantity - ev.fee
                self._fills.append(
                    (pos.position_id, f"{pos.position_id}:x", "sell", ev.ts, ev.price, ev.quantity, ev.fee, ev.liquidity)
                )

    def fills(self) -> pl.DataFrame:
        return pl.DataFrame(self._fills, schema=FILL_SCHEMA, orient="row")


class LedgerExecution:
    """The paper-trading ledger and venue. Positions open when a symbol's data ends stay open (a paper
    account does not sell because a replay window ended); equity marks them at the last close."""

    closes_at_end = False

    def __init__(self, account: Account) -> None:
        self.account = account

    @property
    def cash(self) -> float:
        return float(self.account.book.cash)

    @property
    def decided(self) -> Collection[str]:
        return self.account.book.decisions

    def open(self, entry: PlannedEntry) -> ManagedPosition | None:
        return self.account.open(entry)  # None: the venue would refuse it (below its minimums)

    def record_skipped(self, verdicts: list[Verdict]) -> None:
        self.account.record_decisions([v.decision() for v in verdicts])

    def apply_bar(self, pos: ManagedPosition, bar: Bar) -> None:
        self.account.on_bar(pos.symbol, bar)

    def end_of_data(self, pos: ManagedPosition, last_bar: Bar) -> None:
        """Left open on purpose (see the class docstring)."""

    def data_hole(self, pos: ManagedPosition, last_bar: Bar) -> None:
        """Unlike the end of the data, a hole is closed in the ledger too (else the position would bridge it
        when the bars resume): the resting entries cancelled at the venue, the exit executed there by the
        simulated driver's exit path, one journal event."""
        driver = self.account.driver
        if not isinstance(driver, SimulatedDriver):
            raise TypeError(f"a data-hole exit needs the paper venue's simulated driver, not {type(driver).__name__}")
        orders: list[Order] = []
        fills: list[Fill] = []
        trades: list[ClosedTrade] = []
        for ev in end_of_data(pos, last_bar, self.account.settings, ExitReason.DATA_HOLE):
            if isinstance(ev, Expired):
                orders.append(driver.venue.cancel(ev.client_order_id))
            elif isinstance(ev, Exited):
                fill, order, trade = driver._exit(self.account, pos, ev, last_bar)  # the one exit booking
                fills.append(fill)
                orders.append(order)
                trades.append(trade)
        for o in orders:
            self.account.book.orders[o.client_order_id] = o
        self.account.commit("data_hole", positions=[pos], orders=orders, fills=fills, trades=trades)

    def fills(self) -> pl.DataFrame:
        rows = []
        for f in self.account.book.fills.values():
            order = self.account.book.orders.get(f.client_order_id)
            pid = order.position_id if order is not None else ""
            rows.append((pid, f.client_order_id, f.side.value, f.ts, f.price, f.quantity, f.fee, f.liquidity))
        return pl.DataFrame(rows, schema=FILL_SCHEMA, orient="row").sort("ts", "client_order_id")


