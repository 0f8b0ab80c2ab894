"""HummingbotVenue against a real local HTTP server speaking the Hummingbot API routes.

Each failure is injected at the server (timeouts that still place the order, 500 before/after placing,
429, 401) and the test counts what reached the exchange: a retry must never double an order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

import core.venues.hummingbot as hummingbot_module
from core.domain import OrderStatus, OrderType, Side
from core.errors import ConfigError, TemporaryVenueError, VenueError
from core.storage.duckdb_store import DuckDBStore
from core.venues.base import Venue
from core.venues.hummingbot import (
    BelowMinimumError,
    HummingbotVenue,
    OrderInDoubtError,
    OrderRefusedError,
    UnknownOrderError,
    VenueConfigError,
)
from core.venues.order_journal import OrderJournal
from core.venues.trading_rules import BelowMinimum, SkipReason, UnknownPairError
from tests.hummingbot_server import (
    PAIR,
    ExchangeState,
    HummingbotTestServer,
    ManualClock,
    kraken_rule,
    make_order,
    settings_for,
)


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


def test_submit_when_timeout_after_placing_then_adopts_the_placed_order_without_resending_and_alerts(
    hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    alerts: list[str] = []
    venue = HummingbotVenue(settings_for(hb), journal, sleep=lambda s: None, alert=alerts.append)
    hb.state.delay = 2.5  # past the client's 1 s timeout; the order is placed before the wait
    hb.state.fail_next("place", "timeout_after_place")
    placed = venue.submit(make_order())
    [at_venue] = hb.state.orders_at_venue()
    assert placed.venue_order_id == at_venue["order_id"]
    assert place_count(hb) == 1
    assert journal.intent("dca:BTC:1").outcome == "adopted"
    # Handled without a resend, and said once: the venue lost an answer.
    assert len(alerts) == 1 and "dca:BTC:1" in alerts[0] and "adopted" in alerts[0] and at_venue["order_id"] in alerts[0]


def test_submit_when_500_before_placing_then_in_doubt_not_resent_and_alerted(
    hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    alerts: list[str] = []
    venue = HummingbotVenue(settings_for(hb), journal, sleep=lambda s: None, alert=alerts.append)
    hb.state.fail_next("place", "500_before")
    with pytest.raises(OrderInDoubtError, match="not sent again"):
        venue.submit(make_order())
    # Searched (active, history, trades), found nothing, and did NOT send again.
    assert place_count(hb) == 1 and hb.state.orders_at_venue() == []
    assert journal.intent("dca:BTC:1").outcome is None and len(alerts) == 1
    # A later submit of the same id searches again and still does not send.
    with pytest.raises(OrderInDoubtError):
        venue.submit(make_order())
    assert place_count(hb) == 1


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
    with pytest.raises(OrderInDoubtError) as err:
        venue.submit(make_order("dca:BTC:2"))
    second = err.value
    # Assert: the claimed order is not mistaken for the new one, and the new one is not resent.
    assert isinstance(second, OrderInDoubtError)
    assert [o["order_id"] for o in hb.state.orders_at_venue()] == [first.venue_order_id]


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


def test_submit_when_trading_rules_not_loaded_then_503_retried_without_search_and_placed_once(
    venue: HummingbotVenue, hb: HummingbotTestServer, sleeps: list[float]
) -> None:
    hb.state.rules_loaded = False
    hb.state.on_place = lambda body: setattr(hb.state, "rules_loaded", hb.state.place_requests >= 2)
    placed = venue.submit(make_order())
    assert place_count(hb) == 2 and len(sleeps) == 1
    assert not any(p == "/trading/orders/search" for _, p in hb.state.requests)  # 503 = nothing placed
    assert [o["order_id"] for o in hb.state.orders_at_venue()] == [placed.venue_order_id]


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
    hb.state.forget(placed.venue_order_id)
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
    monkeypatch.setattr(hummingbot_module, "PAGE_LIMIT", 2)
    for i in range(5):
        venue.submit(make_order(f"grid-{i}", price=39_000.0 - 100 * i))
    assert sorted(o.client_order_id for o in venue.open_orders()) == [f"grid-{i}" for i in range(5)]
    assert sum(1 for r in hb.state.requests if r[1] == "/trading/orders/active") == 3


def test_reads_when_server_errors_then_retried_with_backoff(
    venue: HummingbotVenue, hb: HummingbotTestServer, sleeps: list[float]
) -> None:
    hb.state.fail_next("state", "500_before", "500_before", "429")
    assert venue.balances()["USD"] == 10_000.0
    # Exponential backoff with jitter (0.01 then 0.02, + up to 0.01), then the server's Retry-After: 0.
    assert len(sleeps) == 3 and 0.01 <= sleeps[0] <= 0.02 <= sleeps[1] <= 0.03 and sleeps[2] == 0.0


def test_logs_when_retrying_then_password_never_appears(
    venue: HummingbotVenue, hb: HummingbotTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hb.state.fail_next("place", "429")
    venue.submit(make_order())
    assert any("retry 1/3" in r.getMessage() for r in caplog.records)  # the retry was logged
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


# --- Kraken's trading rules, the stale clock, history paging, fresh balances (issue 10) ------------

DCA_QTY = 40 / 61_234.56  # a $40 DCA level: 0.000653225784...


@pytest.fixture
def sim() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1))


@pytest.fixture
def hb_sim(sim: ManualClock) -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer(ExchangeState(marks={PAIR: 60_000.0, "ETH-USD": 2_000.0}, clock=sim)) as server:
        yield server


def test_submit_when_dca_sized_order_times_out_then_quantized_intent_is_found_and_not_resent(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    hb.state.fail_next("place", "timeout_after_place")
    placed = venue.submit(make_order(qty=DCA_QTY, price=39_000.04))
    # The intent holds what was sent (lot 1e-8, buy price down to the 0.1 tick), equal to the venue's row.
    intent = journal.intent("dca:BTC:1")
    assert (intent.order.quantity, intent.order.price) == (0.00065322, 39_000.0)
    [at_venue] = hb.state.orders_at_venue()
    assert (at_venue["amount"], at_venue["price"]) == (0.00065322, 39_000.0)
    assert placed.venue_order_id == at_venue["order_id"] and place_count(hb) == 1
    assert intent.outcome == "adopted"


def test_submit_when_sell_limit_then_price_rounded_up_and_amount_down(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    placed = venue.submit(make_order(side=Side.SELL, qty=0.123456789, price=41_000.01))
    assert (placed.quantity, placed.price) == (0.12345678, 41_000.1)
    [at_venue] = hb.state.orders_at_venue()
    assert (at_venue["amount"], at_venue["price"]) == (0.12345678, 41_000.1)  # the venue's floor is a no-op


def test_submit_when_below_minimum_then_skipped_with_reason_and_nothing_journalled_or_sent(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    with pytest.raises(BelowMinimumError) as small:
        venue.submit(make_order(qty=0.0000499))
    assert small.value.outcome.reason is SkipReason.BELOW_MIN_AMOUNT
    outcome = venue.prepare(make_order(qty=0.00005, price=5_000.0))
    assert isinstance(outcome, BelowMinimum) and outcome.reason is SkipReason.BELOW_MIN_NOTIONAL
    assert journal.intents() == [] and place_count(hb) == 0


def test_submit_when_pair_unknown_then_clear_error_and_nothing_sent(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    with pytest.raises(UnknownPairError, match="no trading rules for 'ZZZ-USD'"):
        venue.submit(make_order(symbol="ZZZ"))
    assert journal.intents() == [] and place_count(hb) == 0


def test_rules_when_many_orders_then_read_once_from_the_trading_rules_route(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    for i in range(3):
        venue.submit(make_order(f"o{i}", price=39_000.0 - i))
    assert [p for _, p in hb.state.requests].count("/connectors/kraken/trading-rules") == 1


def test_submit_when_connector_has_no_credentials_then_config_error_with_the_fix_and_nothing_journalled(
    hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    hb.state.credentials = {"binance"}
    venue = HummingbotVenue(settings_for(hb), journal, sleep=lambda s: None)
    with pytest.raises(VenueConfigError, match="no credentials for connector 'kraken'.*add-credential"):
        venue.submit(make_order())
    assert journal.intents() == [] and place_count(hb) == 0


def test_submit_when_credentials_removed_and_server_answers_500_then_config_error_not_in_doubt(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal
) -> None:
    venue.submit(make_order("first"))
    hb.state.credentials = set()
    with pytest.raises(VenueConfigError):
        venue.submit(make_order("second", price=38_000.0))
    assert place_count(hb) == 2 and journal.intent("second").outcome == "not_at_venue"


def test_submit_when_venue_refuses_with_400_then_not_retried_not_searched_and_rejected(
    venue: HummingbotVenue, hb: HummingbotTestServer, journal: OrderJournal, sleeps: list[float]
) -> None:
    venue.rule("BTC")  # rules cached; then the venue's minimum rises
    hb.state.rules = {PAIR: {**kraken_rule(PAIR), "min_order_size": 1.0}}
    with pytest.raises(OrderRefusedError, match="HTTP 400.*below minimum order size"):
        venue.submit(make_order())
    assert place_count(hb) == 1 and sleeps == []
    assert not any(p == "/trading/orders/search" for _, p in hb.state.requests)
    assert journal.order("dca:BTC:1").status is OrderStatus.REJECTED


def test_submit_when_connector_clock_is_minutes_stale_then_the_placed_order_is_still_adopted(
    journal: OrderJournal,
) -> None:
    sim = ManualClock(datetime.now(UTC) - timedelta(minutes=4, seconds=50))
    with HummingbotTestServer(ExchangeState(marks={PAIR: 60_000.0}, clock=sim)) as hb_sim:
        sim.advance(4 * 60 + 50)  # now at the wall clock; the connector's clock still says the start
        _stale_adoption(hb_sim, journal)


def _stale_adoption(hb_sim: HummingbotTestServer, journal: OrderJournal) -> None:
    venue = HummingbotVenue(settings_for(hb_sim), journal, sleep=lambda s: None)
    hb_sim.state.fail_next("place", "timeout_after_place")
    hb_sim.state.delay = 1.5
    placed = venue.submit(make_order(qty=DCA_QTY, price=59_000.0))
    [row] = hb_sim.state.orders_at_venue()
    assert placed.venue_order_id == row["order_id"] and place_count(hb_sim) == 1
    assert datetime.fromisoformat(row["created_at"]) < journal.intent("dca:BTC:1").recorded_ts - timedelta(minutes=4)


def test_history_when_more_than_1000_orders_in_the_window_then_time_windows_read_them_all(
    hb_sim: HummingbotTestServer, sim: ManualClock, journal: OrderJournal
) -> None:
    start = sim()
    for i in range(1_500):
        hb_sim.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                            "trade_type": "BUY", "amount": 0.001, "order_type": "LIMIT", "price": 30_000.0 + i})
        hb_sim.state.settle()
        sim.advance(1)
    venue = HummingbotVenue(settings_for(hb_sim), journal, sleep=lambda s: None)
    rows = venue.raw_history([PAIR], since=start - timedelta(minutes=1))
    assert len(rows) == len({r.order_id for r in rows}) == 1_500
    searches = [p for _, p in hb_sim.state.requests if p == "/trading/orders/search"]
    assert len(searches) == 2  # the newest 1000, then the window up to the oldest of those; never the cursor


def test_balances_when_a_fill_just_happened_then_fresh_by_default_and_cached_on_request(
    venue: HummingbotVenue, hb: HummingbotTestServer
) -> None:
    venue.submit(make_order(order_type=OrderType.MARKET, price=None, qty=0.01))
    venue.open_orders()  # the fill lands
    assert venue.balances(refresh=False).get("BTC") is None  # the server's cache of its start
    assert venue.balances()["BTC"] == pytest.approx(0.01)


def test_settings_when_connector_is_kraken_paper_trade_then_refused_pointing_to_paper_mode(
    hb: HummingbotTestServer,
) -> None:
    with pytest.raises(ConfigError, match="no paper-trade connectors.*PaperVenue"):
        settings_for(hb, hummingbot_connector="kraken_paper_trade")
