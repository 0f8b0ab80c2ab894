"""`mlcrypto venue-status` and `mlcrypto reconcile` against the local Hummingbot server (read only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import load_settings
from core.storage.factory import open_store
from core.venues.order_journal import OrderJournal
from deployments.cli import app
from tests.hummingbot_server import PAIR, ExchangeState, HummingbotTestServer, make_order


@pytest.fixture
def hb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HummingbotTestServer]:
    with HummingbotTestServer(ExchangeState(password="admin", marks={PAIR: 40_000.0})) as server:
        monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path))
        monkeypatch.setenv("MLCRYPTO_EXECUTION__HUMMINGBOT_URL", server.url)
        monkeypatch.setenv("MLCRYPTO_EXECUTION__TIMEOUT_SECONDS", "0.5")
        yield server


def test_reconcile_command_when_crash_left_an_order_unrecorded_then_adopts_and_places_nothing(
    hb: HummingbotTestServer,
) -> None:
    store = open_store(load_settings())
    OrderJournal(store).record_intent(make_order("cli:1", price=38_000.0))
    store.close()
    hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                    "trade_type": "BUY", "amount": 0.01, "order_type": "LIMIT", "price": 38_000.0})
    result = CliRunner().invoke(app, ["reconcile", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["adopted"] == ["cli:1"] and report["clean"] is True
    assert len(hb.state.orders_at_venue()) == 1
    assert [p for _, p in hb.state.requests if p == "/trading/orders"] == []


def test_reconcile_command_when_foreign_order_rests_then_exit_code_3(hb: HummingbotTestServer) -> None:
    hb.state.place({"account_name": "master_account", "connector_name": "kraken", "trading_pair": PAIR,
                    "trade_type": "SELL", "amount": 1.0, "order_type": "LIMIT", "price": 90_000.0})
    result = CliRunner().invoke(app, ["reconcile"])
    assert result.exit_code == 3 and "unknown_open_orders" in result.output


def test_venue_status_command_when_credentials_wrong_then_exit_1_without_the_password(
    hb: HummingbotTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLCRYPTO_EXECUTION__HUMMINGBOT_PASSWORD", "hunter2-wrong")
    result = CliRunner().invoke(app, ["venue-status"])
    assert result.exit_code == 1
    assert "refused the credentials" in result.output and "hunter2-wrong" not in result.output
