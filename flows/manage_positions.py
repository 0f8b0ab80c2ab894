"""manage_positions: reconcile with the venue, then apply the bars that closed since the last run to
every open position (fills, grid expiry, exits). Every minute when deployed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from flows.common import flow_runtime, parse_when, utcnow
from flows.hooks import ALERT_HOOKS
from tasks.runtime import Runtime
from tasks.trading import ManageSummary, manage_positions, reconcile_orders


@flow(name="manage-positions", validate_parameters=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def manage_positions_flow(
    now: datetime | str | None = None,
    timeframe: str | None = None,
    reconcile: bool = True,
    runtime: Runtime | None = None,
    venue: Any = None,
) -> ManageSummary:
    """`venue` is for tests and the live path: reconciliation runs against it (read-only)."""
    when = parse_when(now) or utcnow()
    with flow_runtime(runtime, ledger=True) as rt:
        if reconcile:
            reconcile_orders(rt, venue=venue, now=when)
        return manage_positions(rt, when, timeframe)
