"""Which symbols and how many bars one scan needs: the traded coins, the regime's market (BTC + the
monitored coins), and enough history for detection's warm-up and the regime's 30-day volatility median.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from core.domain import Signal, bars_in
from core.regime import BENCHMARK
from core.settings import Settings
from core.strategies.registry import warmup_bars

# The regime needs 30 days of BTC volatility for its median plus a day of returns.
REGIME_HISTORY = timedelta(days=32)


@dataclass(frozen=True)
class ScanUniverse:
    wanted: list[str]  # the coins traded by this scan
    market: list[str]  # the regime's coins
    timeframe: str
    detection_bars: int  # per symbol, for detection's warm-up
    history_bars: int  # per symbol, loaded once for detection and the regime

    @property
    def everyone(self) -> list[str]:
        return sorted(set(self.wanted) | set(self.market))

    def scan_bars(self, bars: pl.DataFrame) -> pl.DataFrame:
        """The traded coins' last `detection_bars` bars (what detection and the gate see)."""
        return bars.filter(pl.col("symbol").is_in(self.wanted)).group_by("symbol", maintain_order=True).tail(
            self.detection_bars
        )

    def market_bars(self, bars: pl.DataFrame) -> pl.DataFrame:
        return bars.filter(pl.col("symbol").is_in(self.market))


def scan_universe(settings: Settings, symbols: list[str] | None = None) -> ScanUniverse:
    tf = settings.data.detection_timeframe
    window = warmup_bars(settings)
    return ScanUniverse(
        wanted=list(symbols or settings.data.symbols),
        market=sorted(set(settings.data.symbols) | {BENCHMARK}),
        timeframe=tf,
        detection_bars=window,
        history_bars=max(window, bars_in(REGIME_HISTORY, tf)),
    )


def latest_marks(bars: pl.DataFrame) -> dict[str, float]:
    """Each symbol's last close in `bars` (the marks a scan values the book at)."""
    return dict(bars.group_by("symbol").agg(pl.col("close").last()).iter_rows())


def detect_latest(bars: pl.DataFrame, symbols: list[str], settings: Settings) -> list[Signal]:
    """Signals on each of `symbols`' last bar in `bars` (core.strategies.registry.scan_latest)."""
    from core.strategies.registry import scan_latest

    ok = bars.filter(pl.col("symbol").is_in(symbols))
    return [] if ok.is_empty() else scan_latest(ok, settings)
