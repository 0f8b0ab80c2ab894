"""The only valuation of a book: equity, open notional and the risk view, from cash, the open positions
and the last marks. The paper/live ledger (core.trading.book.Book) and the backtest engine both call it,
so what risk and sizing see is computed one way everywhere.

A position is marked at its symbol's last close (its average price until a bar was seen); its resting
entry orders count at their limit notional (the risk cap counts what may still fill).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.positions import ManagedPosition
from core.risk import Holding, PortfolioView


def holding_notional(p: ManagedPosition, marks: Mapping[str, float]) -> float:
    """Filled quantity at the mark plus resting entry orders (what the risk cap counts)."""
    return p.quantity * marks.get(p.symbol, p.avg_price) + (p.resting_notional if p.resting_levels else 0.0)


def marked(cash: float, positions: Iterable[ManagedPosition], marks: Mapping[str, float]) -> tuple[float, float]:
    """(equity, open notional): equity = cash + filled quantity x mark; open notional adds resting orders."""
    filled = resting = 0.0
    for p in positions:
        filled += p.quantity * marks.get(p.symbol, p.avg_price)
        if p.resting_levels:
            resting += p.resting_notional
    return cash + filled, filled + resting


def unrealised_pnl(positions: Iterable[ManagedPosition], marks: Mapping[str, float]) -> float:
    """Marked gain of the open positions net of the entry fees they already paid."""
    return sum(p.quantity * (marks.get(p.symbol, p.avg_price) - p.avg_price) - p.entry_fees for p in positions)


def risk_view(cash: float, positions: list[ManagedPosition], marks: Mapping[str, float]) -> PortfolioView:
    """What risk and sizing see at decision time: equity at the marks and every open or pending holding."""
    equity, _ = marked(cash, positions, marks)
    return PortfolioView(
        equity, [Holding(p.symbol, p.strategy, holding_notional(p, marks), p.quantity == 0) for p in positions]
    )
