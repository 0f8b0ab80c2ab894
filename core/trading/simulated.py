"""The simulated driver: the paper venue fills the book's orders against each bar.

On a bar: the venue fills/expires the resting entry orders placed before it (core.positions.fill_price,
the same rule as backtests), then the position rules (core.positions.manage_exits) decide exits, which
the venue executes at the rule's price. One journal event per bar on which something happened; a quiet
bar is not written (it only moved the trailing high and the last bar seen, and replaying it after a
restart recomputes exactly that: the rules are deterministic). A bar already applied to a position
(ts <= its last bar) is skipped, so replaying bars after a restart changes nothing; fills are keyed by
deterministic fill ids and applied once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.domain import (
    ClosedTrade,
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
)
from core.errors import VenueError
from core.positions import (
    Bar,
    Exited,
    Expired,
    ManagedPosition,
    apply_entry_fill,
    begin_bar,
    manage_exits,
)
from core.settings import Settings
from core.trading.driver import Mode
from core.trading.entries import exit_order
from core.venues.base import SimulatedVenue

if TYPE_CHECKING:
    from core.trading.account import Account


class SimulatedDriver:
    mode = Mode.PAPER

    def __init__(self, venue: SimulatedVenue, settings: Settings) -> None:
        self._venue = venue
        self._settings = settings

    @property
    def venue(self) -> SimulatedVenue:
        return self._venue

    def restore(self, account: Account) -> None:
        """The paper venue holds exactly what the book says (intents never acknowledged are resent by
        the account: submit is idempotent by client_order_id)."""
        book = account.book
        known = [o for o in book.orders.values() if o.status is not OrderStatus.PENDING]
        self._venue.restore(known, list(book.fills.values()), book.balances())

    def sync(self, account: Account, *, resubmit: bool) -> list[Any]:
        return []  # the paper venue reports nothing between bars: it fills on them

    def on_bar(self, account: Account, symbol: str, bar: Bar) -> list[Any]:
        """Venue fills/expiries, then the position rules' exits. One event."""
        bar.check()  # a broken candle is refused before anything is booked
        book = account.book
        book.marks[symbol] = bar.close
        active = [
            p for p in book.positions.values() if p.symbol == symbol and p.status != "closed" and p.created_ts <= bar.ts
        ]
        fresh = [p for p in active if begin_bar(p, bar)]  # a replayed bar (after a restart) is skipped
        if not fresh:
            return []
        was_flat = {p.position_id: p.quantity == 0 for p in fresh}
        by_order = {lv.client_order_id: (p, i) for p in fresh for i, lv in enumerate(p.entry_levels)}
        fills, expired = self._venue.on_bar(symbol, bar, only=set(by_order))
        events: list[Any] = []
        touched_orders: list[Order] = []
        new_fills: list[Fill] = []
        new_trades: list[ClosedTrade] = []
        for order in expired:
            pos, i = by_order[order.client_order_id]
            lv = pos.entry_levels[i]
            if lv.resting:
                lv.expired = True
                pos.resting_levels -= 1
            touched_orders.append(order)
            events.append(Expired(i, order.client_order_id, bar.ts, "expiry"))
        for fill in fills:
            if fill.fill_id in book.fills:
                continue  # each fill (and its fee) is applied once
            pos, i = by_order[fill.client_order_id]
            events.append(apply_entry_fill(pos, i, fill.ts, fill.price, fill.fee))
            book.book_fill(fill)
            new_fills.append(fill)
            touched_orders.append(self._venue_order(fill.client_order_id))
        for pos in fresh:
            if pos.quantity == 0:
                if not pos.resting_levels:
                    pos.status = "closed"  # every level expired unfilled
                continue
            for ev in manage_exits(pos, bar, self._settings, entry_bar=was_flat[pos.position_id]):
                events.append(ev)
                if isinstance(ev, Expired):  # resting levels cancelled by the exit
                    touched_orders.append(self._venue.cancel(ev.client_order_id))
                elif isinstance(ev, Exited):
                    fill, order, trade = self._exit(account, pos, ev, bar)
                    new_fills.append(fill)
                    touched_orders.append(order)
                    new_trades.append(trade)
        for o in touched_orders:
            book.orders[o.client_order_id] = o
        if events:  # a quiet bar is not written: after a restart it is replayed, deterministically
            account.commit("bar", positions=fresh, orders=touched_orders, fills=new_fills, trades=new_trades)
        return events

    def _exit(self, account: Account, pos: ManagedPosition, ev: Exited, bar: Bar) -> tuple[Fill, Order, ClosedTrade]:
        order_type = OrderType.LIMIT if ev.liquidity == Liquidity.MAKER else OrderType.MARKET
        order = exit_order(pos, order_type, ev.quantity, ev.price, bar.ts)
        self._venue.submit(order)
        fill = self._venue.execute(order.client_order_id, ev.ts, ev.price, ev.liquidity)
        account.book.book_fill(fill)
        trade = account.book.close_trade(pos, ev.ts, ev.price, ev.reason)
        return fill, self._venue_order(order.client_order_id), trade

    def _venue_order(self, client_order_id: str) -> Order:
        order = self._venue.get_order(client_order_id)
        if order is None:
            raise VenueError(f"the venue lost order {client_order_id} it just filled; reconcile before trading on")
        return order
