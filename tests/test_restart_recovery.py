"""Kill -9 a paper session mid-way (twice), reload it from the DuckDB store, carry on: the same positions,
orders, fills and cash as a session that was never interrupted; no order id doubled, no fee twice.

The session runs in a child process (this file run as a script) so the kill is a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.domain import OrderType, Scores, Signal, StrategyName, TradePlan
from core.paper_session import Entry, run_session
from core.settings import load_settings
from core.storage.duckdb_store import DuckDBStore
from core.trading.account import paper_account
from core.trading.journal import JOURNAL

S = load_settings()
START, END = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 10, tzinfo=UTC)
SYMBOLS = ["BTC", "ETH", "SOL"]


def load_bars() -> pl.DataFrame:
    return (
        pl.scan_parquet(S.data.data_dir / "ohlcv_1h.parquet")
        .filter(pl.col("symbol").is_in(SYMBOLS), pl.col("ts") >= START, pl.col("ts") < END)
        .with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.lit("1h").alias("timeframe"))
        .sort("symbol", "ts")
        .collect()
    )


def session_entries(bars: pl.DataFrame) -> list[Entry]:
    """A signal every 23 bars per coin, alternating a DCA grid and a market (swing) entry."""
    out: list[Entry] = []
    picks = bars.filter(pl.int_range(pl.len()).over("symbol") % 23 == 7)
    for k, r in enumerate(picks.iter_rows(named=True)):
        p = r["close"]
        if k % 2:
            plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=tuple(p * (1 - j * 0.005) for j in range(5)),
                             take_profit_pct=0.03, stop_loss_pct=0.04, max_hold=timedelta(hours=48),
                             entry_expiry=timedelta(hours=12))
            strat = StrategyName.DCA
        else:
            plan = TradePlan(entry_type=OrderType.MARKET, entry_prices=(p,), take_profit_pct=0.04, stop_loss_pct=0.03,
                             trailing_stop_pct=0.03, max_hold=timedelta(hours=36))
            strat = StrategyName.SWING
        sig = Signal(symbol=r["symbol"], strategy=strat, timeframe="1h", ts=r["ts"], price=p, plan=plan)
        sc = Scores(confidence=0.7, take_profit_pct=plan.take_profit_pct, stop_loss_pct=plan.stop_loss_pct,
                    hold=plan.max_hold)
        out.append(Entry(sig, sc, 120.0))
    return out


def child(db: str, pause: float) -> None:
    """Open the store, reload the book, run the session to the end, printing each timestamp done."""
    store = DuckDBStore(db)
    store.init_schema()
    pf = paper_account(store, S, load=True)
    bars = load_bars()

    def progress(ts: datetime) -> None:
        print(ts.isoformat(), flush=True)
        time.sleep(pause)

    run_session(pf, bars, session_entries(bars), on_step=progress)
    print("DONE", flush=True)
    store.close()


def run_and_kill(db: Path, after_lines: int) -> int:
    """Start the child, SIGKILL it after it reported `after_lines` timestamps; return lines seen."""
    proc = subprocess.Popen(
        [sys.executable, __file__, str(db), "0.003"], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.strip() == "DONE":
            break
        seen += 1
        if seen >= after_lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return seen


@pytest.mark.timeout(180)
def test_session_when_killed_twice_and_resumed_then_same_book_as_uninterrupted(tmp_path):
    bars = load_bars()
    entries = session_entries(bars)
    ref_store = DuckDBStore(tmp_path / "ref.duckdb")
    ref = run_session(paper_account(ref_store, S), bars, entries)
    ref_store.close()
    assert len(ref.book.trades) >= 6  # the session really trades

    db = tmp_path / "killed.duckdb"
    first = run_and_kill(db, 50)
    second = run_and_kill(db, 130)  # resumes from the store, replays what it must, dies again
    assert first == 50 and second == 130  # both were killed mid-way (the session has 216 hours)

    store = DuckDBStore(db)
    pf = paper_account(store, S, load=True)
    assert 0 < len(pf.book.orders) < len(ref.book.orders)  # the kill left a partial book...
    run_session(pf, bars, entries)  # ...which carries on to the end

    journal_orders = [o["client_order_id"] for _, p in store.get_records(JOURNAL) for o in p["orders"]
                      if o["status"] == "pending"]
    assert len(journal_orders) == len(set(journal_orders))  # no order intent written twice
    order_keys = [k for k, _ in store.get_records("order")]
    assert len(order_keys) == len(set(order_keys)) == len(ref.book.orders)
    assert pf.book.orders == ref.book.orders and pf.book.fills == ref.book.fills and pf.book.trades == ref.book.trades
    assert pf.book.positions == ref.book.positions
    assert pf.book.cash == pytest.approx(ref.book.cash) and pf.book.fees_paid == pytest.approx(ref.book.fees_paid)
    assert pf.book.fees_paid == pytest.approx(sum(f.fee for f in pf.book.fills.values()))
    assert pf.book.realised_pnl == pytest.approx(sum(t.net_pnl for t in pf.book.trades.values()))
    store.close()


if __name__ == "__main__":
    child(sys.argv[1], float(sys.argv[2]))
