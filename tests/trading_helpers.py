"""Shared helpers for the trading tests: real candles from the shipped data and signals built on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

import polars as pl

from core.domain import OrderType, Signal, StrategyName, TradePlan
from core.settings import Settings, load_settings

# One fixed real bar close per symbol (BTC..DOGE, 2024-03-01 12:00 UTC of the 1h file).
TS = datetime(2024, 3, 1, 12, tzinfo=UTC)
SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "ADA", "AVAX", "DOGE", "LINK"]


@lru_cache(maxsize=1)
def real_closes() -> dict[str, float]:
    settings = load_settings()
    frame = (
        pl.scan_parquet(settings.data.data_dir / "ohlcv_1h.parquet")
        .filter(pl.col("symbol").is_in(SYMBOLS) & (pl.col("ts") == TS))
        .select("symbol", "close")
        .collect()
    )
    return dict(zip(frame["symbol"], frame["close"], strict=True))


def make_signal(symbol: str, strategy: StrategyName, settings: Settings, vol: float | None = None) -> Signal:
    """A signal at a real close with the strategy's default plan (what the detectors emit)."""
    price = real_closes()[symbol]
    if strategy == StrategyName.DCA:
        c = settings.strategy.dca
        levels = tuple(price * (1 - c.grid_spacing * i) for i in range(c.grid_levels))
        plan = TradePlan(
            entry_type=OrderType.LIMIT,
            entry_prices=levels,
            take_profit_pct=c.take_profit,
            stop_loss_pct=c.stop_loss,
            max_hold=c.max_hold,
            entry_expiry=c.grid_expiry,
        )
    elif strategy == StrategyName.SWING:
        c = settings.strategy.swing
        plan = TradePlan(
            entry_type=OrderType.MARKET,
            entry_prices=(price,),
            take_profit_pct=c.take_profit,
            stop_loss_pct=c.stop_loss,
            trailing_stop_pct=c.trailing_stop,
            max_hold=c.max_hold,
        )
    else:
        c = settings.strategy.channel
        plan = TradePlan(
            entry_type=OrderType.MARKET,
            entry_prices=(price,),
            take_profit_pct=0.06,
            stop_loss_pct=0.03,
            max_hold=c.max_hold,
            range_support=price * 0.98,
            range_resistance=price * 1.08,
        )
    features = {} if vol is None else {"rvol_24h": vol}
    return Signal(
        symbol=symbol, strategy=strategy, timeframe="1h", ts=TS - timedelta(hours=1), price=price,
        plan=plan, features=features,
    )
