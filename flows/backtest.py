"""backtest: one engine run over stored candles on demand, rule-only or with the champion models."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow

from core.backtest.session import last_window
from flows.common import flow_runtime, parse_when
from flows.hooks import ALERT_HOOKS
from tasks.backtest import run_backtest
from tasks.runtime import Runtime


@flow(name="backtest", validate_parameters=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def backtest(
    symbols: list[str] | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    days: int = 90,
    use_ml: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Default window: the last `days` days of stored bars."""
    with flow_runtime(runtime) as rt:
        syms = list(symbols or rt.settings.data.symbols)
        stop, begin = parse_when(end), parse_when(start)
        if stop is None:
            stop = last_window(rt.store, syms, rt.settings.data.detection_timeframe, days)[1]
        begin = begin or stop - timedelta(days=days)
        report = run_backtest(rt, syms, begin, stop, kind="backtest", use_ml=use_ml)
        return {"run_id": report.run_id, "directory": str(report.directory), "summary": report.summary}
