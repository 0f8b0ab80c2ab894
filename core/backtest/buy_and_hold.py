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


def exposure_from_equity(equity: pl.DataFrame) -> pl.DataFrame:
    """A backtest's invested share at each step: ts (bar close), weight = (equity - cash) / equity, the value
    of the coins it holds over its equity, in [0, 1] (resting orders are not exposure), and cash."""
    return equity.sort("ts").select(
        "ts", "cash", weight=((pl.col("equity") - pl.col("cash")) / pl.col("equity")).clip(0.0, 1.0)
    )


def buy_and_hold_same_exposure(
    bars: pl.DataFrame,
    settings: Settings,
    start: datetime,
    end: datetime,
    book: pl.DataFrame,
    symbol: str = BENCHMARK_SYMBOL,
    capital: float | None = None,
    costs: bool = True,
) -> BuyAndHold:
    """BTC held with the same share of equity a strategy's book had in the market, bar by bar.

    `book`: the engine's equity curve (ts = bar close, cash, equity). Over `symbol`'s bars i with
    start <= ts_i < end (r_i = close_i / close_{i-1} - 1, the first bar from its open):

        w_i = the book's (equity - cash) / equity at its last step at or before ts_i (0 before its first;
              the engine records no step while the book is flat, so the last step says 0 there too)
        u_i = |cash at close_i - cash at close_{i-1}| / equity at close_{i-1} (the book's turnover in bar i:
              cash moves only on fills, not on marks)
        E_i = E_{i-1} x (1 + w_i x r_i) x (1 - (taker_fee + slippage) x u_i),   E_{-1} = capital

    i.e. rebalanced to the book's invested share before each bar at no cost, paying a market order's cost on
    the share of equity the book traded (`costs=False`: none, the bare market return of that exposure).
    Mean w is the time-weighted exposure (stats "exposure"), sum u the turnover (stats "turnover")."""
    capital = settings.risk.capital if capital is None else capital
    mine = bars.filter((pl.col("symbol") == symbol) & (pl.col("ts") >= start) & (pl.col("ts") < end)).sort("ts")
    if mine.is_empty():
        raise DataQualityError(f"no {symbol} bars between {start} and {end}: cannot compute same-exposure {symbol}")
    step = timeframe_duration(str(mine["timeframe"][0]))
    cost = settings.execution.taker_fee + settings.execution.slippage if costs else 0.0
    exp = exposure_from_equity(book).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    eq = book.sort("ts").select(pl.col("ts").dt.cast_time_unit("us"), book_equity="equity")
    frame = (
        mine.select(pl.col("ts").dt.cast_time_unit("us"), "open", "close")
        .with_columns(close_ts=pl.col("ts") + step)
        .join_asof(exp.rename({"ts": "ts_w"}), left_on="ts", right_on="ts_w", strategy="backward")
        .join_asof(exp.select(ts_c="ts", cash_close="cash"), left_on="close_ts", right_on="ts_c", strategy="backward")
        .join_asof(eq.rename({"ts": "ts_e"}), left_on="ts", right_on="ts_e", strategy="backward")
        .with_columns(
            w=pl.col("weight").fill_null(0.0),
            r=pl.col("close") / pl.col("close").shift(1).fill_null(pl.col("open").first()) - 1,
            u=(pl.col("cash_close").fill_null(capital) - pl.col("cash").fill_null(capital)).abs()
            / pl.col("book_equity").fill_null(capital),
        )
        .with_columns(equity=capital * ((1 + pl.col("w") * pl.col("r")) * (1 - cost * pl.col("u"))).cum_prod())
    )
    curve = pl.concat(
        [
            pl.DataFrame({"ts": [start], "equity": [capital]}, schema={"ts": pl.Datetime("us", "UTC"), "equity": pl.Float64}),
            frame.select(ts=pl.col("close_ts"), equity="equity"),
        ]
    )
    final = float(curve["equity"][-1])
    stats = {
        "total_return": final / capital - 1,
        "sharpe": sharpe(daily_curve(curve, start, end)),
        "max_drawdown": max_drawdown(curve["equity"]),
        "final_equity": final,
        "exposure": float(frame["w"].mean()),  # type: ignore[arg-type]
        "turnover": float(frame["u"].sum()),
    }
    return BuyAndHold(symbol, stats, curve.slice(1))
