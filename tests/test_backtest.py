"""The backtester on real candles: golden numbers, determinism, no look-ahead, finer exits, limits, report."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from core.backtest.engine import run_backtest
from core.backtest.report import ARTIFACTS, build_report, write_report
from core.domain import ReasonCode
from core.settings import load_settings

SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "DOGE", "AVAX", "LINK"]
WARMUP = datetime(2023, 12, 1, tzinfo=UTC)  # indicators warm up on December 2023
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 4, 1, tzinfo=UTC)
S = load_settings()


@pytest.fixture(scope="module")
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", SYMBOLS, WARMUP, END)


@pytest.fixture(scope="module")
def result(bars):
    return run_backtest(bars, S, start=START)


def test_run_backtest_when_golden_window_then_pinned_trade_count_and_pnl(result) -> None:
    # Golden numbers: computed once with this commit's rules (rule-only scorer, default settings, 1h bars of
    # 7 monitored coins, decisions 2024-01-01 .. 2024-03-31, warm-up from 2023-12-01), then pinned. Any change
    # to detection, sizing, risk, fills or fees moves them; a deliberate change must re-derive them here.
    summary, by_strategy, _ = build_report(result, S)
    assert result.bars == 15288
    assert result.signals == 466
    assert result.trades.height == 97
    assert summary["pnl"] == pytest.approx(-33.46376166428786, abs=1e-6)
    assert summary["fees"] == pytest.approx(75.380743428438, abs=1e-6)
    counts = dict(zip(by_strategy["strategy"], by_strategy["trades"], strict=True))
    assert counts == {"dca": 14, "swing": 83}


def test_run_backtest_when_rerun_then_identical_trades_decisions_and_statistics(bars, result) -> None:
    again = run_backtest(bars, S, start=START)
    assert_frame_equal(again.trades, result.trades)
    assert_frame_equal(again.decisions, result.decisions)
    assert_frame_equal(again.equity, result.equity)
    first, second = build_report(result, S), build_report(again, S)
    assert {k: v for k, v in first[0].items() if k != "seconds"} == {k: v for k, v in second[0].items() if k != "seconds"}
    assert_frame_equal(first[1], second[1])
    assert_frame_equal(first[2], second[2])


def test_run_backtest_when_bars_after_t_dropped_then_decisions_up_to_t_unchanged(bars, result) -> None:
    cut = datetime(2024, 2, 15, 7, tzinfo=UTC)
    truncated = run_backtest(bars.filter(pl.col("ts") < cut), S, start=START)
    upto = pl.col("ts") <= cut
    cols = ["signal_id", "taken", "reason", "notional", "regime"]
    assert_frame_equal(truncated.decisions.filter(upto).select(cols), result.decisions.filter(upto).select(cols))
    assert truncated.decisions.filter(upto).height > 50
    # Trades that ended on their own before the cut are the same trades.
    done = (pl.col("exit_ts") <= cut) & (pl.col("exit_reason") != "end_of_data")
    assert_frame_equal(truncated.trades.filter(done), result.trades.filter(done))


def test_run_backtest_when_finer_exit_bars_then_exits_land_inside_the_hour(bars, real_candles) -> None:
    fine = real_candles("5m", SYMBOLS, START, END)
    with_fine = run_backtest(bars, S, start=START, exit_bars=fine)
    minutes = with_fine.trades.filter(pl.col("exit_reason") != "max_hold").get_column("exit_ts").dt.minute()
    assert (minutes != 0).sum() > 10  # stops/targets hit on 5m bars close at 5m boundaries
    assert with_fine.trades.height > 0


def test_run_backtest_when_any_entry_taken_then_limits_held_at_that_close(result) -> None:
    taken_ts = result.decisions.filter(pl.col("taken")).select("ts").unique()
    rows = result.equity.join(taken_ts, on="ts", how="semi")
    assert rows.height > 0
    assert (rows["open_notional"] <= S.risk.max_open_notional * rows["equity"] + 1e-6).all()
    # At most max_positions trades overlap at any entry time.
    t = result.trades
    overlap = t.join(t, how="cross").filter(
        (pl.col("entry_ts_right") <= pl.col("entry_ts")) & (pl.col("exit_ts_right") > pl.col("entry_ts"))
    ).group_by("position_id").len()
    assert overlap["len"].max() <= S.risk.max_positions


def test_run_backtest_when_panic_bar_then_no_entry_taken(result) -> None:
    panic = result.decisions.filter(pl.col("regime") == "PANIC")
    assert panic.height > 0
    assert not panic["taken"].any()
    assert (panic["reason"] == "regime_no_entries").all()  # core.domain.ReasonCode, counted by the report
    assert panic["detail"].str.starts_with("regime PANIC: no new entries").all()


def test_run_backtest_when_running_then_gc_paused_and_restored_after(bars) -> None:
    seen: list[bool] = []
    gc.enable()
    run_backtest(bars, S, start=END - timedelta(days=3), progress=lambda k, n: seen.append(gc.isenabled()))
    assert seen and not any(seen)  # paused while it ran
    assert gc.isenabled()  # and on again after
    gc.disable()
    try:
        run_backtest(bars, S, start=END - timedelta(days=3))
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()


# In a fresh interpreter, so that the backtest is the process's first.
_FREEZE_PROBE = """
import gc, sys, weakref
import polars as pl
from datetime import UTC, datetime
from core.backtest.engine import run_backtest
from core.settings import load_settings

s = load_settings()
bars = (pl.read_parquet(s.data.data_dir / "ohlcv_1h.parquet")
        .filter(pl.col("symbol").is_in(["BTC", "ETH"]) & (pl.col("ts") >= datetime(2024, 1, 1, tzinfo=UTC))
                & (pl.col("ts") < datetime(2024, 2, 1, tzinfo=UTC)))
        .with_columns(timeframe=pl.lit("1h"), ts=pl.col("ts").dt.cast_time_unit("us"))
        .select("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume").sort("symbol", "ts"))
class Node:
    pass
before = Node()
before.me = before  # a cycle alive when the first backtest starts
assert gc.get_freeze_count() == 0
first = run_backtest(bars, s)
frozen = gc.get_freeze_count()
assert frozen > 0
assert all(o is not before for o in gc.get_objects())  # frozen: no generation holds it any more
later = Node()
later.me = later  # a cycle made after it, then dropped: still collected
gone = weakref.ref(later)
del later
again = run_backtest(bars, s)
assert gc.get_freeze_count() == frozen, "only the first backtest of a process freezes"
gc.collect()
assert gone() is None, "a cycle made after the first backtest was not collected"
assert again.trades.equals(first.trades)
print("ok", frozen)
"""


def test_run_backtest_when_first_in_process_then_startup_objects_frozen_and_later_cycles_still_collected() -> None:
    done = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_run_backtest_when_window_empty_then_clear_error(bars) -> None:
    with pytest.raises(Exception, match="window is empty"):
        run_backtest(bars, S, start=END, end=START)


def test_write_report_when_run_then_every_artifact_written_and_readable(result, tmp_path) -> None:
    settings = load_settings(data={"var_dir": tmp_path})
    report = write_report(result, settings, "golden")
    assert sorted(p.name for p in report.directory.iterdir()) == sorted(ARTIFACTS)
    assert report.directory == tmp_path / "reports" / "golden"
    assert_frame_equal(pl.read_parquet(report.directory / "trades.parquet"), result.trades)
    assert pl.read_csv(report.directory / "trades.csv").height == result.trades.height
    decisions = pl.read_parquet(report.directory / "decisions.parquet")
    assert decisions.height == result.decisions.height
    assert "rvol_24h" in json.loads(decisions["features"][0])  # features at the signal bar, for learning
    summary = json.loads((report.directory / "summary.json").read_text())
    assert summary["trades"] == 97 and summary["scoring"] == "rule-only defaults (no champion model)"
    skipped = result.decisions.filter(~pl.col("taken"))
    assert summary["skips_by_code"] == dict(sorted(
        skipped.group_by("reason").len().iter_rows(), key=lambda kv: (-kv[1], kv[0])))  # counted by code
    assert sum(summary["skips_by_code"].values()) == skipped.height > 0
    assert set(summary["skips_by_code"]) <= {c.value for c in ReasonCode} - {"taken"}
    page = (report.directory / "report.html").read_text()
    assert "data:image/png;base64," in page and "<h2>Per coin</h2>" in page
    assert (report.directory / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report.by_symbol["symbol"]) <= set(SYMBOLS)
    assert report.by_strategy["trades"].sum() == result.trades.height
    assert report.summary["final_equity"] == pytest.approx(S.risk.capital + result.trades["net_pnl"].sum(), abs=1e-6)
    assert timedelta(0) < result.end - result.start


def test_run_backtest_when_paper_ledger_and_venue_execute_then_same_trades_as_fast_path(bars, real_candles, tmp_path) -> None:
    # The paper-trading path (the paper account's book in a real DuckDB store + PaperVenue orders) against the
    # in-memory path on the same two weeks: identical trades and cash until the data ends (where the fast
    # path marks positions out and the ledger keeps them open).

    from core.backtest.execution import LedgerExecution
    from core.storage.duckdb_store import DuckDBStore
    from core.trading.account import paper_account

    window = bars.filter(pl.col("ts") < datetime(2024, 1, 15, tzinfo=UTC))
    fine = real_candles("5m", SYMBOLS, START, datetime(2024, 1, 15, tzinfo=UTC))
    fast = run_backtest(window, S, start=START, exit_bars=fine)
    store = DuckDBStore(tmp_path / "paper.duckdb")
    store.init_schema()
    account = paper_account(store, S)
    ledger = run_backtest(window, S, start=START, exit_bars=fine, execution=LedgerExecution(account))
    cols = ["position_id", "entry_ts", "exit_ts", "entry_price", "exit_price", "quantity", "fees", "net_pnl", "exit_reason"]
    assert ledger.trades.height > 5
    assert_frame_equal(fast.trades.filter(pl.col("exit_reason") != "end_of_data").select(cols), ledger.trades.select(cols))
    assert_frame_equal(fast.equity.head(fast.equity.height - 1), ledger.equity.head(fast.equity.height - 1))
    # Every decision, taken or skipped, is in the store with its reason; the venue holds the orders.
    stored = dict(store.get_records("decision"))
    assert len(stored) == ledger.decisions.height
    assert {d["reason"] for d in stored.values()} == set(ledger.decisions["reason"])
    assert account.venue.get_order(ledger.fills["client_order_id"][0]) is not None
    store.close()


def test_cli_backtest_and_paper_when_run_then_report_printed_and_paper_ledger_guarded(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from deployments.cli import app

    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "160")
    runner = CliRunner()
    bt = runner.invoke(app, ["backtest", "--source", "files", "--symbols", "BTC,ETH", "--start", "2024-01-01", "--end", "2024-02-01"])
    assert bt.exit_code == 0, bt.output
    assert "rule-only defaults (no champion model)" in bt.output and "per strategy" in bt.output
    assert "skips by code" in bt.output  # the report counts skipped signals per ReasonCode
    [run_dir] = (tmp_path / "reports").iterdir()
    assert run_dir.name.startswith("backtest-1h-20240101-20240201-2sym")
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(ARTIFACTS)

    imp = runner.invoke(app, ["import", "--symbols", "BTC,ETH", "--timeframes", "1h", "--start", "2023-12-01",
                              "--end", "2024-02-01", "--no-progress"])
    assert imp.exit_code == 0, imp.output
    paper = runner.invoke(app, ["paper", "--days", "20", "--symbols", "BTC,ETH"])
    assert paper.exit_code == 0, paper.output
    assert "paper-1h-20240112-20240201" in paper.output
    again = runner.invoke(app, ["paper", "--days", "20", "--symbols", "BTC,ETH"])
    assert again.exit_code == 1
    assert "pass --reset" in again.output
    assert runner.invoke(app, ["paper", "--days", "20", "--symbols", "BTC,ETH", "--reset"]).exit_code == 0


def test_run_main_job_when_run_twice_then_fresh_paper_book_and_identical_report(tmp_path) -> None:
    from core.backtest.session import run_main_job
    from core.storage.duckdb_store import DuckDBStore
    from core.trading.journal import JOURNAL

    settings = load_settings(data={"var_dir": tmp_path, "symbols": ["BTC", "ETH"]})
    store = DuckDBStore(settings.duckdb_path)
    imported, first, report = run_main_job(store, settings, days=10, show_import=False)
    assert {r.timeframe for r in imported} == {"1h", "5m"}
    assert first.start == datetime(2026, 4, 15, 15, tzinfo=UTC)  # the last 10 days before the newest BTC/ETH bar
    assert report.summary["scoring"] == "rule-only defaults (no champion model)"
    journal = len(store.get_records(JOURNAL))
    _, second, _ = run_main_job(store, settings, days=10, show_import=False)
    assert_frame_equal(first.trades, second.trades)
    assert_frame_equal(first.decisions, second.decisions)
    assert len(store.get_records(JOURNAL)) == journal  # the rerun replaced the replayed ledger, not appended
    store.close()
