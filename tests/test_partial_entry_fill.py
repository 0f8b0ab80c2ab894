"""core.positions.apply_partial_entry_fill / complete_entry_level: a live level booked part by part
ends exactly where the whole-level rule (apply_entry_fill, used by backtests and paper) would, and the
part booked survives the position record's round trip (what the journal stores)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.positions import (
    ManagedPosition,
    apply_entry_fill,
    apply_partial_entry_fill,
    complete_entry_level,
)
from core.settings import load_settings
from tests.trading_helpers import dca_grid

S = load_settings()
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _grid() -> ManagedPosition:
    return dca_grid(S, T0)


def test_partial_entry_fill_when_level_books_in_two_parts_then_equals_the_whole_level_fill() -> None:
    whole, parts = _grid(), _grid()
    t1, t2 = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    apply_entry_fill(whole, 1, t1, 80.0, 0.25)
    first = apply_partial_entry_fill(parts, 1, t1, 80.0, 0.5, 0.1)
    # After the first part: 0.5 held at 80, the stop live (80 * 0.95 = 76), the level rests for 0.75.
    assert (first.quantity, first.fee) == (0.5, 0.1)
    assert (parts.quantity, parts.avg_price, parts.fees, parts.status) == (0.5, 80.0, 0.1, "open")
    assert parts.stop_loss_price == pytest.approx(76.0) and parts.entry_ts == t1
    assert parts.max_hold_until == t1 + timedelta(hours=10)
    lv = parts.entry_levels[1]
    assert lv.resting and lv.remaining == 0.75 and parts.resting_levels == 2
    assert parts.resting_notional == pytest.approx(100.0 * 1.0 + 80.0 * 0.75)
    apply_partial_entry_fill(parts, 1, t2, 80.0, 0.75, 0.15)
    complete_entry_level(parts, 1)
    assert lv.filled and not lv.resting and lv.quantity == 1.25 and parts.resting_levels == 1
    assert (parts.quantity, parts.avg_price, parts.fees) == (whole.quantity, whole.avg_price, whole.fees)
    assert (parts.entry_ts, parts.highest_price, lv.fill_ts) == (whole.entry_ts, whole.highest_price, t1)
    with pytest.raises(ValueError, match="already filled"):
        apply_partial_entry_fill(parts, 1, t2, 80.0, 0.1, 0.0)


def test_partial_entry_fill_when_parts_at_two_prices_then_vwap_and_position_average_hand_checked() -> None:
    pos = _grid()
    apply_entry_fill(pos, 0, T0 + timedelta(hours=1), 100.0, 0.25)  # 1.0 at 100
    apply_partial_entry_fill(pos, 1, T0 + timedelta(hours=2), 80.0, 0.5, 0.1)
    apply_partial_entry_fill(pos, 1, T0 + timedelta(hours=3), 79.0, 0.25, 0.05)
    # Level 1: (40 + 19.75) / 0.75 = 79.666..; position (100 + 59.75) / 1.75 = 91.2857..
    assert pos.entry_levels[1].fill_price == pytest.approx(59.75 / 0.75)
    assert pos.quantity == 1.75 and pos.avg_price == pytest.approx(159.75 / 1.75)
    assert pos.fees == pytest.approx(0.4) and pos.entry_fees == pytest.approx(0.4)
    assert pos.entry_ts == T0 + timedelta(hours=1)  # the first fill started the clock


def test_partial_entry_fill_when_position_record_round_trips_then_booked_part_kept() -> None:
    pos = _grid()
    apply_partial_entry_fill(pos, 1, T0 + timedelta(hours=2), 80.0, 0.5, 0.1)
    back = ManagedPosition.from_dict(pos.to_dict())
    assert back == pos and back.entry_levels[1].booked_quantity == 0.5
    old = pos.to_dict()  # a record written before the field existed reads as nothing booked
    for lv in old["entry_levels"]:
        del lv["booked_quantity"]
    assert [lv.booked_quantity for lv in ManagedPosition.from_dict(old).entry_levels] == [0.0, 0.0]


def test_partial_entry_fill_when_quantity_not_positive_or_nothing_booked_then_clear_error() -> None:
    pos = _grid()
    with pytest.raises(ValueError, match="finite quantity and price"):
        apply_partial_entry_fill(pos, 1, T0, 80.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="nothing booked"):
        complete_entry_level(pos, 1)
    assert pos.quantity == 0.0 and pos.entry_levels[1].resting
