"""The orders of a position. A taken decision becomes its position and entry order intents ONCE (core.positions.open_position
builds the levels): the scan plan shows these orders, the simulated and live drivers place exactly
these, and the backtest opens the same position. The exit order of a position is built here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from core.domain import Decision, Order, OrderPurpose, OrderType, Scores, Side, Signal
from core.positions import ManagedPosition, open_position
from core.settings import Settings


@dataclass
class PlannedEntry:
    decision: Decision | None
    position: ManagedPosition  # handed to the book when opened (the book then owns and mutates it)

    @cached_property
    def orders(self) -> tuple[Order, ...]:
        """The entry intents (status PENDING, our client order ids), built once, when first asked for:
        by the artifact or the account that places them (the in-memory backtest never needs them)."""
        return entry_orders(self.position)

    @property
    def position_id(self) -> str:
        return self.position.position_id


def entry_orders(pos: ManagedPosition) -> tuple[Order, ...]:
    """One BUY per entry level: a DCA grid of limit buys, or one market buy."""
    return tuple(
        Order(
            client_order_id=lv.client_order_id,
            symbol=pos.symbol,
            side=Side.BUY,
            order_type=pos.entry_type,
            quantity=lv.quantity,
            price=lv.price if pos.entry_type is OrderType.LIMIT else None,
            strategy=pos.strategy,
            position_id=pos.position_id,
            created_ts=pos.created_ts,
            expires_ts=pos.expiry_ts,
        )
        for lv in pos.entry_levels
    )


def exit_order_id(pos: ManagedPosition) -> str:
    return f"{pos.position_id}:x"


def exit_order(
    pos: ManagedPosition, order_type: OrderType, quantity: float, price: float | None, created_ts: datetime
) -> Order:
    """The SELL that closes a position (simulated: at the rule's price; live: a market order)."""
    return Order(
        client_order_id=exit_order_id(pos),
        symbol=pos.symbol,
        side=Side.SELL,
        order_type=order_type,
        quantity=quantity,
        price=price,
        strategy=pos.strategy,
        position_id=pos.position_id,
        created_ts=created_ts,
        purpose=OrderPurpose.EXIT,
    )


def plan_entry(
    signal: Signal, scores: Scores, notional: float, settings: Settings, decision: Decision | None = None
) -> PlannedEntry:
    """The position (id `pos:<signal id>`, so a signal never opens twice) and its entry orders."""
    pos = open_position(signal, scores, notional, settings, position_id=f"pos:{signal.signal_id}")
    return PlannedEntry(decision, pos)


def order_rows(entries: list[PlannedEntry]) -> list[dict[str, object]]:
    """The planned orders as plain rows (the scan artifact's table)."""
    return [
        {
            "client_order_id": o.client_order_id, "symbol": o.symbol, "strategy": o.strategy.value,
            "type": o.order_type.value, "price": round(e.position.entry_levels[i].price, 8), "quantity": o.quantity,
            "notional": round(e.position.entry_levels[i].price * o.quantity, 2),
            "expires": o.expires_ts.isoformat() if o.expires_ts else None,
        }
        for e in entries
        for i, o in enumerate(e.orders)
    ]
