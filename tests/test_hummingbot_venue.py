"""HummingbotVenue against a real local HTTP server speaking the Hummingbot API routes.

Each failure is injected at the server (timeouts that still place the order, 500 before/after placing,
429, 401) and the test counts what reached the exchange: a retry must never double an order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import core.venues.hummingbot as hummingbot_module
from core.domain import OrderStatus, OrderType
from core.errors import TemporaryVenueError, VenueError
from core.storage.duckdb_store import DuckDBStore
from core.venues.base import Venue
from core.venues.hummingbot import HummingbotVenue, UnknownOrderError
from core.venues.order_journal import OrderJournal
from tests.hummingbot_server import PAIR, ExchangeState, HummingbotTestServer, make_order, settings_for

@pytest.fixture
def hb() -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer(ExchangeState(marks={PAIR: 40_000.0, "ETH-USD": 2_000.0})) as server:
        yield server


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[OrderJournal]:
    store = DuckDBStore(tmp_path / "journal.duckdb")
    yield OrderJournal(store)
    store.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def venue(hb: HummingbotTestServer, journal: OrderJournal, sleeps: list[float]) -> Iterator[HummingbotVenue]:
    v = HummingbotVenue(settings_for(hb), journal, sleep=sleeps.append)
    yield v
    v.close()


def place_count(hb: HummingbotTestServer) -> int:
    return sum(1 for r in hb.state.requests if r == ("POST", "/trading/orders"))


def test_venue_when_built_then_implements_the_venue_contract(venue: HummingbotVenue) -> None:
    assert isinstance(venue, Venue)


def test_submit_when_limit_order_then_one_resting_order_with_hummingbot_id(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    # Act
    placed = venue.submit(make_order())
    # Assert: the venue named the order; we keep our id and record theirs.
    [at_venue] = hb.state.orders_at_venue()
    assert placed.client_order_id == "dca:BTC:1"
    assert placed.venue_order_id == at_venue["order_id"] != placed.client_order_id
    assert placed.status == OrderStatus.OPEN
    assert (at_venue["trading_pair"], at_venue["trade_type"], at_venue["order_type"]) == (PAIR, "BUY", "LIMIT")
    assert (at_venue["amount"], at_venue["price"]) == (0.01, 39_000.0)
    assert journal.intent("dca:BTC:1").outcome == "acknowledged"
    assert journal.order("dca:BTC:1") == placed


def test_submit_when_sending_then_intent_is_in_the_journal_before_the_request_arrives(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    seen: list[object] = []
    hb.state.on_place = lambda body: seen.append(journal.intent("dca:BTC:1"))
    venue.submit(make_order())
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0].order.quantity == 0.01 and seen[0].outcome is None  # type: ignore[attr-defined]


def test_submit_when_same_client_id_twice_then_one_order(venue: HummingbotVenue, hb: HummingbotTestServer) -> None:
    first = venue.submit(make_order())
    second = venue.submit(make_order())
    assert first == second
    assert len(hb.state.orders_at_venue()) == 1 and place_count(hb) == 1


def test_submit_when_timeout_after_placing_then_adopts_the_placed_order_without_resending(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    hb.state.delay = 2.5  # past the client's 1 s timeout; the order is placed before the wait
    hb.state.fail_next("place", "timeout_after_place")
    placed = venue.submit(make_order())
    [at_venue] = hb.state.orders_at_venue()
    assert placed.venue_order_id == at_venue["order_id"]
    assert place_count(hb) == 1
    assert journal.intent("dca:BTC:1").outcome == "adopted"


def test_submit_when_500_before_placing_then_retried_once_and_one_order(
    venue: HummingbotVenue, hb: HummingbotTestServer, sleeps: list[float]
) -> None:
    hb.state.fail_next("place", "500_before")
    placed = venue.submit(make_order())
    assert place_count(hb) == 2  # searched, found nothing, resent
    assert [o["order_id"] for o in hb.state.orders_at_venue()] == [placed.venue_order_id]
    assert sleeps == [0.01]  # one backoff before the resend


def test_submit_when_500_after_placing_then_found_by_search_and_not_resent(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    hb.state.fail_next("place", "500_after")
    placed = venue.submit(make_order())
    assert place_count(hb) == 1
    assert [o["order_id"] for o in hb.state.orders_at_venue()] == [placed.venue_order_id]


def test_submit_when_ack_is_unreadable_then_treated_as_ambiguous_and_adopted(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    hb.state.fail_next("place", "bad_ack")
    placed = venue.submit(make_order())
    assert place_count(hb) == 1
    assert [o["order_id"] for o in hb.state.orders_at_venue()] == [placed.venue_order_id]


def test_submit_when_identical_order_already_resting_then_ambiguous_failure_does_not_adopt_it(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    # Arrange: an identical order of ours already placed (claimed by its own intent).
    first = venue.submit(make_order("dca:BTC:1"))
    hb.state.fail_next("place", "500_before")
    # Act: the same pair/side/amount/price under another id fails ambiguously.
    second = venue.submit(make_order("dca:BTC:2"))
    # Assert: the claimed order is not mistaken for the new one; the new one is resent.
    assert second.venue_order_id != first.venue_order_id
    assert len(hb.state.orders_at_venue()) == 2


def test_submit_when_rate_limited_then_waits_and_resends_without_doubling(
    venue: HummingbotVenue, hb: HummingbotTestServer, sleeps: list[float]
) -> None:
    hb.state.fail_next("place", "429")
    venue.submit(make_order())
    assert place_count(hb) == 2 and len(hb.state.orders_at_venue()) == 1
    assert len(sleeps) == 1


def test_submit_when_401_then_clear_error_without_retry(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal, sleeps: list[float]
) -> None:
    hb.state.fail_next("place", "401")
    with pytest.raises(VenueError, match="refused the credentials") as err:
        venue.submit(make_order())
    assert not isinstance(err.value, TemporaryVenueError)
    assert "s3cret" not in str(err.value)
    assert place_count(hb) == 1 and sleeps == [] and hb.state.orders_at_venue() == []
    assert journal.intent("dca:BTC:1").outcome == "not_at_venue"
    assert journal.order("dca:BTC:1").status == OrderStatus.REJECTED


def test_requests_when_password_wrong_then_venue_error_names_the_setting_not_the_secret(
    hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    v = HummingbotVenue(settings_for(hb, hummingbot_password="wrong-pass"), journal, sleep=lambda s: None)
    with pytest.raises(VenueError, match="execution.hummingbot_password") as err:
        v.balances()
    assert "wrong-pass" not in str(err.value)
    assert len(hb.state.requests) == 1  # no retry on 401


def test_submit_when_venue_keeps_failing_then_temporary_error_and_intent_kept_for_a_later_search(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    hb.state.fail_next("place", *["500_before"] * 4)  # max_retries=3 -> 4 attempts
    with pytest.raises(TemporaryVenueError, match="searched for before any resend"):
        venue.submit(make_order())
    assert hb.state.orders_at_venue() == [] and place_count(hb) == 4
    assert journal.intent("dca:BTC:1").outcome is None and journal.order("dca:BTC:1") is None
    # Later the venue recovers: the same id is placed exactly once.
    venue.submit(make_order())
    assert len(hb.state.orders_at_venue()) == 1


def test_submit_when_retried_by_caller_after_placed_but_unconfirmed_then_adopts_instead_of_resending(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    # The order is placed but the answer times out, and every search fails too: submit gives up.
    hb.state.delay = 2.5
    hb.state.fail_next("place", "timeout_after_place")
    hb.state.fail_next("search", *["500_before"] * 4)
    with pytest.raises(TemporaryVenueError):
        venue.submit(make_order())
    assert len(hb.state.orders_at_venue()) == 1
    # The caller retries the same id: the search now answers and the order is adopted, not resent.
    placed = venue.submit(make_order())
    assert place_count(hb) == 1
    assert placed.venue_order_id == hb.state.orders_at_venue()[0]["order_id"]


def test_cancel_when_resting_then_cancelled_at_the_venue(venue: HummingbotVenue, hb: HummingbotTestServer) -> None:
    placed = venue.submit(make_order())
    cancelled = venue.cancel(placed.client_order_id)
    assert cancelled.status == OrderStatus.CANCELLED
    assert hb.state.orders[placed.venue_order_id]["status"] == "CANCELLED"
    assert venue.open_orders() == []


def test_cancel_when_order_id_unknown_then_clear_error_and_nothing_sent(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    with pytest.raises(UnknownOrderError, match="not in the journal"):
        venue.cancel("never-placed")
    assert hb.state.requests == []


def test_cancel_when_venue_answers_404_for_a_filled_order_then_returns_it_filled(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    placed = venue.submit(make_order())
    hb.state.fill(placed.venue_order_id, 0.01)  # filled while we were not looking
    result = venue.cancel(placed.client_order_id)
    assert result.status == OrderStatus.FILLED and result.filled_quantity == 0.01
    assert any(path.endswith("/cancel") for _, path in hb.state.requests)  # 404 came from the venue


def test_cancel_when_venue_lost_the_order_then_unknown_order_error(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    placed = venue.submit(make_order())
    del hb.state.orders[placed.venue_order_id]
    with pytest.raises(UnknownOrderError, match="does not know order"):
        venue.cancel(placed.client_order_id)


def test_fills_when_partial_then_full_then_status_and_fills_follow(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    placed = venue.submit(make_order(qty=0.01, price=39_000.0))
    hb.state.fill(placed.venue_order_id, 0.004)
    part = venue.get_order(placed.client_order_id)
    assert part.status == OrderStatus.PARTIALLY_FILLED and part.filled_quantity == pytest.approx(0.004)
    assert [o.client_order_id for o in venue.open_orders()] == [placed.client_order_id]
    hb.state.set_mark(PAIR, 38_900.0)  # the market trades through the limit: the rest fills
    done = venue.get_order(placed.client_order_id)
    fills = venue.fills_since(placed.client_order_id)
    assert done.status == OrderStatus.FILLED and done.filled_quantity == pytest.approx(0.01)
    assert [f.quantity for f in fills] == pytest.approx([0.004, 0.006])
    # maker fee 0.25% of 0.004 * 39000 = 0.39 and of 0.006 * 39000 = 0.585
    assert [f.fee for f in fills] == pytest.approx([0.39, 0.585])
    assert all(f.liquidity == "maker" and f.client_order_id == placed.client_order_id for f in fills)
    assert venue.open_orders() == []


def test_market_buy_when_filled_then_balances_and_trade_history_match(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    placed = venue.submit(make_order(order_type=OrderType.MARKET, price=None, qty=0.02))
    [fill] = venue.fills_since()
    balances = venue.balances()
    # 0.02 BTC at 40000 = 800 USD, taker fee 0.4% = 3.2 USD
    assert fill.price == 40_000.0 and fill.fee == pytest.approx(3.2) and fill.liquidity == "taker"
    assert balances["BTC"] == pytest.approx(0.02)
    assert balances["USD"] == pytest.approx(10_000 - 800 - 3.2)
    assert venue.get_order(placed.client_order_id).status == OrderStatus.FILLED
    assert venue.journal.net_holdings() == {"BTC": pytest.approx(0.02)}


def test_balances_when_limit_order_rests_then_available_excludes_the_locked_quote(
    venue: HummingbotVenue,
) -> None:
    venue.submit(make_order(qty=0.01, price=39_000.0))
    assert venue.balances()["USD"] == pytest.approx(10_000)
    assert venue.balances(available=True)["USD"] == pytest.approx(10_000 - 390)


def test_open_orders_when_foreign_and_final_orders_exist_then_only_our_resting_orders(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    resting = venue.submit(make_order("a", price=39_000.0))
    venue.submit(make_order("b", order_type=OrderType.MARKET, price=None))  # filled at once
    hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                    "trade_type": "SELL", "amount": 1.0, "order_type": "LIMIT", "price": 90_000.0})
    assert [o.client_order_id for o in venue.open_orders()] == [resting.client_order_id]


def test_open_orders_when_more_than_one_page_then_follows_the_cursor(
    venue: HummingbotVenue, hb: HummingbotTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hummingbot_module, "_PAGE_LIMIT", 2)
    for i in range(5):
        venue.submit(make_order(f"grid-{i}", price=39_000.0 - 100 * i))
    assert sorted(o.client_order_id for o in venue.open_orders()) == [f"grid-{i}" for i in range(5)]
    assert sum(1 for r in hb.state.requests if r[1] == "/trading/orders/active") == 3


def test_reads_when_server_errors_then_retried_with_backoff(
    venue: HummingbotVenue, hb: HummingbotTestServer, sleeps: list[float]
) -> None:
    hb.state.fail_next("state", "500_before", "429")
    assert venue.balances()["USD"] == 10_000.0
    assert len(sleeps) == 2 and sleeps[1] >= sleeps[0]


def test_logs_when_retrying_then_password_never_appears(
    venue: HummingbotVenue, hb: HummingbotTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hb.state.fail_next("place", "500_before")
    venue.submit(make_order())
    assert caplog.records  # the retry was logged
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(venue.settings)


def test_client_when_unreachable_then_temporary_error_after_retries(journal: OrderJournal) -> None:
    with HummingbotTestServer() as server:
        settings = settings_for(server, max_retries=1)
    v = HummingbotVenue(settings, journal, sleep=lambda s: None)  # the server is gone
    with pytest.raises(TemporaryVenueError, match="unreachable"):
        v.balances()
    with pytest.raises(httpx.HTTPError):
        httpx.get(settings.execution.hummingbot_url, timeout=0.5)
