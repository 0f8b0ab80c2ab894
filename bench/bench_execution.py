"""Execution benchmarks: label simulation over the full 1h history, one position step, ledger events."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from bench.common import BenchResult
from core.domain import OrderType, Scores, Signal, StrategyName, TradePlan
from core.settings import load_settings
from core.simulator import simulate_many


def _signals(bars: pl.DataFrame, every: int) -> list[Signal]:
    """Alternating DCA grids and swing market entries on every `every`-th bar of each coin."""
    out: list[Signal] = []
    picks = bars.filter(pl.int_range(pl.len()).over("symbol") % every == 5)
    for k, r in enumerate(picks.iter_rows(named=True)):
        p = r["close"]
        if k % 2:
            plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=tuple(p * (1 - j * 0.01) for j in range(5)),
                             take_profit_pct=0.10, stop_loss_pct=0.08, max_hold=timedelta(hours=72),
                             entry_expiry=timedelta(hours=24))
            strat = StrategyName.DCA
        else:
            plan = TradePlan(entry_type=OrderType.MARKET, entry_prices=(p,), take_profit_pct=0.15, stop_loss_pct=0.05,
                             trailing_stop_pct=0.07, max_hold=timedelta(hours=72))
            strat = StrategyName.SWING
        out.append(Signal(symbol=r["symbol"], strategy=strat, timeframe="1h", ts=r["ts"], price=p, plan=plan))
    return out


def bench_simulate_many() -> list[BenchResult]:
    s = load_settings()
    bars = pl.read_parquet(s.data.data_dir / "ohlcv_1h.parquet").with_columns(
        pl.col("ts").dt.cast_time_unit("us"), pl.lit("1h").alias("timeframe")
    )
    sigs = _signals(bars, 47)
    t0, c0 = time.perf_counter(), time.process_time()
    out = simulate_many(sigs, bars, s)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = int(out.get_column("bars_held").sum()) + out.height  # a rough count of bars stepped
    return [
        BenchResult(f"execution.simulate_many.{len(sigs)}_events_{bars.height}_bars.wall", wall, "s", "<= 30"),
        BenchResult("execution.simulate_many.events_per_s", len(sigs) / wall, "events/s", ">= 1000"),
        BenchResult("execution.simulate_many.cpu_us_per_bar_step", cpu / max(steps, 1) * 1e6, "us", "<= 20"),
    ]


def bench_ledger() -> list[BenchResult]:
    from core.paper_session import Entry, run_session
    from core.storage.duckdb_store import DuckDBStore
    from core.trading.account import paper_account
    from core.trading.journal import JOURNAL

    s = load_settings()
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    bars = (
        pl.scan_parquet(s.data.data_dir / "ohlcv_1h.parquet")
        .filter(pl.col("symbol").is_in(["BTC", "ETH", "SOL", "XRP", "DOGE"]), pl.col("ts") >= start, pl.col("ts") < end)
        .with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.lit("1h").alias("timeframe"))
        .sort("symbol", "ts")
        .collect()
    )
    entries = [
        Entry(g, Scores(confidence=0.7, take_profit_pct=g.plan.take_profit_pct, stop_loss_pct=g.plan.stop_loss_pct), 100.0)
        for g in _signals(bars, 17)
    ]
    with tempfile.TemporaryDirectory() as d:
        store = DuckDBStore(Path(d) / "bench.duckdb")
        store.init_schema()
        t0 = time.perf_counter()
        pf = run_session(paper_account(store, s), bars, entries)
        wall = time.perf_counter() - t0
        events = len(store.get_records(JOURNAL))
        t1 = time.perf_counter()
        paper_account(store, s, load=True)
        load = time.perf_counter() - t1
        store.close()
    return [
        BenchResult(f"execution.paper_session.{bars.height}_bars_{len(pf.book.trades)}_trades.wall", wall, "s", "<= 60"),
        BenchResult("execution.ledger.events_per_s_duckdb", events / wall, "events/s", ">= 20"),
        BenchResult(f"execution.ledger.load_{events}_events", load, "s", "<= 10"),
    ]


def run() -> list[BenchResult]:
    return bench_simulate_many() + bench_ledger()
