"""Parity of the Prefect paper replay and the backtest engine over a week of the 24 monitored coins
(2024-06-24 .. 2024-07-01, rule-only, one scan-and-trade flow run per simulated hour on a temporary
local Prefect API server): the share of identical decisions (target 100%) and of identical fills.
See bench/parity.py for what is compared. Takes minutes (168 flow runs).
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BenchResult

END = datetime(2024, 7, 1, tzinfo=UTC)
DAYS = 7


def run() -> list[BenchResult]:
    from bench.parity import paper_vs_backtest
    from core.settings import MONITORED_SYMBOLS, load_settings
    from deployments.prefect_env import configure

    with tempfile.TemporaryDirectory(prefix="bench_parity_") as d:
        tmp = Path(d)
        settings = load_settings(data={"var_dir": tmp, "symbols": list(MONITORED_SYMBOLS)}, ml={"train_end": "2024-06-24"})
        configure(settings, quiet=True, lean=True)
        from prefect.settings import (
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            temporary_settings,
        )

        t0 = time.perf_counter()
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            p = paper_vs_backtest(settings, END, DAYS)
        seconds = time.perf_counter() - t0
    print(f"   {DAYS} days x {len(MONITORED_SYMBOLS)} coins: {p.scan_runs} scan flow runs; decisions paper "
          f"{p.paper_decisions.height} / engine {p.engine_decisions.height}, identical {p.identical_decisions}; "
          f"fills paper {p.paper_fills.height} / engine {p.engine_fills.height}, identical {p.identical_fills}; "
          f"{seconds:.0f} s")
    return [
        BenchResult("parity: identical decisions, paper replay vs engine, 7d x 24 coins (%)",
                    100 * p.decision_share, "%", ">= 100"),
        BenchResult("parity: identical fills, paper replay vs engine, 7d x 24 coins (%)",
                    100 * p.fill_share, "%", ">= 100"),
    ]
