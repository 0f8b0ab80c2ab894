"""Historical context for backtest scoring: each signal gets the coin/market context AT ITS OWN BAR
before the champion scores it (models.features.context_features uses bars <= t only). Without it a
backtest would score every signal with the context of the window's last bar, i.e. with information
from its future. The live scan shows the scorer the scan's bars instead (core.scoring.ObservesBars).

The opt-in edge features (models.edge_features) follow the champion, not the backtest's settings: when
the inner scorer says what its models take (`input_names`, i.e. models.scorer.MLScorer), the edge
context is computed if any model takes it (or ml.edge_features is on; ~25% more context time on the
whole history otherwise), and the own-outcome features are added for the strategies whose model takes
them, from models.scorer.OwnOutcomes over the same bars (settled strictly before each signal's bar).
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from core.domain import Scores, Signal, StrategyName
from core.scoring import Scorer
from core.settings import Settings
from models.edge_features import EDGE_CONTEXT_FEATURES, OUTCOME_FEATURES
from models.features import context_features
from models.scorer import OwnOutcomes


def with_edge_context(settings: Settings) -> Settings:
    """The settings with ml.edge_features on: the context every scorer computes."""
    return settings.model_copy(update={"ml": settings.ml.model_copy(update={"edge_features": True})})


def _model_inputs(inner: Scorer) -> set[str]:
    """Every input of the inner scorer's models ({} when it does not say)."""
    names = getattr(inner, "input_names", None)
    return set().union(*(names(s.value) for s in StrategyName)) if names is not None else set()


class HistoricalContextScorer:
    def __init__(self, inner: Scorer, bars: pl.DataFrame, settings: Settings) -> None:
        edge = settings.ml.edge_features or bool(_model_inputs(inner) & set(EDGE_CONTEXT_FEATURES))
        ctx = context_features(bars, with_edge_context(settings) if edge else settings)
        names = [c for c in ctx.columns if c not in ("symbol", "ts")]
        self._inner = inner
        self._names = names
        self._ctx = {
            (r[0], r[1]): dict(zip(names, r[2:], strict=True)) for r in ctx.select("symbol", "ts", *names).iter_rows()
        }
        self._own = OwnOutcomes(bars, settings)

    def _at(self, symbol: str, ts: datetime) -> dict[str, float]:
        """The context at that bar; a missing value stays missing (NaN), never the scorer's latest context."""
        row = self._ctx.get((symbol, ts), {})
        return {n: math.nan if row.get(n) is None else float(row[n]) for n in self._names}

    def _takes_outcomes(self, strategy: str) -> bool:
        names = getattr(self._inner, "input_names", None)
        return names is not None and any(f in OUTCOME_FEATURES for f in names(strategy))

    def score(self, signals: list[Signal]) -> list[Scores]:
        own: list[dict[str, float]] = [{} for _ in signals]
        takes = {st: self._takes_outcomes(st) for st in {s.strategy.value for s in signals}}
        needing = [i for i, s in enumerate(signals) if takes[s.strategy.value]]
        for i, feats in zip(needing, self._own.features([signals[i] for i in needing]), strict=True):
            own[i] = feats
        enriched = [
            s.model_copy(update={"features": {**self._at(s.symbol, s.ts), **o, **s.features}})
            for s, o in zip(signals, own, strict=True)
        ]
        return self._inner.score(enriched)
