"""Reconciliation on start against the local Hummingbot server: adopt, mark absent, refresh, report.

Every test also checks that reconciliation placed and cancelled nothing at the venue.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.domain import OrderStatus, OrderType, Side
from core.reconcile import reconcile
from core.storage.duckdb_store import DuckDBStore
from core.venues.hummingbot import HummingbotVenue
from core.venues.hummingbot_schemas import HummingbotOrderRequest
from core.venues.order_journal import OrderJournal
from tests.hummingbot_server import (
    PAIR,
    ExchangeState,
    HummingbotTestServer,
    make_order,
    settings_for,
)


@pytest.fixture
def hb() -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer(ExchangeState(marks={PAIR: 40_000.0})) as server:
        yield server


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.duckdb"


def start_process(hb: HummingbotTestServer, store_path: Path) -> tuple[HummingbotVenue, OrderJournal, DuckDBStore]:
    """What a (re)started process builds: a store on the same file, a journal and a venue."""
    store = DuckDBStore(store_path)
    journal = OrderJournal(store)
    return HummingbotVenue(settings_for(hb), journal, sleep=lambda s: None), journal, store


def writes(hb: HummingbotTestServer) -> list[str]:
    return [p for _, p in hb.state.requests if p == "/trading/orders" or p.endswith("/cancel")]


def test_reconcile_when_process_died_between_submit_and_record_then_adopts_and_never_doubles(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    # Arrange: the intent is journalled and the order reaches the venue, then the process dies
    # before it can record the acknowledgement (the POST is sent exactly as the venue sends it).
    venue, journal, store = start_process(hb, store_path)
    order = make_order("dca:BTC:crash", price=39_500.0)
    journal.record_intent(order)
    request = HummingbotOrderRequest(account_name="master_account", connector_name="kraken", trading_pair=PAIR,
                                     trade_type="BUY", amount=0.01, order_type="LIMIT", price=39_500.0)
    settings = settings_for(hb)
    ack = httpx.post(f"{hb.url}/trading/orders", json=request.model_dump(),
                     auth=(settings.execution.hummingbot_username, settings.execution.hummingbot_password.get_secret_value()))
    assert ack.status_code == 201
    venue.close()
    store.close()  # the process is gone; nothing recorded the venue's id
    # Act: restart and reconcile.
    venue, journal, store = start_process(hb, store_path)
    writes_before = len(writes(hb))
    report = reconcile(venue, journal)
    # Assert: adopted under our id with the venue's id; a resubmit is a no-op; still one order.
    assert report.adopted == ["dca:BTC:crash"] and report.clean
    adopted = journal.order("dca:BTC:crash")
    assert adopted.venue_order_id == ack.json()["order_id"] and adopted.status == OrderStatus.OPEN
    assert venue.submit(order).venue_order_id == adopted.venue_order_id
    assert len(hb.state.orders_at_venue()) == 1
    assert len(writes(hb)) == writes_before
    store.close()


def test_reconcile_when_intent_never_reached_the_venue_then_marked_not_at_venue_and_nothing_sent(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    venue, journal, store = start_process(hb, store_path)
    journal.record_intent(make_order("dca:BTC:lost"))
    # Too young to be declared absent: the venue creates orders asynchronously.
    young = reconcile(venue, journal)
    assert young.in_doubt == ["dca:BTC:lost"] and young.not_at_venue == []
    assert journal.intent("dca:BTC:lost").outcome is None
    report = reconcile(venue, journal, wall_now=datetime.now(UTC) + venue.settle)
    assert report.not_at_venue == ["dca:BTC:lost"] and report.adopted == []
    assert journal.intent("dca:BTC:lost").outcome == "not_at_venue"
    assert journal.order("dca:BTC:lost").status == OrderStatus.REJECTED
    assert writes(hb) == [] and hb.state.orders_at_venue() == []
    # A second pass finds nothing left to do.
    again = reconcile(venue, journal)
    assert (again.adopted, again.not_at_venue, again.status_changes) == ([], [], [])
    store.close()


def test_reconcile_when_two_identical_intents_and_one_order_at_venue_then_oldest_adopted_other_absent(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    venue, journal, store = start_process(hb, store_path)
    journal.record_intent(make_order("first"))
    journal.record_intent(make_order("second"))  # same pair, side, amount and price
    hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                    "trade_type": "BUY", "amount": 0.01, "order_type": "LIMIT", "price": 39_000.0})
    report = reconcile(venue, journal, settle=timedelta(0))
    assert report.adopted == ["first"] and report.not_at_venue == ["second"]
    store.close()


def test_reconcile_when_orders_filled_while_down_then_status_and_fills_recorded_and_holdings_agree(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    venue, journal, store = start_process(hb, store_path)
    a = venue.submit(make_order("a", qty=0.01, price=39_000.0))
    b = venue.submit(make_order("b", qty=0.02, price=38_000.0))
    hb.state.fill(a.venue_order_id, 0.01)  # while the process was down
    hb.state.fill(b.venue_order_id, 0.005)
    report = reconcile(venue, journal)
    assert sorted(report.status_changes) == [("a", "open", "filled"), ("b", "open", "partially_filled")]
    assert len(report.new_fills) == 2
    assert journal.net_holdings() == {"BTC": pytest.approx(0.015)}
    assert report.balance_differences == {} and report.clean
    assert journal.order("b").filled_quantity == pytest.approx(0.005)
    assert writes(hb) == ["/trading/orders", "/trading/orders"]  # only the two submits
    store.close()


def test_reconcile_when_foreign_order_rests_at_venue_then_reported_not_cancelled(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    venue, journal, store = start_process(hb, store_path)
    foreign = hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                              "trade_type": "SELL", "amount": 0.5, "order_type": "LIMIT", "price": 90_000.0})
    report = reconcile(venue, journal)
    assert report.unknown_open_orders == [foreign["order_id"]] and not report.clean
    assert hb.state.orders[foreign["order_id"]]["status"] == "OPEN" and writes(hb) == []
    assert "unknown_open_orders" in report.summary()
    store.close()


def test_reconcile_when_holdings_differ_from_venue_balance_then_reported(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    venue, journal, store = start_process(hb, store_path)
    venue.submit(make_order("m", order_type=OrderType.MARKET, price=None, qty=0.02))
    report = reconcile(venue, journal, expected_holdings={"BTC": 0.05, "ETH": 0.0})
    assert report.balance_differences == {"BTC": (0.05, pytest.approx(0.02))}
    assert not report.clean
    store.close()


def test_reconcile_when_known_open_order_vanished_from_venue_then_reported_missing(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    venue, journal, store = start_process(hb, store_path)
    placed = venue.submit(make_order("gone"))
    hb.state.forget(placed.venue_order_id)
    report = reconcile(venue, journal)
    assert report.missing_at_venue == ["gone"] and not report.clean
    assert journal.order("gone").status == OrderStatus.OPEN  # left for a person to decide
    store.close()


def test_reconcile_when_everything_agrees_then_clean_report(hb: HummingbotTestServer, store_path: Path) -> None:
    venue, journal, store = start_process(hb, store_path)
    venue.submit(make_order("ok", side=Side.BUY))
    report = reconcile(venue, journal)
    assert report.clean and report.summary() == "reconciliation: journal and venue agree"
    store.close()


def test_reconcile_when_journal_lives_in_either_store_backend_then_crash_is_adopted(
    hb: HummingbotTestServer, store: object
) -> None:
    # Same crash as above, with the journal in DuckDB and in the real Postgres (the `store` fixture).
    journal = OrderJournal(store)  # type: ignore[arg-type]
    venue = HummingbotVenue(settings_for(hb), journal, sleep=lambda s: None)
    journal.record_intent(make_order("dca:BTC:pg", price=39_100.0))
    hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                    "trade_type": "BUY", "amount": 0.01, "order_type": "LIMIT", "price": 39_100.0})
    report = reconcile(venue, journal)
    assert report.adopted == ["dca:BTC:pg"]
    assert journal.intent("dca:BTC:pg").outcome == "adopted"
    assert journal.order("dca:BTC:pg").venue_order_id == hb.state.orders_at_venue()[0]["order_id"]
    assert venue.submit(make_order("dca:BTC:pg", price=39_100.0)).status == OrderStatus.OPEN
    assert len(hb.state.orders_at_venue()) == 1 and writes(hb) == []


def test_reconcile_when_a_fill_just_happened_then_fresh_balances_show_no_phantom_difference(
    hb: HummingbotTestServer, store_path: Path
) -> None:
    venue, journal, store = start_process(hb, store_path)
    venue.submit(make_order("mkt", order_type=OrderType.MARKET, price=None, qty=0.00065322))
    # The server's cached state still says no BTC (its 5-minute loop has not run); the fill is real.
    assert venue.balances(refresh=False).get("BTC") is None
    report = reconcile(venue, journal)
    assert report.new_fills and report.balance_differences == {} and report.clean
    assert journal.net_holdings() == {"BTC": pytest.approx(0.00065322)}
    store.close()


def test_reconcile_when_more_than_1000_orders_and_trades_since_the_crash_then_all_seen_through_time_windows(
    store_path: Path,
) -> None:
    from tests.hummingbot_server import ManualClock

    sim = ManualClock(datetime.now(UTC) - timedelta(hours=2))
    with HummingbotTestServer(ExchangeState(marks={PAIR: 60_000.0}, clock=sim)) as hb:
        venue, journal, store = start_process(hb, store_path)
        order = make_order("ours", qty=0.001, price=59_000.0)
        journal.record_intent(order, recorded_ts=sim())  # crashed before sending was recorded
        for i in range(1_200):  # then a flood of fills by another bot on the account
            hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                            "trade_type": "BUY", "amount": 0.0001, "order_type": "MARKET"})
            hb.state.settle()
            sim.advance(1)
            if i == 600:  # ours reached the venue in the middle of it
                hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                                "trade_type": "BUY", "amount": 0.001, "order_type": "LIMIT", "price": 59_000.0})
                hb.state.settle()
        report = reconcile(venue, journal, settle=timedelta(0))
        assert report.adopted == ["ours"]
        assert len(report.unknown_fills) == 1_200  # every foreign trade seen, none lost to the row cap
        assert writes(hb) == []
        store.close()
