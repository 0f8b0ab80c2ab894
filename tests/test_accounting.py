"""Accounting invariants of a backtest on real candles: the cash book, the marks and the fees add up."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from core.backtest.engine import run_backtest
from core.settings import load_settings

SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "DOGE", "AVAX", "LINK"]
START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 4, 1, tzinfo=UTC)  # includes positions marked out at the end of the data
S = load_settings()


@pytest.fixture(scope="module")
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", SYMBOLS, datetime(2023, 12, 1, tzinfo=UTC), END)


@pytest.fixture(scope="module", params=["1h exits", "5m exits"])
def run(request, bars, real_candles):
    fine = real_candles("5m", SYMBOLS, START, END) if request.param == "5m exits" else None
    return bars, run_backtest(bars, S, start=START, exit_bars=fine)


def test_cash_when_replayed_from_fills_then_equals_the_curve_at_every_step(run) -> None:
    _, r = run
    # An entry fill is stamped with its bar's open (known at that bar's close), an exit with the close.
    flows = r.fills.select(
        "ts",
        pl.when(pl.col("side") == "buy").then(-(pl.col("price") * pl.col("quantity") + pl.col("fee")))
        .otherwise(pl.col("price") * pl.col("quantity") - pl.col("fee")).alias("flow"),
        (pl.col("side") == "buy").alias("buy"),
    )
    cash = [
        S.risk.capital + flows.filter((pl.col("buy") & (pl.col("ts") < t)) | (~pl.col("buy") & (pl.col("ts") <= t)))["flow"].sum()
        for t in r.equity["ts"].to_list()
    ]
    assert r.equity["cash"].to_list() == pytest.approx(cash, abs=1e-6)


def test_equity_when_marked_then_cash_plus_held_quantity_times_last_close(run) -> None:
    bars, r = run
    # Independent of the engine's marks: held quantity from the fills, priced at the last close before t.
    closes = bars.select("symbol", (pl.col("ts") + pl.duration(hours=1)).alias("t"), "close").sort("t")
    moves = r.fills.join(r.trades.select("position_id", "symbol"), on="position_id").select(
        "symbol", pl.col("ts").alias("fill_ts"), (pl.col("side") == "buy").alias("buy"),
        pl.when(pl.col("side") == "buy").then(pl.col("quantity")).otherwise(-pl.col("quantity")).alias("dq"),
    )
    held = (
        r.equity.select(pl.col("ts").alias("t")).unique()
    ).join(moves, how="cross").filter(
        (pl.col("buy") & (pl.col("fill_ts") < pl.col("t"))) | (~pl.col("buy") & (pl.col("fill_ts") <= pl.col("t")))
    ).group_by("t", "symbol").agg(pl.col("dq").sum()).filter(pl.col("dq").abs() > 1e-12).sort("t")
    valued = held.sort("symbol", "t").join_asof(closes.sort("symbol", "t"), on="t", by="symbol", strategy="backward", check_sortedness=False).group_by("t").agg(
        (pl.col("dq") * pl.col("close")).sum().alias("value")
    )
    curve = r.equity.join(valued, left_on="ts", right_on="t", how="left").with_columns(pl.col("value").fill_null(0.0))
    assert curve["equity"].to_list() == pytest.approx((curve["cash"] + curve["value"]).to_list(), rel=1e-9, abs=1e-6)
    assert valued.height > 100


def test_fees_when_trades_closed_then_each_fill_fee_charged_once(run) -> None:
    _, r = run
    per_position = r.fills.group_by("position_id").agg(
        pl.col("fee").sum().alias("fill_fees"), (pl.col("side") == "sell").sum().alias("exits")
    )
    joined = r.trades.join(per_position, on="position_id", how="left")
    assert joined["exits"].to_list() == [1] * r.trades.height
    assert joined["fees"].to_list() == pytest.approx(joined["fill_fees"].to_list(), abs=1e-9)
    assert r.fills["client_order_id"].n_unique() == r.fills.height  # no order filled twice
    # Each fee is the rate of its liquidity on that fill's notional.
    rate = pl.when(pl.col("liquidity") == "maker").then(S.execution.maker_fee).otherwise(S.execution.taker_fee)
    assert r.fills.select(((pl.col("fee") - rate * pl.col("price") * pl.col("quantity")).abs() < 1e-9).all()).item()


def test_final_equity_when_all_closed_then_capital_plus_net_pnl(run) -> None:
    _, r = run
    final = r.equity["equity"][-1]
    assert final == pytest.approx(r.equity["cash"][-1], abs=1e-9)
    assert final == pytest.approx(S.risk.capital + r.trades["net_pnl"].sum(), abs=1e-6)
    assert r.trades.select((pl.col("net_pnl") - (pl.col("gross_pnl") - pl.col("fees"))).abs().max()).item() < 1e-9


def test_end_of_data_when_positions_open_at_the_last_bar_then_marked_out_and_booked(run) -> None:
    _, r = run
    eod = r.trades.filter(pl.col("exit_reason") == "end_of_data")
    assert eod.height > 0  # this window ends with open positions
    assert eod["exit_ts"].max() == r.equity["ts"].max()
    assert r.equity["open_notional"][-1] == 0.0
