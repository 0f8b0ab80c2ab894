"""data_health: the gate over the monitored coins' recent bars, stored and alerted (every 15 minutes)."""

from __future__ import annotations

from datetime import datetime

import polars as pl
from prefect import flow

from core.strategies.registry import warmup_bars
from flows.common import flow_runtime, parse_when, utcnow
from flows.hooks import ALERT_HOOKS
from tasks.data import load_candles, validate_candles
from tasks.runtime import Runtime


@flow(name="data-health", validate_parameters=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def data_health(
    symbols: list[str] | None = None, now: datetime | str | None = None, runtime: Runtime | None = None
) -> dict[str, list[str]]:
    when = parse_when(now) or utcnow()
    with flow_runtime(runtime) as rt:
        wanted = list(symbols or rt.settings.data.symbols)
        bars = load_candles(rt, wanted, rt.settings.data.detection_timeframe, warmup_bars(rt.settings), when)
        report = validate_candles(rt, bars.filter(pl.col("symbol").is_in(wanted)), wanted, when)
        return {"passed": report.passed_symbols, "failed": report.failed_symbols}
