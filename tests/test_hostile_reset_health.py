"""Atomic `--reset` of the paper ledger (one transaction for every record kind, on real stores), the
start-up guard that notices a half-done reset, and `health` on a timeframe without bars."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from core.backtest.session import (
    check_ledger_agrees,
    paper_execution,
    reset_paper_ledger,
)
from core.errors import StoreError
from core.portfolio import JOURNAL, VIEWS
from core.settings import load_settings
from tests.test_alerts import Receiver


def _ledger(store) -> None:
    """A two-event journal and the views derived from it, as Portfolio writes them."""
    pos = {"position_id": "p1"}
    order = {"client_order_id": "o1"}
    fill = {"fill_id": "f1"}
    store.put_records(JOURNAL, [("000000000001", {"positions": [pos], "orders": [order], "decisions": [{"signal_id": "s1"}]})])
    store.put_records(JOURNAL, [("000000000002", {"fills": [fill], "trades": [{"position_id": "p1"}]})])
    for kind, key in (("position", "p1"), ("order", "o1"), ("decision", "s1"), ("fill", "f1"), ("trade", "p1")):
        store.put_records(kind, [(key, {"id": key})])
    store.put_records("gate_result", [("k", {"keep": True})])  # not part of the ledger


def test_delete_kinds_when_called_then_every_ledger_kind_gone_and_others_kept(store):
    _ledger(store)
    removed = reset_paper_ledger(store)
    assert removed == 7
    assert all(store.get_records(k) == [] for k in (JOURNAL, *VIEWS))
    assert store.get_records("gate_result") == [("k", {"keep": True})]


@pytest.mark.postgres
def test_delete_kinds_when_failing_mid_way_then_nothing_deleted(pg_dsn, pg_schema):
    # Arrange: a real Postgres trigger makes the delete of 'trade' records fail, after the others.
    import psycopg

    from core.storage.postgres_store import PostgresStore

    store = PostgresStore(pg_dsn, schema=pg_schema)
    _ledger(store)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"""CREATE FUNCTION "{pg_schema}".no_trade_delete() RETURNS trigger AS $$
            BEGIN IF OLD.kind = 'trade' THEN RAISE EXCEPTION 'killed mid-reset'; END IF; RETURN OLD; END $$
            LANGUAGE plpgsql""")
        con.execute(f"""CREATE TRIGGER t BEFORE DELETE ON "{pg_schema}".records FOR EACH ROW
            EXECUTE FUNCTION "{pg_schema}".no_trade_delete()""")
    # Act
    with pytest.raises(StoreError, match="killed mid-reset"):
        reset_paper_ledger(store)
    # Assert: one transaction -> every kind still there and the guard is satisfied.
    assert len(store.get_records(JOURNAL)) == 2 and all(store.get_records(k) for k in VIEWS)
    check_ledger_agrees(store)
    store.close()


@pytest.mark.parametrize(
    ("half_reset", "message"),
    [((JOURNAL,), "record kinds disagree.*never wrote"), (("position", "fill"), "record kinds disagree.*missing")],
)
def test_paper_start_when_earlier_reset_was_half_done_then_refused_until_reset(store, half_reset, message):
    # Arrange: the old, per-kind reset killed after some kinds.
    _ledger(store)
    for kind in half_reset:
        store.delete_records(kind, [k for k, _ in store.get_records(kind)])
    settings = load_settings()
    # Act / Assert: the next start notices, --reset repairs.
    with pytest.raises(StoreError, match=message):
        paper_execution(store, settings, reset=False)
    paper_execution(store, settings, reset=True)
    assert all(store.get_records(k) == [] for k in (JOURNAL, *VIEWS))


def test_ledger_guard_when_only_last_events_views_missing_then_accepted(store):
    # A crash between the journal write and its views is normal and repaired by Portfolio.load.
    _ledger(store)
    store.delete_records("fill", ["f1"])
    check_ledger_agrees(store)


def test_health_when_timeframe_has_no_bars_then_fail_with_reason_and_alert(tmp_path, monkeypatch):
    # Arrange: an empty real store; a real loopback Slack receiver.
    receiver = Receiver()
    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path))
    monkeypatch.setenv("MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL", receiver.url)
    from deployments.cli import app

    try:
        # Act
        result = CliRunner().invoke(app, ["health", "--symbols", "BTC,ETH", "--timeframe", "4h",
                                          "--now", datetime(2024, 5, 1, tzinfo=UTC).isoformat()])
    finally:
        receiver.httpd.shutdown()
        receiver.httpd.server_close()
    # Assert
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    rows = [line for line in result.output.splitlines() if "FAIL" in line]
    assert len(rows) == 3 and all("has_bars" in r for r in rows[:2])
    assert "FAIL no 4h bars in the store for: BTC, ETH" in result.output
    assert "0 passed, 2 failed" in result.output
    (post,) = receiver.posts
    assert "BTC" in str(post["body"]) and "ETH" in str(post["body"]) and "4h" in str(post["body"])
