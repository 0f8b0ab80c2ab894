"""Historical context for backtest scoring: each signal gets the coin/market context AT ITS OWN BAR
before the champion scores it (models.features.context_features uses bars <= t only). Without it a
backtest would score every signal with the context of the window's last bar, i.e. with information
from its future. The live scan shows the scorer the scan's bars instead (core.scoring.ObservesBars).
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from core.domain import Scores, Signal
from core.scoring import Scorer
from core.settings import Settings
from models.features import context_features


class HistoricalContextScorer:
    def __init__(self, inner: Scorer, bars: pl.DataFrame, settings: Settings) -> None:
        ctx = context_features(bars, settings)
        names = [c for c in ctx.columns if c not in ("symbol", "ts")]
        self._inner = inner
        self._names = names
        self._ctx = {
            (r[0], r[1]): dict(zip(names, r[2:], strict=True)) for r in ctx.select("symbol", "ts", *names).iter_rows()
        }

    def _at(self, symbol: str, ts: datetime) -> dict[str, float]:
        """The context at that bar; a missing value stays missing (NaN), never the scorer's latest context."""
        row = self._ctx.get((symbol, ts), {})
        return {n: math.nan if row.get(n) is None else float(row[n]) for n in self._names}

    def score(self, signals: list[Signal]) -> list[Scores]:
        enriched = [s.model_copy(update={"features": {**self._at(s.symbol, s.ts), **s.features}}) for s in signals]
        return self._inner.score(enriched)
