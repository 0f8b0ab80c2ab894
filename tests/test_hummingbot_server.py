"""The Hummingbot API double itself (tests/hummingbot_server.py), over real HTTP: each behaviour of the
real hummingbot-api it reproduces has a test here, and a contract test drives it through the official
`hummingbot-api-client`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.hummingbot_server import (
    PAIR,
    ExchangeState,
    HummingbotTestServer,
    ManualClock,
)

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def hb(clock: ManualClock) -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer(ExchangeState(marks={PAIR: 60_000.0}, clock=clock)) as server:
        yield server


@pytest.fixture
def http(hb: HummingbotTestServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hb.url, auth=(hb.state.username, hb.state.password), timeout=5) as c:
        yield c


def order_body(**over: Any) -> dict[str, Any]:
    body = {"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
            "trade_type": "BUY", "amount": 40 / 61_234.56, "order_type": "LIMIT", "price": 59_999.97}
    return {**body, **over}


def active(http: httpx.Client) -> list[dict[str, Any]]:
    return http.post("/trading/orders/active", json={"limit": 1000}).json()["data"]


def search(http: httpx.Client, **body: Any) -> dict[str, Any]:
    return http.post("/trading/orders/search", json={"limit": 100, **body}).json()


def test_double_when_order_placed_then_amount_floored_to_lot_and_price_to_tick(http: httpx.Client) -> None:
    http.post("/trading/orders", json=order_body())
    http.post("/trading/orders", json=order_body(trade_type="SELL", price=60_100.06))
    buy, sell = sorted(active(http), key=lambda r: r["trade_type"])
    # 40 / 61234.56 = 0.000653225784... -> 0.00065322; prices floored to 0.1 as hummingbot's quantize_order_price
    assert buy["amount"] == 0.00065322 and buy["price"] == 59_999.9
    assert sell["amount"] == 0.00065322 and sell["price"] == 60_100.0


def test_double_when_order_acknowledged_then_decimal_strings_of_the_request_and_numeric_id(http: httpx.Client) -> None:
    ack = http.post("/trading/orders", json=order_body()).json()
    assert ack["order_id"].isdigit()  # Kraken's connector: numeric client order ids, not HBOT-...
    assert ack["amount"] == repr(40 / 61_234.56) and isinstance(ack["amount"], str)  # the request echoed
    assert ack["price"] == "59999.97" and ack["status"] == "submitted"


def test_double_when_filled_then_trade_has_fee_paid_and_fee_currency(
    http: httpx.Client, hb: HummingbotTestServer
) -> None:
    http.post("/trading/orders", json=order_body(order_type="MARKET", price=None, amount=0.001))
    [trade] = http.post("/trading/trades", json={}).json()["data"]
    assert trade["amount"] == 0.001 and trade["price"] == 60_000.0
    assert trade["fee_paid"] == pytest.approx(60 * 0.004) and trade["fee_currency"] == "USD"
    assert "+" not in trade["timestamp"]  # naive ISO (datetime.fromtimestamp on a UTC server)


def test_double_when_latency_then_creation_and_cancel_land_after_the_acknowledgement(
    http: httpx.Client, hb: HummingbotTestServer, clock: ManualClock
) -> None:
    hb.state.latency = timedelta(seconds=2)
    ack = http.post("/trading/orders", json=order_body()).json()
    # Tracked at once as SUBMITTED (PENDING_CREATE), but no history row yet.
    assert [(r["order_id"], r["status"]) for r in active(http)] == [(ack["order_id"], "SUBMITTED")]
    assert search(http)["data"] == []
    clock.advance(2)
    [row] = search(http)["data"]
    assert row["status"] == "OPEN" and row["created_at"] == (T0 + timedelta(seconds=2)).isoformat()
    msg = http.post(f"/trading/master_account/kraken/orders/{ack['order_id']}/cancel").json()
    assert msg == {"message": f"Order cancellation initiated for {ack['order_id']}"}
    assert active(http)[0]["status"] == "PENDING_CANCEL" and search(http)["data"][0]["status"] == "OPEN"
    clock.advance(2)
    assert active(http) == [] and search(http)["data"][0]["status"] == "CANCELLED"


def test_double_when_placed_minutes_after_the_state_loop_then_active_created_at_is_stale(
    http: httpx.Client, clock: ManualClock
) -> None:
    clock.advance(4 * 60 + 30)  # the connector's clock last moved at start (T0)
    http.post("/trading/orders", json=order_body())
    assert active(http)[0]["created_at"] == T0.isoformat()
    clock.advance(60)  # 5.5 minutes: the loop ran at T0 + 5 min
    http.post("/trading/orders", json=order_body(price=59_000.0))
    assert sorted(r["created_at"] for r in active(http)) == [T0.isoformat(), (T0 + timedelta(minutes=5)).isoformat()]
    assert all(r["created_at"] > T0.isoformat() for r in search(http)["data"])  # history rows: the DB's now()


def test_double_when_history_paged_then_cursor_is_always_0_colon_and_only_limit_x2_newest_rows(
    http: httpx.Client, hb: HummingbotTestServer, clock: ManualClock
) -> None:
    for i in range(30):
        http.post("/trading/orders", json=order_body(price=50_000.0 + i))
        clock.advance(1)
    first = search(http, limit=10)
    assert first["pagination"] == {"limit": 10, "has_more": True, "next_cursor": "0:", "total_count": 20}
    second = search(http, limit=10, cursor="0:")
    assert second["pagination"]["next_cursor"] == "0:"
    # The "next" page starts one row after the first: it repeats 9 rows of page one.
    assert [r["order_id"] for r in second["data"]] == [r["order_id"] for r in first["data"]][1:] + [
        second["data"][-1]["order_id"]
    ]
    newest = sorted(hb.state.db_orders.values(), key=lambda r: r["created_at"], reverse=True)[:20]
    assert {r["order_id"] for r in first["data"]} <= {r["order_id"] for r in newest}


def test_double_when_balance_changes_then_state_is_cached_five_minutes_unless_refresh(
    http: httpx.Client, clock: ManualClock
) -> None:
    def usd(refresh: bool) -> float:
        state = http.post("/portfolio/state", json={"refresh": refresh}).json()
        return next(t["units"] for t in state["master_account"]["kraken"] if t["token"] == "USD")

    http.post("/trading/orders", json=order_body(order_type="MARKET", price=None, amount=0.001))
    http.post("/trading/orders/active", json={})  # the creation (and the fill) land
    assert usd(refresh=False) == 10_000.0  # the cache of the start
    assert usd(refresh=True) == pytest.approx(10_000 - 60 - 0.24)
    http.post("/trading/orders", json=order_body(order_type="MARKET", price=None, amount=0.001))
    http.post("/trading/orders/active", json={})
    assert usd(refresh=False) == pytest.approx(10_000 - 60 - 0.24)  # still the last refresh
    clock.advance(5 * 60)
    assert usd(refresh=False) == pytest.approx(10_000 - 120 - 0.48)  # the 5-minute loop refreshed it


def test_double_when_trading_rules_asked_then_kraken_like_rules_and_errors(http: httpx.Client) -> None:
    rules = http.get("/connectors/kraken/trading-rules", params={"trading_pairs": [PAIR, "FOO-USD"]}).json()
    assert rules[PAIR]["min_base_amount_increment"] == 1e-8 and rules[PAIR]["min_price_increment"] == 0.1
    assert rules[PAIR]["min_order_size"] == 0.00005 and rules[PAIR]["min_notional_size"] == 0.5
    assert rules["FOO-USD"] == {"error": "Trading pair FOO-USD not found"}
    gone = http.get("/connectors/kraken_paper_trade/trading-rules")
    assert gone.status_code == 404 and "not found" in gone.json()["detail"]


def test_double_when_request_invalid_then_422_detail_is_a_list(http: httpx.Client) -> None:
    resp = http.post("/trading/orders", json=order_body(amount=-1, trade_type="HOLD"))
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert isinstance(detail, list) and {tuple(d["loc"]) for d in detail} == {("body", "amount"), ("body", "trade_type")}
    assert http.post("/trading/orders/search", json={"limit": 5000}).status_code == 422


def test_double_when_connector_unconfigured_rules_unloaded_or_too_small_then_real_codes(
    http: httpx.Client, hb: HummingbotTestServer
) -> None:
    paper = http.post("/trading/orders", json=order_body(connector_name="kraken_paper_trade"))
    assert paper.status_code == 500 and paper.json()["detail"].startswith("Unexpected error placing trade")
    assert http.post("/trading/orders", json=order_body(account_name="nobody")).status_code == 404
    small = http.post("/trading/orders", json=order_body(amount=0.00004))
    assert small.status_code == 400 and "below minimum order size" in small.json()["detail"]
    cheap = http.post("/trading/orders", json=order_body(amount=0.00005, price=5_000.0))
    assert cheap.status_code == 400 and "below minimum notional size" in cheap.json()["detail"]
    hb.state.rules_loaded = False
    busy = http.post("/trading/orders", json=order_body())
    assert busy.status_code == 503 and "Trading rules not yet loaded" in busy.json()["detail"]
    assert hb.state.orders == {}
    assert http.get("/accounts/master_account/credentials").json() == ["kraken"]


def test_double_when_called_through_the_official_client_then_routes_and_shapes_agree(
    hb: HummingbotTestServer,
) -> None:
    from hummingbot_api_client import HummingbotAPIClient

    async def run() -> dict[str, Any]:
        client = HummingbotAPIClient(hb.url, hb.state.username, hb.state.password)
        await client.init()
        try:
            rules = await client.connectors.get_trading_rules("kraken", [PAIR])
            ack = await client.trading.place_order("master_account", "kraken", PAIR, "BUY", 0.00065322, "LIMIT",
                                                    59_000.05)
            creds = await client.accounts.list_account_credentials("master_account")
            act = await client.trading.get_active_orders(account_names=["master_account"])
            hist = await client.trading.search_orders(account_names=["master_account"], limit=10)
            cancel = await client.trading.cancel_order("master_account", "kraken", ack["order_id"])
            state = await client.portfolio.get_state(["master_account"], refresh=True)
            trades = await client.trading.get_trades(account_names=["master_account"])
            return {"rules": rules, "ack": ack, "creds": creds, "active": act, "hist": hist, "cancel": cancel,
                    "state": state, "trades": trades}
        finally:
            await client.close()

    out = asyncio.run(run())
    assert out["rules"][PAIR]["min_price_increment"] == 0.1
    assert out["ack"]["status"] == "submitted" and out["ack"]["amount"] == "0.00065322"
    assert out["creds"] == ["kraken"]
    [row] = out["active"]["data"]
    assert row["order_id"] == out["ack"]["order_id"] and row["price"] == 59_000.0
    assert out["hist"]["data"][0]["order_id"] == row["order_id"]
    assert out["cancel"]["message"].endswith(row["order_id"])
    assert {t["token"] for t in out["state"]["master_account"]["kraken"]} == {"USD"}
    assert out["trades"]["data"] == []


def test_double_when_trades_paged_then_cursor_works_but_only_limit_x2_newest_rows_exist(
    http: httpx.Client, clock: ManualClock
) -> None:
    for _ in range(30):
        http.post("/trading/orders", json=order_body(order_type="MARKET", price=None, amount=0.0001))
        clock.advance(1)
    http.post("/trading/orders/active", json={})  # the last fill lands
    first = http.post("/trading/trades", json={"limit": 10}).json()
    second = http.post("/trading/trades", json={"limit": 10, "cursor": first["pagination"]["next_cursor"]}).json()
    assert first["pagination"]["total_count"] == 20  # 30 trades exist; the newest 20 are readable
    ids = [t["trade_id"] for page in (first, second) for t in page["data"]]
    assert len(set(ids)) == 20  # the cursor pages correctly within the cap
    assert second["pagination"]["has_more"] is False and second["pagination"]["next_cursor"] is None
    # silently capped: nothing says the 10 older trades exist
