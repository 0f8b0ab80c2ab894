"""Backtest statistics from the trades and the equity curve (polars, no row loops).

Definitions (the spec is silent on these; our choices):
- Sharpe: the equity curve is sampled at each UTC day's last value (forward-filled over days without a
  step), daily simple returns, mean / std (ddof=1) x sqrt(365) because crypto trades every day; risk-free
  rate 0. Null when fewer than 2 returns or zero variance.
- Max drawdown: the largest fall from a running peak, as a fraction of that peak (0.12 = -12%).
- Per strategy / per coin, only realised P&L belongs to a group: its curve is capital + cumulative net
  P&L of its trades at their exit times, sampled the same way; Sharpe and drawdown come from that curve.
- Exposure (capital utilisation): time-weighted notional in the market / (capital x backtest duration),
  from each trade's entry notional and holding time; for the whole book also the mean of
  open notional / equity over the equity samples.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import cast

import polars as pl

DAYS_PER_YEAR = 365

TRADE_SCHEMA: dict[str, pl.DataType] = {
    "position_id": pl.Utf8(),
    "symbol": pl.Utf8(),
    "strategy": pl.Utf8(),
    "entry_ts": pl.Datetime("us", "UTC"),
    "exit_ts": pl.Datetime("us", "UTC"),
    "entry_price": pl.Float64(),
    "exit_price": pl.Float64(),
    "quantity": pl.Float64(),
    "gross_pnl": pl.Float64(),
    "fees": pl.Float64(),
    "net_pnl": pl.Float64(),
    "exit_reason": pl.Utf8(),
    "signal_id": pl.Utf8(),
}


def daily_curve(curve: pl.DataFrame, start: datetime, end: datetime, value: str = "equity") -> pl.Series:
    """The last value of each UTC day from start to end, forward-filled (days with no step keep the last)."""
    days = pl.datetime_range(start, end, "1d", time_unit="us", time_zone="UTC", eager=True).dt.truncate("1d").unique()
    daily = (
        curve.select(pl.col("ts").dt.truncate("1d").alias("day"), pl.col(value))
        .group_by("day", maintain_order=True)
        .agg(pl.col(value).last())
    )
    return (
        pl.DataFrame({"day": days}).join(daily, on="day", how="left").sort("day")
        .get_column(value).forward_fill().drop_nulls()
    )


def sharpe(daily_equity: pl.Series) -> float | None:
    rets = (daily_equity / daily_equity.shift(1) - 1).drop_nulls()
    if rets.len() < 2:
        return None
    sd = rets.std(ddof=1)
    if not isinstance(sd, float) or not sd > 0:
        return None
    return cast(float, rets.mean()) / sd * math.sqrt(DAYS_PER_YEAR)


def max_drawdown(equity: pl.Series) -> float:
    if equity.len() == 0:
        return 0.0
    peak = equity.cum_max()
    return float(cast(float | None, ((peak - equity) / peak).max()) or 0.0)


def _realised_curve(trades: pl.DataFrame, capital: float) -> pl.DataFrame:
    return trades.sort("exit_ts").select(
        pl.col("exit_ts").alias("ts"), (capital + pl.col("net_pnl").cum_sum()).alias("equity")
    )


def group_table(trades: pl.DataFrame, by: str, capital: float, start: datetime, end: datetime) -> pl.DataFrame:
    """One row per value of `by` (strategy or symbol) with the report statistics."""
    duration_s = max((end - start).total_seconds(), 1.0)
    base = trades.group_by(by).agg(
        pl.len().alias("trades"),
        (pl.col("net_pnl") > 0).mean().alias("win_rate"),
        pl.col("net_pnl").filter(pl.col("net_pnl") > 0).mean().alias("avg_win"),
        pl.col("net_pnl").filter(pl.col("net_pnl") <= 0).mean().alias("avg_loss"),
        pl.col("net_pnl").sum().alias("pnl"),
        pl.col("fees").sum().alias("fees"),
        (
            (pl.col("entry_price") * pl.col("quantity") * (pl.col("exit_ts") - pl.col("entry_ts")).dt.total_seconds()).sum()
            / (capital * duration_s)
        ).alias("exposure"),
    )
    extra = []
    for key in base.get_column(by).to_list():
        curve = _realised_curve(trades.filter(pl.col(by) == key), capital)
        start_row = pl.DataFrame({"ts": [start], "equity": [capital]}, schema=curve.schema)
        curve = pl.concat([start_row, curve])
        extra.append({by: key, "sharpe": sharpe(daily_curve(curve, start, end)), "max_drawdown": max_drawdown(curve["equity"])})
    stats = pl.DataFrame(extra, schema={by: pl.Utf8, "sharpe": pl.Float64, "max_drawdown": pl.Float64})
    return base.join(stats, on=by, how="left").sort(by)


def summary(trades: pl.DataFrame, equity: pl.DataFrame, capital: float, start: datetime, end: datetime) -> dict:
    """Whole-book statistics; equity has columns ts, cash, equity, open_notional."""
    first = pl.DataFrame({"ts": [start], "equity": [capital]}, schema={"ts": pl.Datetime("us", "UTC"), "equity": pl.Float64})
    curve = pl.concat([first, equity.select("ts", "equity")])
    daily = daily_curve(curve, start, end)
    final = float(curve["equity"][-1])
    wins = trades.filter(pl.col("net_pnl") > 0)
    losses = trades.filter(pl.col("net_pnl") <= 0)
    duration_s = max((end - start).total_seconds(), 1.0)
    time_weighted = trades.select(
        (pl.col("entry_price") * pl.col("quantity") * (pl.col("exit_ts") - pl.col("entry_ts")).dt.total_seconds()).sum()
    ).item()
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "capital": capital,
        "final_equity": final,
        "total_return": final / capital - 1,
        "trades": trades.height,
        "win_rate": (wins.height / trades.height) if trades.height else None,
        "avg_win": wins["net_pnl"].mean() if wins.height else None,
        "avg_loss": losses["net_pnl"].mean() if losses.height else None,
        "pnl": float(trades["net_pnl"].sum()),
        "fees": float(trades["fees"].sum()),
        "sharpe": sharpe(daily),
        "max_drawdown": max_drawdown(curve["equity"]),
        "exposure": float(time_weighted or 0.0) / (capital * duration_s),
        "mean_open_notional_share": (
            float(cast(float | None, (equity["open_notional"] / equity["equity"]).mean()) or 0.0) if equity.height else 0.0
        ),
    }
