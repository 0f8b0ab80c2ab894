"""Scan and manage never overlap: deployed runs (no runtime passed) of two scan-and-trade runs and a
manage-positions run started at the same moment hold the `mlcrypto-ledger` global concurrency limit
(one slot, as `mlcrypto up` and `deploy_all` create it), so the task runs of one end before the next
one's begin. Prefect's test harness (a real API server) does the limiting. Control (run by hand with
3 slots): the two scans' task runs overlap and their concurrent gate-result writes collide."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime

from tests.prefect_support import task_runs


def test_scan_and_manage_when_started_together_then_ledger_sections_never_overlap(
    prefect_harness: str, tmp_path, monkeypatch, real_candles
) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from core.storage.duckdb_store import DuckDBStore
    from flows.common import LEDGER_LIMIT
    from flows.manage_positions import manage_positions_flow
    from flows.scan_and_trade import scan_and_trade

    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MLCRYPTO_DATA__SYMBOLS", "BTC,ETH")
    (tmp_path / "var").mkdir()
    now = datetime(2024, 4, 1, 0, 5, tzinfo=UTC)
    with DuckDBStore(tmp_path / "var" / "store.duckdb") as store:
        store.upsert_candles(real_candles("1h", ["BTC", "ETH"], datetime(2024, 2, 20, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)))
    with get_client(sync_client=True) as client:
        if LEDGER_LIMIT not in {lim.name for lim in client.read_global_concurrency_limits()}:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=LEDGER_LIMIT, limit=1))

    states: dict[str, object] = {}
    go = threading.Barrier(3)

    def run(name: str, fn, **kw) -> None:
        go.wait()
        states[name] = fn(now=now.isoformat(), return_state=True, **kw)

    threads = [threading.Thread(target=run, args=("scan", scan_and_trade)),
               threading.Thread(target=run, args=("manage", manage_positions_flow), kwargs={"reconcile": False}),
               threading.Thread(target=run, args=("scan2", scan_and_trade))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)

    scan, manage = states["scan"], states["manage"]
    assert scan.is_completed() and manage.is_completed(), (scan, manage)  # type: ignore[union-attr]

    def window(state) -> tuple[datetime, datetime]:
        runs = task_runs(state.state_details.flow_run_id)
        assert runs
        return min(r.start_time for r in runs), max(r.end_time for r in runs)

    spans = sorted([window(scan), window(manage), window(states["scan2"])])
    for (a0, a1), (b0, b1) in itertools.pairwise(spans):
        assert a1 <= b0, f"{a0}..{a1} overlaps {b0}..{b1}"
