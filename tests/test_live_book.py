"""core.trading.live: the book driven by a live venue (HummingbotVenue over the local Hummingbot API
server, a real HTTP server), no Prefect. A DCA grid of three limit buys: two fill at the venue, the
third is cancelled at the venue on expiry, the take-profit rule fires on a later bar and the market
SELL's fill closes the trade. Numbers are hand-computed from the venue's prices and fees."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.domain import ExitReason, Order, OrderType, Scores, Signal, StrategyName, TradePlan
from core.positions import Bar, Exited, Expired, Filled, ManagedPosition
from core.settings import Settings
from core.storage.duckdb_store import DuckDBStore
from core.trading.account import Account
from core.trading.entries import plan_entry
from core.trading.live import LiveDriver, apply_bar_live, apply_venue_fills
from core.venues.hummingbot import HummingbotVenue
from core.venues.order_journal import OrderJournal
from tests.hummingbot_server import (
    MAKER_FEE,
    PAIR,
    TAKER_FEE,
    ExchangeState,
    HummingbotTestServer,
    settings_for,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)


class SimClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0 + timedelta(hours=1, minutes=5))


@pytest.fixture
def hb(clock: SimClock) -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer(ExchangeState(marks={PAIR: 40_000.0}, clock=clock)) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(tmp_path / "store.duckdb")
    s.init_schema()
    yield s
    s.close()


def _signal() -> Signal:
    plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=(40_000.0, 39_600.0, 39_200.0), take_profit_pct=0.05,
                     stop_loss_pct=0.08, max_hold=timedelta(hours=72), entry_expiry=timedelta(hours=24))
    return Signal(symbol="BTC", strategy=StrategyName.DCA, timeframe="1h", ts=T0, price=40_000.0, plan=plan)


def test_live_book_when_grid_fills_expires_and_tp_fires_then_venue_orders_and_ledger_match(
    hb: HummingbotTestServer, clock: SimClock, store: DuckDBStore
) -> None:
    settings = settings_for(hb, mode="live", confirm_live=True)
    venue = HummingbotVenue(settings, OrderJournal(store), sleep=lambda s: None)
    pf = Account.load(store, settings, LiveDriver(venue))
    sig = _signal()
    # Act 1: open -> three limit buys at the venue; level 0 (at the 40,000 mark) fills there at once,
    # level 1 when the market drops to 39,500.
    pos = pf.open(plan_entry(sig, Scores(confidence=0.7, take_profit_pct=0.05, stop_loss_pct=0.08, hold=timedelta(hours=72)), 300.0, settings))
    hb.state.set_mark(PAIR, 39_500.0)
    filled = apply_venue_fills(pf, venue.fills_since())
    # Assert 1: both fills booked once at the venue's prices and maker fees.
    q0, q1 = 100 / 40_000, 100 / 39_600
    assert [type(e) for e in filled] == [Filled, Filled]
    assert pos.quantity == pytest.approx(q0 + q1)
    assert pos.avg_price == pytest.approx(200 / (q0 + q1))
    assert pos.fees == pytest.approx(200 * MAKER_FEE)
    assert pf.book.cash == pytest.approx(pf.book.capital - 200 - 200 * MAKER_FEE)
    assert apply_venue_fills(pf, venue.fills_since()) == []  # applied once
    # Act 2: the entry bar (the fill at 01:05 is inside it): no exit, nothing sent.
    assert apply_bar_live(pf, "BTC", Bar(T0 + timedelta(hours=1), 39_900.0, 40_100.0, 39_500.0, 39_800.0)) == []
    # Act 3: the bar at 01:00 next day reaches the 24h expiry and the TP (avg * 1.05 ~ 41,790).
    hb.state.marks[PAIR] = 41_900.0
    clock.at = T0 + timedelta(hours=26, minutes=1)
    events = apply_bar_live(pf, "BTC", Bar(T0 + timedelta(hours=25), 41_000.0, 42_000.0, 40_900.0, 41_900.0))
    closed = apply_venue_fills(pf, venue.fills_since())
    # Assert: level 2 cancelled at the venue; one market SELL of the held quantity; the trade's P&L
    # and fees are the venue's; the ledger's cash moved exactly as the venue's USD balance did.
    assert [type(e) for e in events] == [Expired, Exited] and events[1].reason is ExitReason.TAKE_PROFIT
    orders = {o["order_id"]: o for o in hb.state.orders_at_venue()}
    level2 = orders[pf.book.orders[f"{pos.position_id}:e2"].venue_order_id]
    assert level2["status"] == "CANCELLED"
    sells = [o for o in orders.values() if o["trade_type"] == "SELL"]
    assert len(sells) == 1 and sells[0]["order_type"] == "MARKET" and sells[0]["amount"] == pytest.approx(q0 + q1)
    (trade,) = pf.book.trades.values()
    exit_fee = 41_900 * (q0 + q1) * TAKER_FEE
    assert [type(e) for e in closed] == [Exited] and trade.exit_reason is ExitReason.TAKE_PROFIT
    assert trade.exit_price == 41_900.0 and trade.exit_ts == clock.at
    assert trade.fees == pytest.approx(200 * MAKER_FEE + exit_fee)
    assert trade.net_pnl == pytest.approx(41_900 * (q0 + q1) - 200 - 200 * MAKER_FEE - exit_fee)
    assert pf.book.cash == pytest.approx(pf.book.capital + hb.state.balances["USD"] - 10_000.0)
    assert pf.book.realised_pnl == pytest.approx(trade.net_pnl) and pos.status == "closed"
    # A rerun changes nothing; a restart rebuilds the same book and sends nothing.
    placed = hb.state.place_requests
    assert apply_venue_fills(pf, venue.fills_since()) == []
    again = Account.load(store, settings, LiveDriver(HummingbotVenue(settings, OrderJournal(store), sleep=lambda s: None)))
    assert again.book.cash == pytest.approx(pf.book.cash) and again.book.trades == pf.book.trades
    assert hb.state.place_requests == placed
    venue.close()


def _open_two_level_grid(
    hb: HummingbotTestServer, store: DuckDBStore, mark: float
) -> tuple[Settings, HummingbotVenue, Account, ManagedPosition]:
    """Live settings on `hb` with BTC marked at `mark`, and an $80 DCA grid of two Kraken-rounded levels
    (60,000.04 and 59,400.06; TP and SL 5 %, 72 h hold, 24 h expiry) signalled at T0 at that price and
    opened through the live account."""
    settings = settings_for(hb, mode="live", confirm_live=True)
    hb.state.marks[PAIR] = mark
    venue = HummingbotVenue(settings, OrderJournal(store), sleep=lambda s: None)
    pf = Account.load(store, settings, LiveDriver(venue))
    plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=(60_000.04, 59_400.06), take_profit_pct=0.05,
                     stop_loss_pct=0.05, max_hold=timedelta(hours=72), entry_expiry=timedelta(hours=24))
    sig = Signal(symbol="BTC", strategy=StrategyName.DCA, timeframe="1h", ts=T0, price=mark, plan=plan)
    scores = Scores(confidence=0.7, take_profit_pct=0.05, stop_loss_pct=0.05, hold=timedelta(hours=72))
    return settings, venue, pf, pf.open(plan_entry(sig, scores, 80.0, settings))


def test_live_book_when_dca_level_fills_in_part_then_expires_and_stop_fires_then_booked_by_venue_amounts(
    hb: HummingbotTestServer, clock: SimClock, store: DuckDBStore
) -> None:
    """$80 over two Kraken-rounded DCA levels: level 0 fills whole, level 1 fills 0.0003 BTC and is
    cancelled at expiry, then the stop fires. Every quantity is the venue's lot-rounded amount."""
    from decimal import ROUND_FLOOR, Decimal

    settings, venue, pf, pos = _open_two_level_grid(hb, store, 60_000.0)

    def lot(x: float) -> float:
        return float((Decimal(repr(x)) / Decimal("1e-8")).to_integral_value(rounding=ROUND_FLOOR) * Decimal("1e-8"))

    q0, q1 = lot(40 / 60_000.04), lot(40 / 59_400.06)
    assert (q0, q1) == (0.00066666, 0.00067339)  # hand-checked: 0.000666666222.. and 0.000673399.. floored
    e0, e1 = pf.book.orders[f"{pos.position_id}:e0"], pf.book.orders[f"{pos.position_id}:e1"]
    assert (e0.quantity, e0.price, e1.quantity, e1.price) == (q0, 60_000.0, q1, 59_400.0)  # buys rounded down
    # Level 0 crosses the 60,000 mark when created; level 1 fills 0.0003 of 0.00067339 while resting.
    hb.state.settle()
    hb.state.fill(e1.venue_order_id, 0.0003)
    booked = apply_venue_fills(pf, venue.fills_since())
    # Both are booked at once: level 0 whole, level 1's 0.0003 while its order still works for the rest.
    assert [(type(e), e.quantity) for e in booked] == [(Filled, q0), (Filled, 0.0003)]
    qty = q0 + 0.0003
    cost = 60_000.0 * q0 + 59_400.0 * 0.0003
    assert pos.quantity == pytest.approx(qty, abs=1e-12) and pos.avg_price == pytest.approx(cost / qty)
    lv1 = pos.entry_levels[1]
    assert lv1.resting and lv1.booked_quantity == 0.0003 and pf.book.orders[e1.client_order_id].filled_quantity == 0.0003
    # The next day's first bar: level 1 expires and is cancelled at the venue with its part filled.
    clock.at = T0 + timedelta(hours=25, minutes=1)
    apply_bar_live(pf, "BTC", Bar(T0 + timedelta(hours=1), 60_000.0, 60_100.0, 59_900.0, 60_000.0))
    events = apply_bar_live(pf, "BTC", Bar(T0 + timedelta(hours=25), 60_000.0, 60_050.0, 59_950.0, 60_000.0))
    assert [type(e) for e in events] == [Expired]
    assert hb.state.orders[e1.venue_order_id]["status"] in ("PENDING_CANCEL", "CANCELLED", "PARTIALLY_FILLED")
    hb.state.settle()
    assert apply_venue_fills(pf, venue.fills_since()) == []  # the part it bought was booked already, once
    assert not lv1.resting and pos.quantity == pytest.approx(qty, abs=1e-12)
    # A bar falls through the stop (avg * 0.95 = 56,814.x): a market SELL of exactly what is held.
    hb.state.marks[PAIR] = 56_000.0
    clock.at = T0 + timedelta(hours=27, minutes=1)
    events = apply_bar_live(pf, "BTC", Bar(T0 + timedelta(hours=26), 58_000.0, 58_100.0, 55_900.0, 56_000.0))
    assert [type(e) for e in events] == [Exited] and events[0].reason is ExitReason.STOP_LOSS
    closed = apply_venue_fills(pf, venue.fills_since())
    (trade,) = pf.book.trades.values()
    [sell] = [o for o in hb.state.orders_at_venue() if o["trade_type"] == "SELL"]
    assert sell["amount"] == pytest.approx(qty, abs=1e-12) and sell["order_type"] == "MARKET"
    entry_fees, exit_fee = cost * MAKER_FEE, 56_000.0 * qty * TAKER_FEE
    assert [type(e) for e in closed] == [Exited] and trade.exit_price == 56_000.0
    assert trade.fees == pytest.approx(entry_fees + exit_fee)
    assert trade.net_pnl == pytest.approx(56_000.0 * qty - cost - entry_fees - exit_fee)
    # hand-checked: 0.00096666 BTC sold for 54.13296; cost 39.9996 + 17.82 = 57.8196; fees
    # 57.8196 * 0.25% = 0.144549 and 54.13296 * 0.4% = 0.21653184; net 54.13296 - 57.8196 - 0.36108084
    assert trade.net_pnl == pytest.approx(-4.04772084, abs=1e-8)
    assert pf.book.cash == pytest.approx(pf.book.capital + hb.state.balances["USD"] - 10_000.0)
    assert venue.journal.net_holdings()["BTC"] == pytest.approx(hb.state.balances.get("BTC", 0.0), abs=1e-12)
    venue.close()


def test_live_sizing_when_venue_holds_less_than_book_then_sized_on_fresh_venue_balance(
    hb: HummingbotTestServer, store: DuckDBStore
) -> None:
    """Live sizing reads the venue's quote balance fresh (`refresh: true`), not the server's 5-minute
    cache: after the balance drops at the venue, the next view already sizes on it."""
    settings = settings_for(hb, mode="live", confirm_live=True)
    venue = HummingbotVenue(settings, OrderJournal(store), sleep=lambda s: None)
    account = Account.load(store, settings, LiveDriver(venue))
    assert venue.balances(refresh=False)["USD"] == 10_000.0  # warms the server's cache
    assert account.sizing_view({}).equity == account.book.cash == settings.risk.capital  # the book is lower
    hb.state.balances["USD"] = 300.0  # e.g. a withdrawal: the cache still says 10,000
    assert venue.balances(refresh=False)["USD"] == 10_000.0
    assert account.sizing_view({}).equity == 300.0


# --- partial fills booked as they come (issue 10) -------------------------------------------------------
# A $80 grid of two Kraken-rounded DCA levels with the market at 61,000: neither level crosses it, so
# only the fills the exchange is told to make happen. Level 1 is 0.00067339 BTC at 59,400 (see above).
Q1 = 0.00067339


def _resting_grid(hb: HummingbotTestServer, store: DuckDBStore) -> tuple[Account, HummingbotVenue, ManagedPosition, Order]:
    settings, venue, pf, pos = _open_two_level_grid(hb, store, 61_000.0)
    hb.state.settle()  # both levels rest at the exchange
    e1 = pf.book.orders[f"{pos.position_id}:e1"]
    assert (e1.quantity, e1.price) == (Q1, 59_400.0) and apply_venue_fills(pf, venue.fills_since()) == []
    return pf, venue, pos, e1


def test_live_book_when_level_fills_in_two_parts_while_working_then_each_part_booked_once(
    hb: HummingbotTestServer, store: DuckDBStore
) -> None:
    pf, venue, pos, e1 = _resting_grid(hb, store)
    capital = pf.book.capital
    # Act 1: 0.0003 of 0.00067339 fills while the order works on.
    hb.state.fill(e1.venue_order_id, 0.0003)
    first = apply_venue_fills(pf, venue.fills_since())
    # Assert 1: booked at once. 0.0003 * 59,400 = 17.82; maker fee 17.82 * 0.25% = 0.04455.
    assert [(type(e), e.quantity, e.price) for e in first] == [(Filled, 0.0003, pytest.approx(59_400.0))]
    assert pos.quantity == 0.0003 and pos.avg_price == pytest.approx(59_400.0) and pos.status == "open"
    assert pos.fees == pytest.approx(0.04455, abs=1e-12) and pos.entry_ts is not None  # the stop exists now
    assert pf.book.cash == pytest.approx(capital - 17.82 - 0.04455, abs=1e-9)
    lv = pos.entry_levels[1]
    assert lv.resting and lv.booked_quantity == 0.0003 and pos.resting_levels == 2
    assert pf.book.orders[e1.client_order_id].filled_quantity == 0.0003
    assert pos.resting_notional == pytest.approx(60_000.0 * 0.00066666 + 59_400.0 * (Q1 - 0.0003))
    assert apply_venue_fills(pf, venue.fills_since()) == []  # nothing new: nothing booked again
    # Act 2: the rest, 0.00037339, fills: the order completes at the venue.
    hb.state.fill(e1.venue_order_id, 0.001)  # the exchange fills at most what remains
    second = apply_venue_fills(pf, venue.fills_since())
    # Assert 2: only the rest is booked; the level is filled with exactly its 0.00067339.
    # 0.00067339 * 59,400 = 39.999366; maker fee 0.099998415.
    assert [(type(e), e.quantity) for e in second] == [(Filled, pytest.approx(Q1 - 0.0003, abs=1e-15))]
    assert pos.quantity == pytest.approx(Q1, abs=1e-15) and pos.avg_price == pytest.approx(59_400.0)
    assert lv.filled and not lv.resting and lv.quantity == pytest.approx(Q1, abs=1e-15)
    assert pos.resting_levels == 1 and pf.book.orders[e1.client_order_id].status.value == "filled"
    assert pos.fees == pytest.approx(0.099998415, abs=1e-12)
    assert pf.book.cash == pytest.approx(capital - 39.999366 - 0.099998415, abs=1e-9)
    assert apply_venue_fills(pf, venue.fills_since()) == []  # rerun: nothing doubled
    assert pos.quantity == pytest.approx(Q1, abs=1e-15) and len(pf.book.fills) == 2
    assert venue.journal.net_holdings()["BTC"] == pytest.approx(hb.state.balances["BTC"], abs=1e-15)
    venue.close()


def test_live_book_when_restarted_after_partial_fill_then_same_position_and_only_remainder_booked(
    hb: HummingbotTestServer, store: DuckDBStore
) -> None:
    pf, venue, pos, e1 = _resting_grid(hb, store)
    hb.state.fill(e1.venue_order_id, 0.0003)
    apply_venue_fills(pf, venue.fills_since())
    venue.close()
    # Act: a restart rebuilds the book from the journal with a new venue object.
    settings = settings_for(hb, mode="live", confirm_live=True)
    venue2 = HummingbotVenue(settings, OrderJournal(store), sleep=lambda s: None)
    pf2 = Account.load(store, settings, LiveDriver(venue2))
    pos2 = pf2.book.positions[pos.position_id]
    # Assert: the same position, level still working for its rest; the old fill is not booked again.
    assert (pos2.quantity, pos2.avg_price, pos2.fees) == (pos.quantity, pos.avg_price, pos.fees)
    assert pos2.quantity == 0.0003 and pos2.avg_price == pytest.approx(59_400.0)
    assert pos2.entry_levels[1].booked_quantity == 0.0003 and pos2.entry_levels[1].resting
    assert pf2.book.cash == pf.book.cash
    assert apply_venue_fills(pf2, venue2.fills_since()) == []
    hb.state.fill(e1.venue_order_id, Q1)
    (rest,) = apply_venue_fills(pf2, venue2.fills_since())
    assert rest.quantity == pytest.approx(Q1 - 0.0003, abs=1e-15)
    assert pos2.quantity == pytest.approx(Q1, abs=1e-15) and pos2.entry_levels[1].filled
    assert pf2.book.cash == pytest.approx(pf2.book.capital - 39.999366 - 0.099998415, abs=1e-9)
    # A second restart agrees with the first book.
    pf3 = Account.load(store, settings, LiveDriver(venue2))
    assert pf3.book.positions[pos.position_id] == pos2 and pf3.book.cash == pf2.book.cash
    venue2.close()


def test_live_book_when_stop_fires_after_partial_fill_then_sell_is_booked_quantity_and_rest_cancelled(
    hb: HummingbotTestServer, clock: SimClock, store: DuckDBStore
) -> None:
    pf, venue, pos, e1 = _resting_grid(hb, store)
    hb.state.fill(e1.venue_order_id, 0.0003)  # at 01:05, inside the 01:00 bar
    apply_venue_fills(pf, venue.fills_since())
    # Act: the 02:00 bar falls through the stop (59,400 * 0.95 = 56,430); the market is at 56,000.
    hb.state.marks[PAIR] = 56_000.0
    clock.at = T0 + timedelta(hours=3, minutes=1)
    events = apply_bar_live(pf, "BTC", Bar(T0 + timedelta(hours=2), 58_000.0, 58_100.0, 55_900.0, 56_000.0))
    hb.state.settle()  # the cancels land, the market SELL fills
    closed = apply_venue_fills(pf, venue.fills_since())
    # Assert: both levels' resting parts cancelled at the venue, one SELL of exactly the 0.0003 held.
    assert [type(e) for e in events] == [Expired, Expired, Exited] and events[2].reason is ExitReason.STOP_LOSS
    e0 = pf.book.orders[f"{pos.position_id}:e0"]
    assert hb.state.orders[e0.venue_order_id]["status"] == "CANCELLED"
    assert hb.state.orders[e1.venue_order_id]["status"] == "CANCELLED"
    assert hb.state.orders[e1.venue_order_id]["filled_amount"] == 0.0003
    [sell] = [o for o in hb.state.orders_at_venue() if o["trade_type"] == "SELL"]
    assert sell["amount"] == 0.0003 and sell["order_type"] == "MARKET"
    # 0.0003 * 56,000 = 16.8; fees 0.04455 (entry) and 16.8 * 0.4% = 0.0672; net 16.8 - 17.82 - 0.11175.
    (trade,) = pf.book.trades.values()
    assert [type(e) for e in closed] == [Exited] and trade.exit_price == pytest.approx(56_000.0) and trade.quantity == 0.0003
    assert trade.fees == pytest.approx(0.04455 + 0.0672, abs=1e-12)
    assert trade.net_pnl == pytest.approx(-1.13175, abs=1e-9)
    assert pos.status == "closed" and not any(lv.resting for lv in pos.entry_levels)
    assert hb.state.balances.get("BTC", 0.0) == pytest.approx(0.0, abs=1e-15)
    assert pf.book.cash == pytest.approx(pf.book.capital + hb.state.balances["USD"] - 10_000.0, abs=1e-9)
    venue.close()
