"""Parity: the main job's Prefect paper replay and the backtest engine, same window, same empty book,
same (rule-only) scorer, make the same decisions and the same fills (bench.parity runs both).

2024-04-13 on 8 monitored coins: a day with a PANIC regime (most signals refused by code), taken DCA
grids and swings, fills and exits inside the day."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from polars.testing import assert_frame_equal

from core.settings import load_settings

SYMBOLS = ["ADA", "AVAX", "BTC", "DOGE", "ETH", "LINK", "SOL", "XRP"]
END = datetime(2024, 4, 14, tzinfo=UTC)


def test_parity_when_paper_replay_and_engine_run_same_day_then_every_decision_and_fill_identical(
    prefect_harness: str, tmp_path: Path
) -> None:
    from bench.parity import RTOL, paper_vs_backtest

    settings = load_settings(data={"var_dir": tmp_path, "symbols": SYMBOLS}, ml={"train_end": "2024-04-13"})
    parity = paper_vs_backtest(settings, END, days=1)
    # Both really traded: decisions of several codes, entries and exits filled.
    assert parity.scan_runs == 24
    assert parity.engine_decisions.height >= 10 and parity.engine_decisions["taken"].sum() >= 2
    assert parity.engine_decisions["reason"].n_unique() >= 3
    assert parity.engine_fills.filter(side="sell").height >= 1
    # Every decision (symbol, strategy, taken, reason code, size) and every fill identical: ids, codes and
    # times exactly, sizes, prices and fees to floating-point rounding (bench/parity.py says why).
    assert_frame_equal(parity.paper_decisions, parity.engine_decisions, check_exact=False, rtol=RTOL, atol=0)
    assert_frame_equal(parity.paper_fills, parity.engine_fills, check_exact=False, rtol=RTOL, atol=0)
    assert parity.decision_share == 1.0 and parity.fill_share == 1.0
