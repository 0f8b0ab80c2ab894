"""Shared helpers for the trading tests: real candles from the shipped data and signals built on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

import polars as pl

from core.domain import OrderType, Scores, Signal, StrategyName, TradePlan
from core.positions import ManagedPosition, open_position
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


def dca_grid(settings: Settings, at: datetime = datetime(2024, 1, 1, tzinfo=UTC)) -> ManagedPosition:
    """A $200 BTC DCA grid signalled at `at` over two limit levels, 100 and 80: 1.0 and 1.25 units;
    TP 10 %, SL 5 %, 10 h hold, 24 h entry expiry."""
    plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=(100.0, 80.0), take_profit_pct=0.1, stop_loss_pct=0.05,
                     max_hold=timedelta(hours=10), entry_expiry=timedelta(hours=24))
    sig = Signal(symbol="BTC", strategy=StrategyName.DCA, timeframe="1h", ts=at, price=100.0, plan=plan)
    return open_position(sig, Scores(confidence=0.7, take_profit_pct=0.1, stop_loss_pct=0.05), 200.0, settings)
