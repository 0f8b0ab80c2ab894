"""The book: cash, positions, orders, fills, fees, realised P&L, closed trades and decisions, in memory.

It alone values the account (through core.trading.valuation); the journal persists its events and the
drivers (simulated, live) change it. Accounting, tested at every step: equity = cash + sum(quantity x
mark); equity = capital + realised + unrealised (unrealised is net of the entry fees already paid);
fees_paid = sum of fill fees; realised = sum of closed trades' net P&L.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.domain import ClosedTrade, Decision, ExitReason, Fill, Order, Side
from core.positions import ManagedPosition
from core.risk import PortfolioView
from core.trading import valuation


@dataclass
class Book:
    capital: float
    cash: float
    realised_pnl: float = 0.0
    fees_paid: float = 0.0
    positions: dict[str, ManagedPosition] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    fills: dict[str, Fill] = field(default_factory=dict)
    trades: dict[str, ClosedTrade] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, capital: float) -> Book:
        return cls(capital=capital, cash=capital)

    # --- valuation (core.trading.valuation is the only formula) ------------------------------------------

    def open_positions(self) -> list[ManagedPosition]:
        return [p for p in self.positions.values() if p.status != "closed"]

    def _marks(self, marks: dict[str, float] | None) -> dict[str, float]:
        return {**self.marks, **marks} if marks else self.marks

    def equity(self, marks: dict[str, float] | None = None) -> float:
        return valuation.marked(self.cash, self.open_positions(), self._marks(marks))[0]

    def open_notional(self, marks: dict[str, float] | None = None) -> float:
        """Filled quantity at the mark plus resting entry orders (what the risk cap counts)."""
        return valuation.marked(self.cash, self.open_positions(), self._marks(marks))[1]

    def unrealised_pnl(self, marks: dict[str, float] | None = None) -> float:
        return valuation.unrealised_pnl(self.open_positions(), self._marks(marks))

    def view(self, marks: dict[str, float] | None = None, cash: float | None = None) -> PortfolioView:
        """What risk and sizing see: equity at the marks and every open or pending position's notional
        (`cash`: a lower figure to size on, e.g. the live venue's fresh balance)."""
        return valuation.risk_view(self.cash if cash is None else cash, self.open_positions(), self._marks(marks))

    def balances(self, quote: str = "USDT") -> dict[str, float]:
        bal: dict[str, float] = {quote: self.cash}
        for p in self.open_positions():
            bal[p.symbol] = bal.get(p.symbol, 0.0) + p.quantity
        return bal

    def snapshot(self, marks: dict[str, float] | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The book as a person checks it: totals at the marks, and one row per open or pending position."""
        m = self._marks(marks)
        equity, exposure = valuation.marked(self.cash, self.open_positions(), m)
        totals = {"capital": self.capital, "cash": self.cash, "equity": equity, "open_notional": exposure,
                  "unrealised_pnl": self.unrealised_pnl(marks), "realised_pnl": self.realised_pnl,
                  "fees_paid": self.fees_paid, "closed_trades": float(len(self.trades))}
        rows = [
            {"position": p.position_id, "symbol": p.symbol, "strategy": p.strategy.value, "status": p.status,
             "quantity": p.quantity, "avg_price": p.avg_price, "mark": m.get(p.symbol),
             "notional": valuation.holding_notional(p, m), "resting_levels": p.resting_levels,
             "entry": f"{p.entry_ts:%Y-%m-%d %H:%M}" if p.entry_ts else ""}
            for p in sorted(self.open_positions(), key=lambda p: (p.symbol, p.position_id))
        ]
        return totals, rows

    # --- booking ------------------------------------------------------------------------------------------

    def book_fill(self, fill: Fill) -> None:
        """Cash and fees of one fill (a buy pays price x qty + fee, a sell receives price x qty - fee)."""
        value = fill.price * fill.quantity
        self.cash += -value - fill.fee if fill.side is Side.BUY else value - fill.fee
        self.fees_paid += fill.fee
        self.fills[fill.fill_id] = fill

    def close_trade(self, pos: ManagedPosition, exit_ts: datetime, exit_price: float, reason: ExitReason) -> ClosedTrade:
        """The closed trade of an exited position (P&L and fees from the position), realised once."""
        trade = ClosedTrade(
            position_id=pos.position_id,
            symbol=pos.symbol,
            strategy=pos.strategy,
            entry_ts=pos.entry_ts or pos.created_ts,
            exit_ts=exit_ts,
            entry_price=pos.avg_price,
            exit_price=exit_price,
            quantity=pos.quantity,
            gross_pnl=pos.gross_pnl,
            fees=pos.fees,
            net_pnl=pos.net_pnl,
            exit_reason=reason,
            signal_id=pos.signal_id,
        )
        self.realised_pnl += trade.net_pnl
        self.trades[pos.position_id] = trade
        return trade

    # --- the journal's event format --------------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        return {"cash": self.cash, "capital": self.capital, "realised_pnl": self.realised_pnl,
                "fees_paid": self.fees_paid, "marks": dict(self.marks)}

    def fold(self, p: dict[str, Any]) -> None:
        """Apply one journal event (the full new state of what it touched; last write wins)."""
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
