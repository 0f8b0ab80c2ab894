"""A deployed scan-and-trade run (no runtime passed: settings from the environment, as the served
deployment runs) whose data gate fails for every symbol ends Failed, not Completed, and raises a
data-health alert (plus the flow-failure alert of its state hook) at a local Slack receiver."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.test_alerts import receiver  # noqa: F401 - the local Slack receiver fixture


def test_scan_and_trade_when_gate_fails_for_every_symbol_then_run_failed_and_data_health_alerted(
    prefect_harness: str, receiver, tmp_path, monkeypatch, real_candles  # noqa: F811
) -> None:
    from core.storage.duckdb_store import DuckDBStore
    from flows.scan_and_trade import scan_and_trade

    (tmp_path / "var").mkdir()
    with DuckDBStore(tmp_path / "var" / "store.duckdb") as store:  # real bars, two years old by `now`
        store.upsert_candles(real_candles("1h", ["BTC", "ETH"], datetime(2024, 3, 1, tzinfo=UTC),
                                          datetime(2024, 4, 1, tzinfo=UTC)))

    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MLCRYPTO_DATA__SYMBOLS", "BTC,ETH")
    monkeypatch.setenv("MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("MLCRYPTO_ALERTS__MAX_RETRIES", "0")

    # Stale bars for every coin: what a replay streaming minutes from the past looked like.
    state = scan_and_trade(now=datetime(2026, 4, 20, 12, tzinfo=UTC).isoformat(), return_state=True)

    assert state.is_failed() and "data gate failed for all 2 symbols" in state.message
    texts = [p["body"]["text"] for p in receiver.posts]
    assert any("[data_health]" in t and "failed for every symbol" in t and "BTC" in t for t in texts), texts
    assert any("[flow_failure]" in t and "scan-and-trade" in t for t in texts), texts
