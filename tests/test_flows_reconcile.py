"""A crash between order submit and record, resolved by the manage-positions flow's reconciliation
against the local Hummingbot API server (tests/hummingbot_server.py): the order is adopted under our
id, and a resubmit after restart places nothing new."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.domain import OrderStatus
from core.storage.duckdb_store import DuckDBStore
from core.venues.hummingbot import HummingbotVenue
from core.venues.hummingbot_schemas import HummingbotOrderRequest
from core.venues.order_journal import OrderJournal
from tests.hummingbot_server import PAIR, ExchangeState, HummingbotTestServer, make_order, settings_for


@pytest.fixture
def hb() -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer(ExchangeState(marks={PAIR: 40_000.0})) as server:
        yield server


def _placed(hb: HummingbotTestServer) -> list[str]:
    return [p for _, p in hb.state.requests if p == "/trading/orders"]


def test_manage_positions_when_crash_between_submit_and_record_then_reconciled_without_double_order(
    prefect_harness: str, hb: HummingbotTestServer, tmp_path: Path
) -> None:
    from flows.manage_positions import manage_positions_flow
    from tasks.runtime import open_runtime

    # Arrange: the intent is journalled, the venue accepts the order, the process dies before it
    # records the acknowledgement (nothing in the journal knows the venue's id).
    settings = settings_for(hb).model_copy(update={"data": settings_for(hb).data.model_copy(update={"var_dir": tmp_path})})
    path = tmp_path / "store.duckdb"
    store = DuckDBStore(path)
    store.init_schema()
    order = make_order("swing:BTC:crash", price=39_500.0)
    OrderJournal(store).record_intent(order)
    ex = settings.execution
    request = HummingbotOrderRequest(account_name=ex.hummingbot_account, connector_name=ex.hummingbot_connector,
                                     trading_pair=PAIR, trade_type="BUY", amount=0.01, order_type="LIMIT", price=39_500.0)
    ack = httpx.post(f"{hb.url}/trading/orders", json=request.model_dump(),
                     auth=(ex.hummingbot_username, ex.hummingbot_password.get_secret_value()))
    assert ack.status_code == 201
    store.close()
    # Act: the restarted process runs the manage-positions flow, which reconciles first.
    store = DuckDBStore(path)
    journal = OrderJournal(store)
    venue = HummingbotVenue(settings, journal, sleep=lambda s: None)
    rt = open_runtime(settings, store=store)
    state = manage_positions_flow(runtime=rt, venue=venue, return_state=True)
    # Assert: the flow completed; the order is adopted with the venue's id; a resubmit is a no-op.
    assert state.is_completed()
    journal.refresh()
    adopted = journal.order("swing:BTC:crash")
    assert adopted is not None and adopted.venue_order_id == ack.json()["order_id"]
    assert adopted.status == OrderStatus.OPEN
    placed_before = len(_placed(hb))
    assert venue.submit(order).venue_order_id == adopted.venue_order_id
    assert len(_placed(hb)) == placed_before and len(hb.state.orders_at_venue()) == 1
    venue.close()
    store.close()
