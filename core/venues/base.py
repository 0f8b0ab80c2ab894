"""The venue contract: the paper venue and the Hummingbot venue both implement it.

A venue never decides anything; it places what the manager sized, and reports back. Submitting twice
with the same client_order_id must not create a second order (idempotent submit).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from core.domain import Fill, Order


@runtime_checkable
class Venue(Protocol):
    name: str

    def submit(self, order: Order) -> Order:
        """Place the order (idempotent by client_order_id); returns it with venue status/ids."""

    def cancel(self, client_order_id: str) -> Order:
        """Cancel a resting order; cancelling an already-final order returns it unchanged."""

    def open_orders(self) -> list[Order]: ...

    def get_order(self, client_order_id: str) -> Order | None: ...

    def fills_since(self, client_order_id: str | None = None) -> list[Fill]: ...

    def balances(self) -> dict[str, float]: ...
