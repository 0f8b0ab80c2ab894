"""A taken decision turned into its position and entry order intents, ONCE (core.positions.open_position
builds the levels): the scan plan shows these orders, the simulated and live drivers place exactly
these, and the backtest opens the same position.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import Decision, Order, OrderType, Scores, Side, Signal
from core.positions import ManagedPosition, open_position
from core.settings import Settings


@dataclass(frozen=True)
class PlannedEntry:
    decision: Decision | None
    position: ManagedPosition  # handed to the book when opened (the book then owns and mutates it)
    orders: tuple[Order, ...]  # the entry intents, status PENDING, with our client order ids

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


def plan_entry(
    signal: Signal, scores: Scores, notional: float, settings: Settings, decision: Decision | None = None
) -> PlannedEntry:
    """The position (id `pos:<signal id>`, so a signal never opens twice) and its entry orders."""
    pos = open_position(signal, scores, notional, settings, position_id=f"pos:{signal.signal_id}")
    return PlannedEntry(decision, pos, entry_orders(pos))


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
