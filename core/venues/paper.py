"""The paper venue: fills orders against market bars with the SAME rules as core.positions.

Orders are kept by client_order_id; submitting the same id twice returns the first order (idempotent).
`on_bar(symbol, bar)` fills the symbol's resting orders placed before the bar started: a limit buy when
the bar's low reaches it (at min(limit, open)), a market order at the bar's open plus slippage, via
core.positions.fill_price. Orders whose expires_ts is at or before the bar's start expire first (the
position rules' expiry). Maker 0.25% / taker 0.40% from settings.execution, charged once per fill; one
fill per order (no partial fills), with the deterministic id ``<client_order_id>:f1``.

Exits that the position rules trigger inside a bar (a stop, a take-profit) are executed with
`execute(client_order_id, ts, price, liquidity)`: the price the rules computed on that bar.

Venue rules: for a symbol listed in execution.paper_trading_rules, an order is quantized exactly as the
live venue quantizes it (core.venues.trading_rules: amount down to the lot, a buy limit down and a
sell limit up to the tick) and one below the minimum size or notional raises BelowMinimumError, so
paper and live decide alike. hummingbot-api has no Kraken paper mode: paper trading is this venue.
"""

from __future__ import annotations

from datetime import datetime

from core.domain import Fill, Order, OrderStatus, OrderType, Side
from core.errors import VenueError
from core.positions import Bar, Liquidity, entry_liquidity, fill_fee, fill_price
from core.settings import Settings
from core.storage.base import CandleStore
from core.venues.trading_rules import (
    BelowMinimum,
    BelowMinimumError,
    TradingRule,
    quantize_order,
    rules_from_mapping,
)

FINAL = {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}


class PaperVenue:
    name = "paper"

    def __init__(
        self, settings: Settings, store: CandleStore | None = None, *, cash: float | None = None, quote: str = "USDT"
    ) -> None:
        # `store` is accepted for the factory's uniform signature: the paper venue's durable state is the
        # ledger's (core.portfolio.Portfolio.load restores it with `restore`), so it writes nothing itself.
        self._store = store
        self._settings = settings
        self._quote = quote
        self._orders: dict[str, Order] = {}
        self._fills: dict[str, Fill] = {}
        self._balances: dict[str, float] = {quote: settings.risk.capital if cash is None else cash}
        self._rules: dict[str, TradingRule] = rules_from_mapping(
            {sym: r.model_dump() for sym, r in settings.execution.paper_trading_rules.items()}
        )

    def prepare(self, order: Order) -> Order | BelowMinimum:
        """The order as this venue would place it (quantized by the symbol's rules, if configured)."""
        rule = self._rules.get(order.symbol.upper())
        return order if rule is None else quantize_order(order, rule, reference_price=order.price)

    # --- the Venue contract ---------------------------------------------------------------------------

    def submit(self, order: Order) -> Order:
        known = self._orders.get(order.client_order_id)
        if known is not None:
            return known  # idempotent: the same id never makes a second order
        if order.order_type is OrderType.LIMIT and (order.price is None or order.price <= 0):
            raise VenueError(f"{order.client_order_id}: a limit order needs a price > 0, got {order.price}")
        prepared = self.prepare(order)
        if isinstance(prepared, BelowMinimum):
            raise BelowMinimumError(prepared)
        order = prepared
        placed = order.model_copy(update={"status": OrderStatus.OPEN, "venue_order_id": f"paper-{order.client_order_id}"})
        self._orders[order.client_order_id] = placed
        return placed

    def cancel(self, client_order_id: str) -> Order:
        order = self._require(client_order_id)
        if order.status in FINAL:
            return order
        return self._set(order, status=OrderStatus.CANCELLED)

    def open_orders(self) -> list[Order]:
        return [o for o in self._orders.values() if o.status not in FINAL]

    def get_order(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def fills_since(self, client_order_id: str | None = None) -> list[Fill]:
        return [f for f in self._fills.values() if client_order_id is None or f.client_order_id == client_order_id]

    def balances(self) -> dict[str, float]:
        return dict(self._balances)

    # --- paper-only ---------------------------------------------------------------------------------------

    def on_bar(
        self, symbol: str, bar: Bar, only: set[str] | None = None
    ) -> tuple[list[Fill], list[Order]]:
        """Fill/expire the symbol's resting orders placed before this bar (restricted to the client order
        ids in `only` when given). Returns (new fills, expired orders)."""
        bar.check()
        fills: list[Fill] = []
        expired: list[Order] = []
        slippage = self._settings.execution.slippage
        due = [o for o in self.open_orders() if o.symbol == symbol and o.created_ts <= bar.ts]
        for order in [o for o in due if only is None or o.client_order_id in only]:
            if order.expires_ts is not None and bar.ts >= order.expires_ts:
                expired.append(self._set(order, status=OrderStatus.EXPIRED))
                continue
            price = fill_price(order.side, order.order_type, order.price, bar, slippage)
            if price is not None:
                fills.append(self._fill(order, bar.ts, price, entry_liquidity(order.order_type)))
        return fills, expired

    def execute(self, client_order_id: str, ts: datetime, price: float, liquidity: Liquidity) -> Fill:
        """Fill an open order now at `price` (an exit the position rules triggered on this bar)."""
        order = self._require(client_order_id)
        if order.status is OrderStatus.FILLED:
            return self._fills[f"{client_order_id}:f1"]  # already executed: the same fill, not a second one
        if order.status in FINAL:
            raise VenueError(f"{client_order_id} is {order.status.value}; it cannot be executed")
        return self._fill(order, ts, price, liquidity)

    def restore(self, orders: list[Order], fills: list[Fill], balances: dict[str, float]) -> None:
        """Rebuild the venue after a restart from the ledger (the paper venue keeps no state of its own)."""
        self._orders = {o.client_order_id: o for o in orders}
        self._fills = {f.fill_id: f for f in fills}
        self._balances = dict(balances)

    # --- internals ---------------------------------------------------------------------------------------

    def _require(self, client_order_id: str) -> Order:
        order = self._orders.get(client_order_id)
        if order is None:
            raise VenueError(f"unknown order {client_order_id!r} at the paper venue")
        return order

    def _set(self, order: Order, **update: object) -> Order:
        new = order.model_copy(update=update)
        self._orders[order.client_order_id] = new
        return new

    def _fill(self, order: Order, ts: datetime, price: float, liquidity: Liquidity) -> Fill:
        fee = fill_fee(price, order.quantity, liquidity, self._settings)
        fill = Fill(
            fill_id=f"{order.client_order_id}:f1",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            ts=ts,
            price=price,
            quantity=order.quantity,
            fee=fee,
            liquidity=liquidity,
        )
        self._fills[fill.fill_id] = fill
        self._set(order, status=OrderStatus.FILLED, filled_quantity=order.quantity)
        sign = 1.0 if order.side is Side.BUY else -1.0
        self._balances[self._quote] = self._balances.get(self._quote, 0.0) - sign * price * order.quantity - fee
        self._balances[order.symbol] = self._balances.get(order.symbol, 0.0) + sign * order.quantity
        return fill
