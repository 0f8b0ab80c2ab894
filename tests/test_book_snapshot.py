"""The book as the `paper-book` artifact shows it: totals at the marks and one row per open position,
hand-checked on a DCA grid with one level filled (the equity identity of core.trading.book holds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.positions import apply_entry_fill
from core.settings import load_settings
from core.trading.book import Book
from tests.trading_helpers import dca_grid

S = load_settings()
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_snapshot_when_one_grid_level_filled_then_totals_and_row_are_hand_checked() -> None:
    pos = dca_grid(S, T0)
    apply_entry_fill(pos, 0, T0 + timedelta(hours=1), 100.0, 0.25)  # level 0: 1.0 unit at 100, fee 0.25
    book = Book.empty(1000.0)
    book.cash = 1000.0 - 100.0 - 0.25
    book.positions[pos.position_id] = pos

    totals, rows = book.snapshot({"BTC": 110.0})

    # equity = cash + 1.0 x 110; open notional = 110 held + the resting level's 100 (1.25 x 80).
    assert totals["equity"] == 899.75 + 110.0
    assert totals["open_notional"] == 110.0 + 100.0
    assert totals["unrealised_pnl"] == 1.0 * (110.0 - 100.0) - 0.25
    assert totals["equity"] == totals["capital"] + totals["realised_pnl"] + totals["unrealised_pnl"]
    assert [(r["symbol"], r["quantity"], r["avg_price"], r["mark"], r["resting_levels"]) for r in rows] == [
        ("BTC", 1.0, 100.0, 110.0, 1)
    ]
    assert book.snapshot({"ETH": 5.0})[1][0]["mark"] is None  # no mark for BTC: shown as unknown, valued at cost
