"""Reconciliation on start: make the order journal agree with the venue, and say what differed.

Read-only towards the venue: it never places or cancels an order. It
- adopts venue orders that match a journalled intent never tied to an order (a crash between submit
  and recording the acknowledgement), so nothing is sent twice;
- marks intents the venue never received as not_at_venue (their order is recorded REJECTED, so a
  resubmit of the same id stays a no-op; the manager places a new order with a new id if it still wants),
  but only once they are older than the venue's settle time (hummingbot-api creates orders
  asynchronously: a younger intent not yet visible stays unresolved and is reported in_doubt);
- refreshes the status and filled quantity of our known orders, and records fills not yet journalled;
- reports what a person should look at: our orders the venue does not know, open venue orders that
  are not ours, trades of orders that are not ours, and holdings that differ from the venue balances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from core.domain import Fill, OrderStatus
from core.venues.order_journal import (
    CLOCK_SLACK,
    FINAL_STATUSES,
    OrderJournal,
    VenueSnapshot,
    fill_from_view,
    match_intent,
)

BALANCE_REL_TOL = 1e-6
DEFAULT_SETTLE = timedelta(seconds=30)  # execution.order_settle_seconds' default; venues carry their own


class ReconcilableVenue(Protocol):
    def snapshot(self, since: datetime | None = None) -> VenueSnapshot:
        """The venue's open and recent orders, fills since `since`, and balances; no side effects."""


@dataclass(frozen=True)
class ReconcileReport:
    since: datetime
    adopted: list[str] = field(default_factory=list)  # our ids found at the venue but not recorded
    not_at_venue: list[str] = field(default_factory=list)  # intents the venue never received
    in_doubt: list[str] = field(default_factory=list)  # intents too young to declare absent: left unresolved
    status_changes: list[tuple[str, str, str]] = field(default_factory=list)  # (id, was, now)
    missing_at_venue: list[str] = field(default_factory=list)  # our placed orders the venue does not know
    unknown_open_orders: list[str] = field(default_factory=list)  # venue ids open there, not ours
    new_fills: list[str] = field(default_factory=list)
    unknown_fills: list[str] = field(default_factory=list)  # venue trade ids of orders not ours
    balance_differences: dict[str, tuple[float, float]] = field(default_factory=dict)  # symbol: (ours, venue)

    @property
    def clean(self) -> bool:
        """True when nothing needs a person (adoptions and resolved intents are repairs, not problems)."""
        return not (self.missing_at_venue or self.unknown_open_orders or self.balance_differences)

    def summary(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in (
                ("adopted", self.adopted),
                ("not_at_venue", self.not_at_venue),
                ("in_doubt", self.in_doubt),
                ("status_changes", self.status_changes),
                ("missing_at_venue", self.missing_at_venue),
                ("unknown_open_orders", self.unknown_open_orders),
                ("new_fills", self.new_fills),
                ("unknown_fills", self.unknown_fills),
                ("balance_differences", self.balance_differences),
            )
            if value
        ]
        return "reconciliation: " + ("; ".join(parts) if parts else "journal and venue agree")


def default_since(journal: OrderJournal, now: datetime, lookback: timedelta = timedelta(days=1)) -> datetime:
    """Search the venue from the oldest unresolved intent or non-final order (or `lookback` ago)."""
    intents = {i.client_order_id: i for i in journal.intents()}
    times = [min(i.recorded_ts, i.order.created_ts) for i in journal.unresolved_intents()]
    for o in journal.orders():
        if o.status not in FINAL_STATUSES:
            i = intents.get(o.client_order_id)
            times.append(min(i.recorded_ts, o.created_ts) if i else o.created_ts)
    return min(times) - CLOCK_SLACK if times else now - lookback


def _differs(a: float, b: float) -> bool:
    return not math.isclose(a, b, rel_tol=BALANCE_REL_TOL, abs_tol=1e-9)


def reconcile(
    venue: ReconcilableVenue,
    journal: OrderJournal,
    *,
    expected_holdings: dict[str, float] | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
    settle: timedelta | None = None,
    wall_now: datetime | None = None,
) -> ReconcileReport:
    """Bring the journal in line with the venue; `expected_holdings` (symbol: base qty) defaults to the
    net of the journalled fills. `settle` (default: the venue's `settle`) is how old an unmatched
    intent must be, by the wall clock that stamped it (`wall_now`), to be declared absent."""
    now = now or datetime.now(UTC)
    settle = settle if settle is not None else getattr(venue, "settle", DEFAULT_SETTLE)
    wall_now = wall_now or datetime.now(UTC)
    journal.refresh()  # start from what the store holds, not from what this process remembers
    since = since or default_since(journal, now)
    snap = venue.snapshot(since=since)
    views = {v.venue_order_id: v for v in snap.orders}
    claimed = journal.claimed_venue_ids()

    # 1. Intents never tied to an order: adopt the venue's match, or mark them absent. Oldest first,
    #    so two identical intents claim identical venue orders in the order they were sent.
    adopted, absent, doubtful = [], [], []
    resolved_orders, resolutions = [], []
    for intent in sorted(journal.unresolved_intents(), key=lambda i: i.recorded_ts):
        found = match_intent(intent, views.values(), claimed)
        if found is not None:
            claimed.add(found.venue_order_id)
            resolved_orders.append(
                intent.order.model_copy(
                    update={
                        "venue_order_id": found.venue_order_id,
                        "status": found.status,
                        "filled_quantity": found.filled_quantity,
                    }
                )
            )
            resolutions.append((intent, "adopted", f"found at the venue as {found.venue_order_id}"))
            adopted.append(intent.client_order_id)
        elif wall_now - intent.recorded_ts < settle:
            doubtful.append(intent.client_order_id)  # may still be on its way: never declared absent early
        else:
            resolved_orders.append(intent.order.model_copy(update={"status": OrderStatus.REJECTED}))
            resolutions.append((intent, "not_at_venue", f"not found among the venue's orders since {since.isoformat()}"))
            absent.append(intent.client_order_id)
    # Orders first: an intent is only marked resolved once its order record exists.
    journal.record_orders(resolved_orders)
    journal.resolve_intents(resolutions)

    # 2. Known orders: refresh from the venue; report ours the venue does not know.
    changes, missing, updated = [], [], []
    for order in journal.orders():
        if order.venue_order_id is None or order.client_order_id in adopted:
            continue
        view = views.get(order.venue_order_id)
        if view is None:
            if order.status not in FINAL_STATUSES:
                missing.append(order.client_order_id)
            continue
        if (view.status, view.filled_quantity) != (order.status, order.filled_quantity):
            changes.append((order.client_order_id, order.status.value, view.status.value))
            updated.append(
                order.model_copy(update={"status": view.status, "filled_quantity": view.filled_quantity})
            )
    journal.record_orders(updated)

    # 3. Open venue orders that are not ours (placed by hand, or by another bot on the account).
    ours = journal.claimed_venue_ids()
    unknown_open = sorted(v.venue_order_id for v in snap.orders if v.venue_order_id not in ours and v.status not in FINAL_STATUSES)

    # 4. Fills: record the ones of our orders not yet journalled.
    by_venue_id = {o.venue_order_id: o for o in journal.orders() if o.venue_order_id}
    fills: list[Fill] = []
    unknown_fills: list[str] = []
    for fv in snap.fills:
        owner = by_venue_id.get(fv.venue_order_id or "")
        if owner is None:
            unknown_fills.append(fv.fill_id)
        else:
            fills.append(fill_from_view(fv, owner))
    new_fills = [f.fill_id for f in journal.record_fills(fills)]

    # 5. Holdings: what we believe we hold versus the venue's balance of each base coin.
    expected = expected_holdings if expected_holdings is not None else journal.net_holdings()
    balance_diff = {
        sym: (qty, snap.balances.get(sym, 0.0))
        for sym, qty in sorted(expected.items())
        if _differs(qty, snap.balances.get(sym, 0.0))
    }

    return ReconcileReport(
        since=since,
        adopted=adopted,
        not_at_venue=absent,
        in_doubt=doubtful,
        status_changes=changes,
        missing_at_venue=missing,
        unknown_open_orders=unknown_open,
        new_fills=new_fills,
        unknown_fills=sorted(unknown_fills),
        balance_differences=balance_diff,
    )
