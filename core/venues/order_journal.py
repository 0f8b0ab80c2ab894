"""The order journal: what we asked a live venue to do, written to the store BEFORE it is sent.

Three record kinds in the store (put_records/get_records, keyed by our client_order_id or fill id):
  order_intent  the intent (our id, symbol, side, qty, price) plus the wall time it was recorded and its
                outcome: None while unresolved, "acknowledged", "adopted" (found at the venue after an
                ambiguous failure or a crash) or "not_at_venue" (searched for and absent).
  venue_order   the last known venue state of an order we own (status, fills, the venue's order id).
  venue_fill    fills of our orders, keyed by the venue's trade id (recorded once).

Also here: the venue-neutral views of the venue's orders and fills, and the one rule that decides
whether a venue order is the one an intent produced (used by submit retries and by reconciliation).
Hummingbot assigns its own client order id, so the match is by pair, side, type, amount, price and a
creation time after the intent was recorded; orders already claimed by another intent never match.
The intent holds the order as SENT (quantized to the venue's lot and tick before it was journalled),
and the venue stores exactly those values, so amount and price must be equal, not merely close. The
creation time is loose: hummingbot-api stamps an active order with its connector's clock, which it
moves only every 5 minutes (CLOCK_SLACK covers that).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from core.domain import Fill, Order, OrderStatus, OrderType, Side
from core.storage.base import CandleStore

INTENT_KIND = "order_intent"
ORDER_KIND = "venue_order"
FILL_KIND = "venue_fill"

FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED})

# hummingbot-api sets its connectors' clock at start and in its 5-minute state loop only, so an active
# order's created_at can be up to 5 minutes before the moment it was really placed (plus clock skew).
CLOCK_SLACK = timedelta(minutes=6)
# Intents are quantized before they are journalled: what the venue stores equals them up to float
# representation, so the tolerance is float noise, far below one lot step (1e-8 BTC at ~0.0007 BTC
# is 1.5e-5 relative).
MATCH_REL_TOL = 1e-9


@dataclass(frozen=True)
class JournalIntent:
    order: Order
    recorded_ts: datetime  # wall clock when stored, before sending: the lower bound of the search
    outcome: str | None = None  # None (unresolved) | acknowledged | adopted | not_at_venue
    reason: str = ""

    @property
    def client_order_id(self) -> str:
        return self.order.client_order_id


@dataclass(frozen=True)
class VenueOrderView:
    """A venue's order in venue-neutral terms (venue_order_id is the venue's own client order id)."""

    venue_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: float
    price: float | None
    status: OrderStatus
    filled_quantity: float
    created_ts: datetime
    average_fill_price: float | None = None
    from_trades: bool = False  # rebuilt from trade rows only (no order row): quantity = filled amount


@dataclass(frozen=True)
class VenueFillView:
    fill_id: str
    venue_order_id: str | None
    symbol: str
    side: Side
    ts: datetime
    price: float
    quantity: float
    fee: float


@dataclass(frozen=True)
class VenueSnapshot:
    """Everything reconciliation compares: the venue's open and recent orders, fills and balances."""

    orders: list[VenueOrderView]
    fills: list[VenueFillView]
    balances: dict[str, float] = field(default_factory=dict)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=MATCH_REL_TOL, abs_tol=1e-12)


def matches_intent(intent: JournalIntent, view: VenueOrderView) -> bool:
    o = intent.order
    if (view.symbol, view.side, view.order_type) != (o.symbol, o.side, o.order_type):
        return False
    if not _close(view.quantity, o.quantity):
        return False
    if view.from_trades:
        # Only the fills are known: a limit order's fills are at its price or better.
        if o.order_type == OrderType.LIMIT and o.price is not None and view.price is not None:
            better = view.price <= o.price * (1 + MATCH_REL_TOL) if o.side == Side.BUY else view.price >= o.price * (1 - MATCH_REL_TOL)
            if not better:
                return False
    # A market order carries no price of its own (the venue may echo a reference price).
    elif o.order_type == OrderType.LIMIT and (view.price is None or o.price is None or not _close(view.price, o.price)):
        return False
    return view.created_ts >= intent_earliest(intent)


def intent_earliest(intent: JournalIntent) -> datetime:
    """The earliest creation time a venue order of this intent can carry: the decision (the order's
    created_ts, a bar close) or the journalling, whichever came first, less the connector clock's lag."""
    return min(intent.recorded_ts, intent.order.created_ts) - CLOCK_SLACK


def match_intent(
    intent: JournalIntent, views: Iterable[VenueOrderView], claimed: set[str]
) -> VenueOrderView | None:
    """The earliest unclaimed venue order this intent could have produced, or None."""
    found = [v for v in views if v.venue_order_id not in claimed and matches_intent(intent, v)]
    # Earliest first; numeric venue ids (Kraken's) sort by value, so the first placed wins a tie.
    return min(found, key=lambda v: (v.created_ts, _id_key(v.venue_order_id))) if found else None


def _id_key(venue_order_id: str) -> tuple[int, str]:
    return (int(venue_order_id), "") if venue_order_id.isdigit() else (0, venue_order_id)


def fill_from_view(view: VenueFillView, order: Order) -> Fill:
    """A venue fill of one of our orders, in our terms (resting limit orders are makers)."""
    return Fill(
        fill_id=view.fill_id,
        client_order_id=order.client_order_id,
        symbol=view.symbol,
        side=view.side,
        ts=view.ts,
        price=view.price,
        quantity=view.quantity,
        fee=view.fee,
        liquidity="maker" if order.order_type == OrderType.LIMIT else "taker",
    )


def _now() -> datetime:
    return datetime.now(UTC)


class OrderJournal:
    """Typed access to the journal records of one store (DuckDB or Postgres).

    Records are read from the store once and then kept in memory, updated by every write made
    through this object (written to the store first), so a lookup does not re-read the whole
    journal. One live process owns a journal; `refresh()` re-reads the store (reconciliation does).
    """

    def __init__(self, store: CandleStore) -> None:
        self.store = store
        self._intent_cache: dict[str, JournalIntent] | None = None
        self._order_cache: dict[str, Order] | None = None
        self._fill_cache: dict[str, Fill] | None = None

    def refresh(self) -> None:
        self._intent_cache = self._order_cache = self._fill_cache = None

    # --- intents ----------------------------------------------------------------------------------
    def record_intent(self, order: Order, recorded_ts: datetime | None = None) -> JournalIntent:
        intent = JournalIntent(order=order, recorded_ts=recorded_ts or _now())
        self._put_intents([intent])
        return intent

    def resolve_intent(self, client_order_id: str, outcome: str, reason: str = "") -> JournalIntent:
        intent = self.intent(client_order_id)
        if intent is None:
            raise KeyError(f"no order intent {client_order_id!r} in the journal")
        resolved = JournalIntent(intent.order, intent.recorded_ts, outcome, reason)
        self._put_intents([resolved])
        return resolved

    def resolve_intents(self, resolutions: list[tuple[JournalIntent, str, str]]) -> None:
        """Many (intent, outcome, reason) in one atomic write (reconciliation)."""
        self._put_intents([JournalIntent(i.order, i.recorded_ts, outcome, reason) for i, outcome, reason in resolutions])

    def intent(self, client_order_id: str) -> JournalIntent | None:
        return self._intents().get(client_order_id)

    def intents(self) -> list[JournalIntent]:
        return list(self._intents().values())

    def unresolved_intents(self) -> list[JournalIntent]:
        """Intents stored but never tied to a venue order nor known to be absent."""
        known = self._orders()
        return [i for i in self._intents().values() if i.outcome is None and i.client_order_id not in known]

    # --- orders ---------------------------------------------------------------------------------
    def record_order(self, order: Order) -> None:
        self.record_orders([order])

    def record_orders(self, orders: list[Order]) -> None:
        if not orders:
            return
        self.store.put_records(ORDER_KIND, [(o.client_order_id, o.model_dump(mode="json")) for o in orders])
        cache = self._orders()
        for o in orders:
            cache.pop(o.client_order_id, None)  # re-insert: keep update order like the store
            cache[o.client_order_id] = o

    def order(self, client_order_id: str) -> Order | None:
        return self._orders().get(client_order_id)

    def orders(self) -> list[Order]:
        return list(self._orders().values())

    def order_by_venue_id(self, venue_order_id: str) -> Order | None:
        return next((o for o in self._orders().values() if o.venue_order_id == venue_order_id), None)

    def claimed_venue_ids(self) -> set[str]:
        return {o.venue_order_id for o in self._orders().values() if o.venue_order_id}

    # --- fills ------------------------------------------------------------------------------------
    def record_fills(self, fills: list[Fill]) -> list[Fill]:
        """Store fills not seen before; returns the new ones."""
        cache = self._fills()
        new = list({f.fill_id: f for f in fills if f.fill_id not in cache}.values())
        if new:
            self.store.put_records(FILL_KIND, [(f.fill_id, f.model_dump(mode="json")) for f in new])
            cache.update((f.fill_id, f) for f in new)
        return new

    def fills(self) -> list[Fill]:
        return list(self._fills().values())

    def net_holdings(self) -> dict[str, float]:
        """Base-coin quantity bought minus sold per symbol, from the recorded fills."""
        out: dict[str, float] = {}
        for f in self.fills():
            out[f.symbol] = out.get(f.symbol, 0.0) + (f.quantity if f.side == Side.BUY else -f.quantity)
        return out

    # --- storage ----------------------------------------------------------------------------------
    def _put_intents(self, intents: list[JournalIntent]) -> None:
        rows = [
            (
                i.client_order_id,
                {
                    "order": i.order.model_dump(mode="json"),
                    "recorded_ts": i.recorded_ts.isoformat(),
                    "outcome": i.outcome,
                    "reason": i.reason,
                },
            )
            for i in intents
        ]
        if not rows:
            return
        self.store.put_records(INTENT_KIND, rows)
        cache = self._intents()
        for i in intents:
            cache.pop(i.client_order_id, None)
            cache[i.client_order_id] = i

    def _intents(self) -> dict[str, JournalIntent]:
        if self._intent_cache is None:
            self._intent_cache = {
                key: JournalIntent(
                    order=Order.model_validate(p["order"]),
                    recorded_ts=datetime.fromisoformat(p["recorded_ts"]),
                    outcome=p.get("outcome"),
                    reason=p.get("reason", ""),
                )
                for key, p in self.store.get_records(INTENT_KIND)
            }
        return self._intent_cache

    def _orders(self) -> dict[str, Order]:
        if self._order_cache is None:
            self._order_cache = {key: Order.model_validate(p) for key, p in self.store.get_records(ORDER_KIND)}
        return self._order_cache

    def _fills(self) -> dict[str, Fill]:
        if self._fill_cache is None:
            self._fill_cache = {key: Fill.model_validate(p) for key, p in self.store.get_records(FILL_KIND)}
        return self._fill_cache
