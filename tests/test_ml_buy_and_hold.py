"""Buy-and-hold BTC beside the OOS backtests: hand-computed on real BTC bars, in the OOS comparison and in
the main job's session report (same window, capital, fees)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.backtest.buy_and_hold import buy_and_hold
from core.backtest.engine import run_backtest
from core.backtest.report import write_report
from core.errors import DataQualityError
from core.session_report import write_session_report
from core.settings import load_settings
from models.evaluate import buy_and_hold_btc

START, END = datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 3, 11, tzinfo=UTC)  # BTC fell ~10% then rose


def _hand(bars: pl.DataFrame, capital: float, fee: float, slip: float) -> tuple[float, float, float]:
    """(total return, max drawdown, Sharpe) by plain arithmetic over the rows."""
    rows = bars.filter((pl.col("symbol") == "BTC") & (pl.col("ts") >= START) & (pl.col("ts") < END)).sort("ts").rows(named=True)
    buy = rows[0]["open"] * (1 + slip)
    qty = capital / (buy * (1 + fee))
    final = rows[-1]["close"] * (1 - slip) * qty * (1 - fee)
    path = [capital] + [r["close"] * qty for r in rows[:-1]] + [final]
    peak, mdd = path[0], 0.0
    for v in path:
        peak = max(peak, v)
        mdd = max(mdd, (peak - v) / peak)
    # daily equity = the last value of each UTC day (marks are at bar close = ts + 1h)
    by_day: dict = {START.date(): capital}
    for r, v in zip(rows, path[1:], strict=True):
        by_day[(r["ts"] + timedelta(hours=1)).date()] = v
    days = [by_day[d] for d in sorted(by_day)]
    rets = [b / a - 1 for a, b in zip(days, days[1:], strict=False)]
    mean = sum(rets) / len(rets)
    sd = math.sqrt(sum((x - mean) ** 2 for x in rets) / (len(rets) - 1))
    return final / capital - 1, mdd, mean / sd * math.sqrt(365)


def test_buy_and_hold_when_real_btc_window_then_equals_hand_computed(real_candles) -> None:
    # Arrange: BTC plus another coin (ignored), the 10 days of March 2023 and some bars outside the window.
    bars = real_candles("1h", ["BTC", "ETH"], START - timedelta(days=2), END + timedelta(days=2))
    settings = load_settings()
    fee, slip = settings.execution.taker_fee, settings.execution.slippage
    ret, mdd, sharpe = _hand(bars, 1000.0, fee, slip)
    # Act
    bh = buy_and_hold(bars, settings, START, END, capital=1000.0)
    # Assert
    assert bh.stats["total_return"] == pytest.approx(ret, rel=1e-12)
    assert bh.stats["max_drawdown"] == pytest.approx(mdd, rel=1e-12) and mdd > 0.05
    assert bh.stats["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert bh.stats["fees"] == pytest.approx(1000.0 * fee / (1 + fee) + bh.stats["final_equity"] * fee / (1 - fee), rel=1e-12)
    assert bh.equity.height == 240 and bh.equity["equity"][-1] == pytest.approx(1000.0 * (1 + ret))


def test_buy_and_hold_when_fees_rise_then_return_falls_by_both_legs(real_candles) -> None:
    bars = real_candles("1h", ["BTC"], START, END)
    cheap = buy_and_hold(bars, load_settings(execution={"taker_fee": 0.0, "slippage": 0.0}), START, END)
    dear = buy_and_hold(bars, load_settings(execution={"taker_fee": 0.01, "slippage": 0.0}), START, END)
    assert 1 + dear.stats["total_return"] == pytest.approx((1 + cheap.stats["total_return"]) * 0.99 / 1.01, rel=1e-12)


def test_buy_and_hold_when_no_btc_bars_then_clear_error_and_oos_skips_it(real_candles) -> None:
    bars = real_candles("1h", ["ETH"], START, END)
    with pytest.raises(DataQualityError, match="no BTC bars"):
        buy_and_hold(bars, load_settings(), START, END)
    assert buy_and_hold_btc(bars, load_settings(), START, END) is None


def test_session_report_when_written_then_buy_and_hold_column_and_curve(real_candles, tmp_path) -> None:
    # Arrange: two real (short) rule-only backtests standing in for the ML and rule runs of the main job.
    settings = load_settings(data={"var_dir": str(tmp_path)})
    bars = real_candles("1h", ["BTC", "ETH", "SOL"], START - timedelta(days=35), END)
    res = run_backtest(bars, settings, start=START, end=END)
    ml, rule = write_report(res, settings, "ml"), write_report(res, settings, "rule")
    ret, mdd, _ = _hand(bars, settings.risk.capital, settings.execution.taker_fee, settings.execution.slippage)
    # Act
    rep = write_session_report(tmp_path / "session", ml_report=ml, rule_report=rule, paper={}, capital=settings.risk.capital,
                               notes=[], settings=settings, btc_bars=bars)
    # Assert
    row = {r["metric"]: r for r in rep.comparison}
    assert row["total_return"]["buy_and_hold_btc"] == pytest.approx(ret, rel=1e-12)
    assert row["max_drawdown"]["buy_and_hold_btc"] == pytest.approx(mdd, rel=1e-12)
    assert row["total_return"]["rule_only"] == pytest.approx(ml.summary["total_return"])
    assert row["win_rate"]["buy_and_hold_btc"] is None
    page = rep.html.read_text()
    assert "<th>buy-and-hold BTC</th>" in page and f"{ret:.2%}" in page
    assert rep.png.stat().st_size > 10_000
    # Without BTC bars (and none under the data dir) the column stays empty and a note says why.
    bare = load_settings(data={"var_dir": str(tmp_path), "data_dir": str(tmp_path)})
    rep2 = write_session_report(tmp_path / "s2", ml_report=ml, rule_report=rule, paper={}, capital=1000.0, notes=[], settings=bare)
    assert all(r["buy_and_hold_btc"] is None for r in rep2.comparison)
    assert "buy-and-hold BTC not computed" in rep2.html.read_text()
