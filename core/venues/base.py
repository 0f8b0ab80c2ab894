"""The venue contracts. `Venue`: what every venue does (the paper venue and the Hummingbot venue), all
the live driver (core.trading.live) uses. `SimulatedVenue`: a venue that fills orders against bars
itself (the paper venue), all the simulated driver (core.trading.simulated) uses.

A venue never decides anything; it places what the manager sized, and reports back. Submitting twice
with the same client_order_id must not create a second order (idempotent submit).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from core.domain import Fill, Liquidity, Order
from core.positions import Bar

if TYPE_CHECKING:
    from core.venues.order_journal import OrderJournal
    from core.venues.trading_rules import BelowMinimum


@runtime_checkable
class Venue(Protocol):
    name: str

    def prepare(self, order: Order) -> Order | BelowMinimum:
        """The order exactly as this venue would place it (amount and price on its grid), or why the
        venue would refuse it (below its minimum amount or notional): a skipped decision, not an error."""

    def submit(self, order: Order) -> Order:
        """Place the order (idempotent by client_order_id); returns it with venue status/ids."""

    def cancel(self, client_order_id: str) -> Order:
        """Cancel a resting order; cancelling an already-final order returns it unchanged."""

    def open_orders(self) -> list[Order]: ...

    def get_order(self, client_order_id: str) -> Order | None: ...

    def fills_since(self, client_order_id: str | None = None) -> list[Fill]: ...

    def balances(self) -> dict[str, float]: ...


@runtime_checkable
class SimulatedVenue(Venue, Protocol):
    def on_bar(self, symbol: str, bar: Bar, only: set[str] | None = None) -> tuple[list[Fill], list[Order]]:
        """Fill/expire the symbol's resting orders on this bar; returns (new fills, expired orders)."""

    def execute(self, client_order_id: str, ts: datetime, price: float, liquidity: Liquidity) -> Fill:
        """Fill an open order now at `price` (an exit the position rules triggered on a bar)."""

    def restore(self, orders: list[Order], fills: list[Fill], balances: dict[str, float]) -> None:
        """Rebuild the venue's state from the book after a restart."""


@runtime_checkable
class JournalledVenue(Venue, Protocol):
    """A live venue that journals its own order intents and fills (reconciliation reads the journal)."""

    journal: OrderJournal
