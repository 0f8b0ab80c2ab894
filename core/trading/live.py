"""The live driver: the venue's reports (fills, cancels) become book events; the book's exit rules
become orders at the venue. (Moved from core/live_book.py.)

In paper mode the simulated driver asks the paper venue to fill orders against the bar. In live mode
the venue (Hummingbot) fills them, so the same book is driven differently:

1. `apply_venue_fills`: fills the venue reports for our orders are booked once (keyed by the venue's
   trade id; the booked ids are in the journal, so a restart books only what is new). An entry
   level's fills are booked as they come, part by part (core.positions.apply_partial_entry_fill:
   quantity, re-averaged price, the venue's fees, the stop starting from the first part); the level
   rests for the remainder, and is marked filled with what the venue filled once its order is complete
   or final there (core.positions.complete_entry_level). An exit order's complete fills close the
   position (the trade's P&L from the real prices and fees).
2. `apply_bar_live`: one closed bar per position, in time order. Grid levels past their expiry are
   cancelled at the venue; then THE SAME rule function as paper and backtests
   (core.positions.manage_exits) runs on a copy of the position: when it fires (TP/SL/trailing/max
   hold/range break), the resting levels (and the remainders of partly filled ones) are cancelled, a
   market SELL of exactly the booked quantity goes to the venue (its intent journalled first) and the
   position waits for that fill; otherwise only the trailing high moves.

Venue fill times and bar times are both UTC; the bars that closed before the first entry fill do
not trigger exits (the position held nothing during them). Quantities are the venue's lot-rounded
amounts; a level cancelled at expiry keeps what it bought. A cancel answered while the venue reports
more filled than is booked leaves the level to `apply_venue_fills`, which books those fills first.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.domain import (
    ClosedTrade,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    timeframe_duration,
)
from core.positions import (
    Bar,
    Exited,
    Expired,
    ManagedPosition,
    apply_partial_entry_fill,
    begin_bar,
    complete_entry_level,
    manage_exits,
)
from core.trading.driver import Mode
from core.trading.entries import exit_order, exit_order_id
from core.venues.base import Venue

if TYPE_CHECKING:
    from core.trading.account import Account

_QTY_TOL = 1e-9  # float noise only: the order's quantity is the lot-rounded amount the venue holds
_DONE = (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED)


def filled_complete(order: Order, venue_filled: float) -> bool:
    """The order's fills are all in: the venue filled its whole (lot-rounded) amount, or the order
    is final there with a part filled (a level cancelled at expiry keeps what it bought)."""
    if venue_filled <= 0:
        return False
    return venue_filled >= order.quantity * (1 - _QTY_TOL) or order.status in _DONE


def _all_booked(order: Order, booked: float) -> bool:
    """`booked` is every fill of the order: complete or final, and the venue reports no more filled."""
    return filled_complete(order, booked) and order.filled_quantity <= booked * (1 + _QTY_TOL)


class LiveDriver:
    mode = Mode.LIVE

    def __init__(self, venue: Venue) -> None:
        self._venue = venue

    @property
    def venue(self) -> Venue:
        return self._venue

    def restore(self, account: Account) -> None:
        """A live venue keeps its own state and order journal (core.reconcile compares them)."""

    def sync(self, account: Account, *, resubmit: bool) -> list[Any]:
        """Resend unacknowledged intents (when asked), then book the venue's fills."""
        if resubmit:
            account.resubmit_pending()
        return apply_venue_fills(account, self._venue.fills_since())

    def on_bar(self, account: Account, symbol: str, bar: Bar) -> list[Any]:
        return apply_bar_live(account, symbol, bar)


def exit_pending(pos: ManagedPosition) -> bool:
    """An exit was decided and sent; the position waits for its fill."""
    return pos.exit_reason is not None and pos.status != "closed"


def apply_venue_fills(account: Account, fills: list[Fill]) -> list[Any]:
    """Book the venue's fills not booked yet (one event); returns Filled/Exited.

    An entry level's new fills are booked at once (part by part), an exit order's once complete."""
    book = account.book
    by_order: dict[str, list[Fill]] = defaultdict(list)
    for f in fills:
        if f.fill_id not in book.fills and f.client_order_id in book.orders:
            by_order[f.client_order_id].append(f)
    levels = {lv.client_order_id: (p, i) for p in book.positions.values() for i, lv in enumerate(p.entry_levels)}
    exits = {exit_order_id(p): p for p in book.positions.values()}
    events: list[Any] = []
    touched: dict[str, ManagedPosition] = {}
    orders: list[Order] = []
    booked: list[Fill] = []
    trades: list[ClosedTrade] = []
    for cid, group in by_order.items():
        order = book.orders[cid]
        qty = sum(f.quantity for f in group)
        price = sum(f.price * f.quantity for f in group) / qty
        fee = sum(f.fee for f in group)
        ts = max(f.ts for f in group)
        if cid in levels:
            pos, i = levels[cid]
            lv = pos.entry_levels[i]
            if pos.status == "closed" or lv.filled:
                continue  # a fill after the level or position closed needs a person (reconciliation reports it)
            events.append(apply_partial_entry_fill(pos, i, ts, price, qty, fee))
            order, complete = _level_order(account, order, lv.booked_quantity)
            if complete:
                complete_entry_level(pos, i)  # the position holds what the venue filled (lot-rounded)
        elif cid in exits and exit_pending(exits[cid]):
            if not filled_complete(order, qty):
                fresh = account.venue.get_order(cid)  # the venue's word: a cancelled order's fills are all in
                if fresh is None or not filled_complete(fresh, qty):
                    continue  # the exit is still filling: the trade closes on its complete fills
            pos = exits[cid]
            trades.append(_close(account, pos, ts, price, fee))
            events.append(Exited(pos.exit_reason, ts, price, pos.quantity, fee, Liquidity.TAKER))  # type: ignore[arg-type]
            order = order.model_copy(update={"status": OrderStatus.FILLED, "filled_quantity": qty})
        else:
            continue
        for f in group:
            book.book_fill(f)  # the book's own cash/fee accounting, at the venue's prices and fees
        booked.extend(group)
        touched[pos.position_id] = pos
        book.orders[cid] = order
        orders.append(order)
    if events:
        account.commit("venue_fills", positions=touched.values(), orders=orders, fills=booked, trades=trades)
    return events


def _level_order(account: Account, order: Order, booked: float) -> tuple[Order, bool]:
    """The entry order once `booked` of it is booked, and whether its fills are all in: the venue
    filled its whole (lot-rounded) amount, or it is final there with a part filled (asked of the venue
    when our copy still says working). A complete level's order is FILLED with what it bought."""
    complete = _all_booked(order, booked)
    if not complete:
        fresh = account.venue.get_order(order.client_order_id)
        complete = fresh is not None and _all_booked(fresh, booked)
    status = OrderStatus.FILLED if complete else OrderStatus.PARTIALLY_FILLED
    return order.model_copy(update={"status": status, "filled_quantity": booked}), complete


def _close(account: Account, pos: ManagedPosition, ts: datetime, price: float, fee: float) -> ClosedTrade:
    pos.exit_price, pos.exit_ts, pos.exit_fee = price, ts, fee
    pos.fees += fee
    pos.status = "closed"
    return account.book.close_trade(pos, ts, price, pos.exit_reason)  # type: ignore[arg-type]


def apply_bar_live(account: Account, symbol: str, bar: Bar) -> list[Any]:
    """One closed bar of `symbol` for the live book: expiry cancels, exit decisions -> venue orders."""
    bar.check()
    book = account.book
    book.marks[symbol] = bar.close
    active = [
        p for p in book.positions.values() if p.symbol == symbol and p.status != "closed" and p.created_ts <= bar.ts
    ]
    fresh = [p for p in active if begin_bar(p, bar)]  # a bar seen before (a rerun) is skipped
    events: list[Any] = []
    orders: list[Order] = []
    for pos in fresh:
        if pos.expiry_ts is not None and bar.ts >= pos.expiry_ts:
            cancelled = _cancel_resting(account, pos, bar.ts, "expiry")
            events.extend(cancelled[0])
            orders.extend(cancelled[1])
        if pos.quantity == 0:
            if not pos.resting_levels and not exit_pending(pos):
                pos.status = "closed"  # every level expired unfilled
            continue
        bar_end = bar.ts + (bar.duration or timeframe_duration(pos.timeframe))
        if exit_pending(pos) or pos.entry_ts is None or bar_end <= pos.entry_ts:
            continue  # waiting for the exit's fill, or nothing was held during this bar
        trial = copy.deepcopy(pos)  # the rules mutate; the real exit happens when the venue fills
        fired = [
            e for e in manage_exits(trial, bar, account.settings, entry_bar=bar.ts <= pos.entry_ts) if isinstance(e, Exited)
        ]
        if not fired:
            pos.highest_price = trial.highest_price
            continue
        ev, rest = fired[0], _cancel_resting(account, pos, bar_end, "exit")
        events.extend(rest[0])
        orders.extend(rest[1])
        pos.exit_reason = ev.reason
        sell = exit_order(pos, OrderType.MARKET, pos.quantity, None, bar_end)
        book.orders[sell.client_order_id] = sell
        account.commit("exit_intent", positions=[pos], orders=[sell, *rest[1]])  # the decision survives a crash
        placed = account.venue.submit(sell)  # the venue journals its own intent before sending
        book.orders[placed.client_order_id] = placed
        orders.append(placed)
        events.append(ev)
    if events or fresh:
        account.commit("bar_live", positions=fresh, orders=orders)
    return events


def _cancel_resting(account: Account, pos: ManagedPosition, ts: datetime, why: str) -> tuple[list[Expired], list[Order]]:
    events: list[Expired] = []
    orders: list[Order] = []
    for i, lv in enumerate(pos.entry_levels):
        if not lv.resting:
            continue
        order = account.venue.cancel(lv.client_order_id)
        if order.status is OrderStatus.FILLED or order.filled_quantity > lv.booked_quantity * (1 + _QTY_TOL):
            continue  # it filled (more) meanwhile: apply_venue_fills books those fills and settles the level
        lv.expired = True
        pos.resting_levels -= 1
        account.book.orders[order.client_order_id] = order
        orders.append(order)
        events.append(Expired(i, lv.client_order_id, ts, why))  # type: ignore[arg-type]
    return events, orders
