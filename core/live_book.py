"""Live bookkeeping: the venue's reports (fills, cancels) become ledger events; the ledger's exit
rules become orders at the venue.

In paper mode `Portfolio.on_bar` asks the paper venue to fill orders against the bar. In live mode the
venue (Hummingbot) fills them, so the same ledger is driven differently:

1. `apply_venue_fills`: fills the venue reports for our orders are booked once (keyed by the venue's
   trade id). An entry level is applied (core.positions.apply_entry_fill: average price, fees, the
   stop starting from the first fill) when its fills add up to the order's quantity, at their
   volume-weighted price, with the fees the venue charged. An exit order's complete fills close the
   position (the trade's P&L from the real prices and fees).
2. `apply_bar_live`: one closed bar per position, in time order. Grid levels past their expiry are
   cancelled at the venue; then THE SAME rule function as paper and backtests
   (core.positions.manage_exits) runs on a copy of the position: when it fires (TP/SL/trailing/max
   hold/range break), a market SELL of the held quantity goes to the venue (its intent journalled
   first) and the position waits for that fill; otherwise only the trailing high moves.

Venue fill times and bar times are both UTC; the bars that closed before the first entry fill do
not trigger exits (the position held nothing during them). A level is booked by the quantity the
venue filled (its lot-rounded amount, `filled_complete`): when the order is complete, or when the
venue reports it final with a part filled (a level cancelled at expiry keeps what it bought).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import datetime
from typing import Any

from core.domain import (
    ClosedTrade,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Side,
    timeframe_duration,
)
from core.portfolio import Portfolio
from core.positions import (
    Bar,
    Exited,
    Expired,
    ManagedPosition,
    apply_entry_fill,
    begin_bar,
    manage_exits,
)

_QTY_TOL = 1e-9  # float noise only: the order's quantity is the lot-rounded amount the venue holds
_DONE = (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED)


def filled_complete(order: Order, venue_filled: float) -> bool:
    """The order's fills are all in: the venue filled its whole (lot-rounded) amount, or the order
    is final there with a part filled (a level cancelled at expiry keeps what it bought)."""
    if venue_filled <= 0:
        return False
    return venue_filled >= order.quantity * (1 - _QTY_TOL) or order.status in _DONE


def is_live(pf: Portfolio) -> bool:
    """The book's orders go to a real venue (only the paper venue fills them against bars itself)."""
    return pf.venue.name != "paper"


def exit_order_id(pos: ManagedPosition) -> str:
    return f"{pos.position_id}:x"


def exit_pending(pos: ManagedPosition) -> bool:
    """An exit was decided and sent; the position waits for its fill."""
    return pos.exit_reason is not None and pos.status != "closed"


def apply_venue_fills(pf: Portfolio, fills: list[Fill]) -> list[Any]:
    """Book the venue's complete order fills not booked yet (one ledger event); returns Filled/Exited."""
    by_order: dict[str, list[Fill]] = defaultdict(list)
    for f in fills:
        if f.fill_id not in pf.fills and f.client_order_id in pf.orders:
            by_order[f.client_order_id].append(f)
    levels = {lv.client_order_id: (p, i) for p in pf.positions.values() for i, lv in enumerate(p.entry_levels)}
    exits = {exit_order_id(p): p for p in pf.positions.values()}
    events: list[Any] = []
    touched: dict[str, ManagedPosition] = {}
    orders: list[Order] = []
    booked: list[Fill] = []
    trades: list[ClosedTrade] = []
    for cid, group in by_order.items():
        order = pf.orders[cid]
        qty = sum(f.quantity for f in group)
        if not filled_complete(order, qty):
            fresh = pf.venue.get_order(cid)  # the venue's word: a cancelled order's fills are all in
            if fresh is None or not filled_complete(fresh, qty):
                continue  # partially filled and still working: booked once complete or final
            order = fresh
        price = sum(f.price * f.quantity for f in group) / qty
        fee = sum(f.fee for f in group)
        ts = max(f.ts for f in group)
        if cid in levels:
            pos, i = levels[cid]
            if pos.status == "closed" or pos.entry_levels[i].filled:
                continue  # a fill after the position closed needs a person (reconciliation reports it)
            pos.entry_levels[i].quantity = qty  # the position holds what the venue filled (lot-rounded)
            events.append(apply_entry_fill(pos, i, ts, price, fee))
        elif cid in exits and exit_pending(exits[cid]):
            pos = exits[cid]
            trades.append(_close(pf, pos, ts, price, fee))
            events.append(Exited(pos.exit_reason, ts, price, pos.quantity, fee, "taker"))  # type: ignore[arg-type]
        else:
            continue
        for f in group:
            pf._book_fill(f)  # the ledger's own cash/fee accounting, at the venue's prices and fees
        booked.extend(group)
        touched[pos.position_id] = pos
        orders.append(order.model_copy(update={"status": OrderStatus.FILLED, "filled_quantity": qty}))
    for o in orders:
        pf.orders[o.client_order_id] = o
    if events:
        pf._commit("venue_fills", positions=touched.values(), orders=orders, fills=booked, trades=trades)
    return events


def _close(pf: Portfolio, pos: ManagedPosition, ts: datetime, price: float, fee: float) -> ClosedTrade:
    pos.exit_price, pos.exit_ts, pos.exit_fee = price, ts, fee
    pos.fees += fee
    pos.status = "closed"
    trade = ClosedTrade(
        position_id=pos.position_id,
        symbol=pos.symbol,
        strategy=pos.strategy,
        entry_ts=pos.entry_ts or pos.created_ts,
        exit_ts=ts,
        entry_price=pos.avg_price,
        exit_price=price,
        quantity=pos.quantity,
        gross_pnl=pos.gross_pnl,
        fees=pos.fees,
        net_pnl=pos.net_pnl,
        exit_reason=pos.exit_reason,  # type: ignore[arg-type]
        signal_id=pos.signal_id,
    )
    pf.realised_pnl += trade.net_pnl
    pf.trades[pos.position_id] = trade
    return trade


def apply_bar_live(pf: Portfolio, symbol: str, bar: Bar) -> list[Any]:
    """One closed bar of `symbol` for the live book: expiry cancels, exit decisions -> venue orders."""
    bar.check()
    pf.marks[symbol] = bar.close
    active = [
        p for p in pf.positions.values() if p.symbol == symbol and p.status != "closed" and p.created_ts <= bar.ts
    ]
    fresh = [p for p in active if begin_bar(p, bar)]  # a bar seen before (a rerun) is skipped
    events: list[Any] = []
    orders: list[Order] = []
    for pos in fresh:
        if pos.expiry_ts is not None and bar.ts >= pos.expiry_ts:
            cancelled = _cancel_resting(pf, pos, bar.ts, "expiry")
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
        fired = [e for e in manage_exits(trial, bar, pf.settings, entry_bar=bar.ts <= pos.entry_ts) if isinstance(e, Exited)]
        if not fired:
            pos.highest_price = trial.highest_price
            continue
        ev, rest = fired[0], _cancel_resting(pf, pos, bar_end, "exit")
        events.extend(rest[0])
        orders.extend(rest[1])
        pos.exit_reason = ev.reason
        sell = Order(
            client_order_id=exit_order_id(pos),
            symbol=pos.symbol,
            side=Side.SELL,
            order_type=OrderType.MARKET,
            quantity=pos.quantity,
            price=None,
            strategy=pos.strategy,
            position_id=pos.position_id,
            created_ts=bar_end,
            purpose="exit",
        )
        pf.orders[sell.client_order_id] = sell
        pf._commit("exit_intent", positions=[pos], orders=[sell, *rest[1]])  # the decision survives a crash
        placed = pf.venue.submit(sell)  # the venue journals its own intent before sending
        pf.orders[placed.client_order_id] = placed
        orders.append(placed)
        events.append(ev)
    if events or fresh:
        pf._commit("bar_live", positions=fresh, orders=orders)
    return events


def _cancel_resting(pf: Portfolio, pos: ManagedPosition, ts: datetime, why: str) -> tuple[list[Expired], list[Order]]:
    events: list[Expired] = []
    orders: list[Order] = []
    for i, lv in enumerate(pos.entry_levels):
        if not lv.resting:
            continue
        order = pf.venue.cancel(lv.client_order_id)
        if order.status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            continue  # it filled meanwhile: its fill is booked by apply_venue_fills
        lv.expired = True
        pos.resting_levels -= 1
        pf.orders[order.client_order_id] = order
        orders.append(order)
        events.append(Expired(i, lv.client_order_id, ts, why))  # type: ignore[arg-type]
    return events, orders


__all__ = ["apply_bar_live", "apply_venue_fills", "exit_order_id", "exit_pending", "filled_complete", "is_live"]
