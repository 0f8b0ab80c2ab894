"""The portfolio ledger: cash, positions, orders, fills, fees, realised/unrealised P&L, closed trades.

Durability: every event (a position opened, a bar applied, a decision) is ONE record of kind 'ledger'
written with ONE put_records call, holding the full new state of every entity it touched plus the cash
and totals after it; that makes each event atomic. After it, the per-kind views ('position', 'order',
'fill', 'trade', 'decision') are upserted for readers; they are derived and rebuilt on load, so a crash
between the journal write and the views loses nothing. `Portfolio.load` folds the journal in key order
(last write of an entity wins) and restores the paper venue from it.

Idempotency: opening the same signal twice returns the first position (its id derives from the signal
id); a bar already applied to a position (ts <= its last bar) is skipped, so replaying bars after a
restart changes nothing; fills are keyed by deterministic fill ids and applied once. A bar on which
nothing happened (no fill, expiry or exit) is not written: it only moved the trailing high and the last
bar seen, and replaying it after a restart recomputes exactly that (the rules are deterministic).

Accounting (tested at every step): equity = cash + sum(quantity * mark); equity = capital + realised +
unrealised (unrealised is net of the entry fees already paid); fees_paid = sum of fill fees; realised
= sum of closed trades' net P&L.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.domain import (
    ClosedTrade,
    Decision,
    Fill,
    Liquidity,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Scores,
    Side,
    Signal,
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
    open_position,
)
from core.settings import Settings
from core.storage.base import CandleStore
from core.venues.base import Venue

JOURNAL = "ledger"
VIEWS = ("position", "order", "fill", "trade", "decision")


class Portfolio:
    def __init__(self, store: CandleStore, settings: Settings, venue: Venue, capital: float | None = None) -> None:
        self.store = store
        self.settings = settings
        self.venue = venue
        self.capital = settings.risk.capital if capital is None else capital
        self.cash = self.capital
        self.realised_pnl = 0.0
        self.fees_paid = 0.0
        self.positions: dict[str, ManagedPosition] = {}
        self.orders: dict[str, Order] = {}
        self.fills: dict[str, Fill] = {}
        self.trades: dict[str, ClosedTrade] = {}
        self.decisions: dict[str, Decision] = {}
        self.marks: dict[str, float] = {}
        self.seq = 0

    # --- loading ----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, store: CandleStore, settings: Settings, venue: Venue) -> Portfolio:
        """Rebuild from the journal (empty store: a fresh book), restore the venue, resend pending intents."""
        pf = cls(store, settings, venue)
        records = sorted(store.get_records(JOURNAL), key=lambda kv: kv[0])
        for key, payload in records:
            pf._fold(payload)
            pf.seq = max(pf.seq, int(key))
        # The paper venue holds exactly what the ledger says; intents stored but never acknowledged are
        # submitted again (submit is idempotent by client_order_id).
        # (A live venue keeps its own state and journal: it has no `restore`.)
        known = [o for o in pf.orders.values() if o.status is not OrderStatus.PENDING]
        restore = getattr(venue, "restore", None)
        if restore is not None:
            restore(known, list(pf.fills.values()), pf._balances())
        pf.resubmit_pending()
        if records:
            # Only the last event's views can be missing (a crash between its journal write and its views).
            last = records[-1][1]
            pf._write_views(
                [pf.positions[d["position_id"]] for d in last.get("positions", [])],
                [pf.orders[d["client_order_id"]] for d in last.get("orders", [])],
                [pf.fills[d["fill_id"]] for d in last.get("fills", [])],
                [pf.trades[d["position_id"]] for d in last.get("trades", [])],
                [pf.decisions[d["signal_id"]] for d in last.get("decisions", [])],
            )
        return pf

    def _fold(self, p: dict[str, Any]) -> None:
        self.cash, self.realised_pnl, self.fees_paid = p["cash"], p["realised_pnl"], p["fees_paid"]
        self.capital = p.get("capital", self.capital)
        self.marks.update(p.get("marks", {}))
        for d in p.get("positions", []):
            self.positions[d["position_id"]] = ManagedPosition.from_dict(d)
        for d in p.get("orders", []):
            self.orders[d["client_order_id"]] = Order.model_validate(d)
        for d in p.get("fills", []):
            self.fills[d["fill_id"]] = Fill.model_validate(d)
        for d in p.get("trades", []):
            self.trades[d["position_id"]] = ClosedTrade.model_validate(d)
        for d in p.get("decisions", []):
            self.decisions[d["signal_id"]] = Decision.model_validate(d)

    # --- events -----------------------------------------------------------------------------------------

    def record_decision(self, decision: Decision) -> None:
        """Store a decision (taken or skipped, with its reason)."""
        self.record_decisions([decision])

    def record_decisions(self, decisions: list[Decision]) -> None:
        """Store a scan's decisions in one event (one write, however many were skipped)."""
        if not decisions:
            return
        self.decisions.update({d.signal_id: d for d in decisions})
        self._commit("decision", decisions=decisions)

    def open(
        self, signal: Signal, scores: Scores, notional: float, decision: Decision | None = None
    ) -> ManagedPosition:
        """Open a position for an approved signal: store the intent, then place the entry orders."""
        pid = f"pos:{signal.signal_id}"
        if pid in self.positions:
            # The same signal never opens twice; an entry whose send failed (a live venue's timeout) is
            # sent again (the venue's submit is idempotent and searches before resending).
            self.resubmit_pending(pid)
            return self.positions[pid]
        pos = open_position(signal, scores, notional, self.settings, position_id=pid)
        intents = [
            Order(
                client_order_id=lv.client_order_id,
                symbol=pos.symbol,
                side=Side.BUY,
                order_type=pos.entry_type,
                quantity=lv.quantity,
                price=lv.price if pos.entry_type is OrderType.LIMIT else None,
                strategy=pos.strategy,
                position_id=pid,
                created_ts=pos.created_ts,
                expires_ts=pos.expiry_ts,
            )
            for lv in pos.entry_levels
        ]
        self.positions[pid] = pos
        self.orders.update({o.client_order_id: o for o in intents})
        if decision is not None:
            self.decisions[decision.signal_id] = decision
        self._commit("open", positions=[pos], orders=intents, decisions=[decision] if decision else [])
        placed = [self.venue.submit(o) for o in intents]
        self.orders.update({o.client_order_id: o for o in placed})
        self._commit("submitted", orders=placed)
        return pos

    def resubmit_pending(self, position_id: str | None = None) -> list[Order]:
        """Send again the stored intents the venue never acknowledged (all, or one position's)."""
        pending = [
            o for o in self.orders.values()
            if o.status is OrderStatus.PENDING and (position_id is None or o.position_id == position_id)
        ]
        if not pending:
            return []
        placed = [self.venue.submit(o) for o in pending]
        self.orders.update({o.client_order_id: o for o in placed})
        self._commit("resubmitted", orders=placed)
        return placed

    def on_bar(self, symbol: str, bar: Bar) -> list[Any]:
        """Apply one bar of `symbol`: venue fills/expiries, then the position rules' exits. One event."""
        bar.check()  # a broken candle is refused before anything is booked
        self.marks[symbol] = bar.close
        active = [
            p for p in self.positions.values() if p.symbol == symbol and p.status != "closed" and p.created_ts <= bar.ts
        ]
        fresh = [p for p in active if begin_bar(p, bar)]  # a replayed bar (after a restart) is skipped
        if not fresh:
            return []
        was_flat = {p.position_id: p.quantity == 0 for p in fresh}
        by_order = {lv.client_order_id: (p, i) for p in fresh for i, lv in enumerate(p.entry_levels)}
        fills, expired = self.venue.on_bar(symbol, bar, only=set(by_order))
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
            if fill.fill_id in self.fills:
                continue  # each fill (and its fee) is applied once
            pos, i = by_order[fill.client_order_id]
            events.append(apply_entry_fill(pos, i, fill.ts, fill.price, fill.fee))
            self._book_fill(fill)
            new_fills.append(fill)
            touched_orders.append(self._venue_order(fill.client_order_id))
        for pos in fresh:
            if pos.quantity == 0:
                if not pos.resting_levels:
                    pos.status = "closed"  # every level expired unfilled
                continue
            for ev in manage_exits(pos, bar, self.settings, entry_bar=was_flat[pos.position_id]):
                events.append(ev)
                if isinstance(ev, Expired):  # resting levels cancelled by the exit
                    touched_orders.append(self.venue.cancel(ev.client_order_id))
                elif isinstance(ev, Exited):
                    fill, order, trade = self._exit(pos, ev, bar)
                    new_fills.append(fill)
                    touched_orders.append(order)
                    new_trades.append(trade)
        for o in touched_orders:
            self.orders[o.client_order_id] = o
        if events:  # a quiet bar is not written: after a restart it is replayed, deterministically
            self._commit("bar", positions=fresh, orders=touched_orders, fills=new_fills, trades=new_trades)
        return events

    def _exit(self, pos: ManagedPosition, ev: Exited, bar: Bar) -> tuple[Fill, Order, ClosedTrade]:
        order = Order(
            client_order_id=f"{pos.position_id}:x",
            symbol=pos.symbol,
            side=Side.SELL,
            order_type=OrderType.LIMIT if ev.liquidity == Liquidity.MAKER else OrderType.MARKET,
            quantity=ev.quantity,
            price=ev.price,
            strategy=pos.strategy,
            position_id=pos.position_id,
            created_ts=bar.ts,
            purpose=OrderPurpose.EXIT,
        )
        self.venue.submit(order)
        fill = self.venue.execute(order.client_order_id, ev.ts, ev.price, ev.liquidity)
        self._book_fill(fill)
        trade = ClosedTrade(
            position_id=pos.position_id,
            symbol=pos.symbol,
            strategy=pos.strategy,
            entry_ts=pos.entry_ts or pos.created_ts,
            exit_ts=ev.ts,
            entry_price=pos.avg_price,
            exit_price=ev.price,
            quantity=pos.quantity,
            gross_pnl=pos.gross_pnl,
            fees=pos.fees,
            net_pnl=pos.net_pnl,
            exit_reason=ev.reason,
            signal_id=pos.signal_id,
        )
        self.realised_pnl += trade.net_pnl
        self.trades[pos.position_id] = trade
        return fill, self._venue_order(order.client_order_id), trade

    def _book_fill(self, fill: Fill) -> None:
        value = fill.price * fill.quantity
        self.cash += -value - fill.fee if fill.side is Side.BUY else value - fill.fee
        self.fees_paid += fill.fee
        self.fills[fill.fill_id] = fill

    def _venue_order(self, client_order_id: str) -> Order:
        order = self.venue.get_order(client_order_id)
        if order is None:
            raise VenueError(f"the venue lost order {client_order_id} it just filled; reconcile before trading on")
        return order

    # --- views ------------------------------------------------------------------------------------------

    def open_positions(self) -> list[ManagedPosition]:
        return [p for p in self.positions.values() if p.status != "closed"]

    def equity(self, marks: dict[str, float] | None = None) -> float:
        m = {**self.marks, **(marks or {})}
        return self.cash + sum(p.quantity * m.get(p.symbol, p.avg_price) for p in self.open_positions())

    def unrealised_pnl(self, marks: dict[str, float] | None = None) -> float:
        """Marked gain of the open positions net of the entry fees they already paid."""
        m = {**self.marks, **(marks or {})}
        return sum(p.quantity * (m.get(p.symbol, p.avg_price) - p.avg_price) - p.entry_fees for p in self.open_positions())

    def open_notional(self, marks: dict[str, float] | None = None) -> float:
        """Filled quantity at the mark plus resting entry orders (what the risk cap counts)."""
        m = {**self.marks, **(marks or {})}
        return sum(p.quantity * m.get(p.symbol, p.avg_price) + p.resting_notional for p in self.open_positions())

    def _balances(self) -> dict[str, float]:
        bal: dict[str, float] = {"USDT": self.cash}
        for p in self.open_positions():
            bal[p.symbol] = bal.get(p.symbol, 0.0) + p.quantity
        return bal

    # --- persistence ------------------------------------------------------------------------------------

    def _commit(
        self,
        event: str,
        positions: Any = (),
        orders: Any = (),
        fills: Any = (),
        trades: Any = (),
        decisions: Any = (),
    ) -> None:
        positions, orders, fills, trades, decisions = map(list, (positions, orders, fills, trades, decisions))
        self.seq += 1
        payload = {
            "event": event,
            "cash": self.cash,
            "capital": self.capital,
            "realised_pnl": self.realised_pnl,
            "fees_paid": self.fees_paid,
            "marks": dict(self.marks),
            "positions": [p.to_dict() for p in positions],
            "orders": [o.model_dump(mode="json") for o in orders],
            "fills": [f.model_dump(mode="json") for f in fills],
            "trades": [t.model_dump(mode="json") for t in trades],
            "decisions": [d.model_dump(mode="json") for d in decisions],
        }
        self.store.put_records(JOURNAL, [(f"{self.seq:012d}", payload)])  # the atomic write of this event
        self._write_views(positions, orders, fills, trades, decisions)

    def _write_views(self, positions: Any, orders: Any, fills: Any, trades: Any, decisions: Any) -> None:
        rows: dict[str, list[tuple[str, dict[str, Any]]]] = {
            "position": [(p.position_id, p.to_dict()) for p in positions],
            "order": [(o.client_order_id, o.model_dump(mode="json")) for o in orders],
            "fill": [(f.fill_id, f.model_dump(mode="json")) for f in fills],
            "trade": [(t.position_id, t.model_dump(mode="json")) for t in trades],
            "decision": [(d.signal_id, d.model_dump(mode="json")) for d in decisions],
        }
        for kind in VIEWS:
            if rows[kind]:
                self.store.put_records(kind, rows[kind])


def latest_ts(portfolio: Portfolio) -> datetime | None:
    """The last bar applied to any position (where a resumed session picks up)."""
    seen = [p.last_bar_ts for p in portfolio.positions.values() if p.last_bar_ts is not None]
    return max(seen) if seen else None
