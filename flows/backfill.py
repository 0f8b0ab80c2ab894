"""backfill: fill the store for a window on demand (Polygon REST with a key, else Binance klines)."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow

from flows.common import flow_runtime, parse_when, utcnow
from flows.hooks import ALERT_HOOKS
from tasks.data import backfill_candles
from tasks.runtime import Runtime


@flow(name="backfill", validate_parameters=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def backfill(
    symbols: list[str] | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    source: str = "auto",
    timeframe: str = "1h",
    runtime: Runtime | None = None,
) -> dict[str, int]:
    """Default window: the last 7 days."""
    stop = parse_when(end) or utcnow()
    begin = parse_when(start) or stop - timedelta(days=7)
    with flow_runtime(runtime) as rt:
        return backfill_candles(rt, list(symbols or rt.settings.data.symbols), begin, stop, source, timeframe)
