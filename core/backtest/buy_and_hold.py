"""The buy-and-hold benchmark: all the capital into one coin (BTC) at the window's first bar, sold at its last.

Same costs as a market order of the engine (core.positions): buy at the first bar's open x (1 + slippage)
paying the taker fee, sell at the last bar's close x (1 - slippage) paying the taker fee. The quantity is
chosen so that price x quantity + entry fee = capital. Equity is marked at each bar close (cash 0); the
last point is the equity after the exit. Sharpe and max drawdown use core.backtest.metrics, the same
definitions as the backtests it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from core.backtest.metrics import daily_curve, max_drawdown, sharpe
from core.domain import timeframe_duration
from core.errors import DataQualityError
from core.settings import Settings

BENCHMARK_SYMBOL = "BTC"


@dataclass(frozen=True)
class BuyAndHold:
    symbol: str
    stats: dict  # total_return, sharpe, max_drawdown, final_equity, fees, entry/exit price and time, trades
    equity: pl.DataFrame  # ts (bar close), equity


def buy_and_hold(
    bars: pl.DataFrame,
    settings: Settings,
    start: datetime,
    end: datetime,
    symbol: str = BENCHMARK_SYMBOL,
    capital: float | None = None,
) -> BuyAndHold:
    """Buy `symbol` with all of `capital` (default settings.risk.capital) on the first bar with start <= ts <
    end, sell on the last one. `bars`: one timeframe, any symbols (the others are ignored)."""
    capital = settings.risk.capital if capital is None else capital
    mine = bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") >= start) & (pl.col("ts") < end)).sort("ts")
    if mine.is_empty():
        raise DataQualityError(f"no {symbol} bars between {start} and {end}: cannot compute buy-and-hold {symbol}")
    step = timeframe_duration(str(mine["timeframe"][0]))
    fee, slip = settings.execution.taker_fee, settings.execution.slippage
    entry_price = float(mine["open"][0]) * (1 + slip)
    quantity = capital / (entry_price * (1 + fee))
    exit_price = float(mine["close"][-1]) * (1 - slip)
    entry_fee = entry_price * quantity * fee
    exit_fee = exit_price * quantity * fee
    final = exit_price * quantity - exit_fee
    equity = mine.select(ts=pl.col("ts") + step, equity=pl.col("close") * quantity)
    equity = equity.with_columns(
        equity=pl.when(pl.int_range(pl.len()) == pl.len() - 1).then(pl.lit(final)).otherwise(pl.col("equity"))
    )
    curve = pl.concat([pl.DataFrame({"ts": [start], "equity": [capital]}, schema=equity.schema), equity])
    stats = {
        "total_return": final / capital - 1,
        "sharpe": sharpe(daily_curve(curve, start, end)),
        "max_drawdown": max_drawdown(curve["equity"]),
        "final_equity": final,
        "fees": entry_fee + exit_fee,
        "entry_price": entry_price,
        "exit_price": exit_price,
        "entry_ts": mine["ts"][0].isoformat(),
        "exit_ts": (mine["ts"][-1] + step).isoformat(),
        "trades": 1,
    }
    return BuyAndHold(symbol, stats, equity)
