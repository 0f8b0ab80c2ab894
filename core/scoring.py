"""The scoring interface between detection and the manager, and the rule-only default scorer.

A Scorer turns a batch of signals into one Scores each (same order). The ML package implements it with
the champion model; until a champion exists, RuleOnlyScorer applies the rule defaults and every
decision built on its scores says "rule-only defaults (no champion model)".

Rule-only confidence is honest about what it knows: nothing beyond the rule. It reports
p = the strategy's minimum confidence (DCA 0.60, Swing 0.65, Channel 0.30), so a rule signal exactly
meets the normal threshold, and the expected value uses that same p with the plan's TP/SL. It does not
meet a raised threshold (CAUTION adds +0.10): without a model nothing says the signal is better than
the bare rule, so rule-only trading takes no new entries in CAUTION.
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import polars as pl

from core.domain import OrderType, Scores, Signal, StrategyName
from core.settings import Settings

FloatOrArray = TypeVar("FloatOrArray", float, np.ndarray)


@runtime_checkable
class Scorer(Protocol):
    def score(self, signals: list[Signal]) -> list[Scores]:
        """One Scores per signal, same order; a batch in one call."""


@runtime_checkable
class ObservesBars(Protocol):
    """A scorer whose features include coin/market context: it is shown the scan's bars first
    (models.scorer.MLScorer). A backtest gives each signal the context at its own bar instead
    (models.context_scorer.HistoricalContextScorer)."""

    def observe_bars(self, bars: pl.DataFrame) -> None: ...


class BatchScored:
    """Scores computed for many signals in one call, then handed out per scan (the backtest scores its
    whole history in one batch: scores depend on the signal alone, not on the book)."""

    def __init__(self, signals: list[Signal], scores: list[Scores]) -> None:
        if len(signals) != len(scores):
            raise ValueError(f"{len(scores)} scores for {len(signals)} signals")
        self._signals, self._scores = signals, scores  # held: the ids below stay valid
        self._by_obj = {id(s): i for i, s in enumerate(signals)}  # the engine hands back these objects
        self._by_key: dict[tuple[StrategyName, str, str, object], Scores] | None = None

    def score(self, signals: list[Signal]) -> list[Scores]:
        out = []
        for s in signals:
            i = self._by_obj.get(id(s))
            out.append(self._scores[i] if i is not None and self._signals[i] is s else self._by_value(s))
        return out

    def _by_value(self, s: Signal) -> Scores:
        """An equal signal built elsewhere: looked up by (strategy, symbol, timeframe, ts)."""
        if self._by_key is None:
            self._by_key = {_key(x): sc for x, sc in zip(self._signals, self._scores, strict=True)}
        return self._by_key[_key(s)]


def _key(s: Signal) -> tuple[StrategyName, str, str, object]:
    return (s.strategy, s.symbol, s.timeframe, s.ts)


def min_confidence(strategy: StrategyName, settings: Settings) -> float:
    return float(getattr(settings.strategy, strategy.value).min_confidence)


def round_trip_fee(entry_type: OrderType | str, settings: Settings) -> float:
    """Entry fee (maker for a limit grid, taker + slippage for a market entry) plus a taker exit, as a fraction."""
    ex = settings.execution
    entry = ex.maker_fee if OrderType(entry_type) == OrderType.LIMIT else ex.taker_fee + ex.slippage
    return entry + ex.taker_fee


def round_trip_fees(signal: Signal, settings: Settings) -> float:
    return round_trip_fee(signal.plan.entry_type, settings)


def net_ev(p: FloatOrArray, take_profit: FloatOrArray, stop_loss: FloatOrArray, fees: FloatOrArray) -> FloatOrArray:
    """EV = p*TP - (1-p)*SL - fees, as a fraction of the notional (scalars or numpy arrays)."""
    return p * take_profit - (1.0 - p) * stop_loss - fees


def expected_value(signal: Signal, scores: Scores, settings: Settings) -> float:
    """EV = p*TP - (1-p)*SL - round-trip fees, as a fraction of the notional."""
    return float(net_ev(scores.confidence, scores.take_profit_pct, scores.stop_loss_pct, round_trip_fees(signal, settings)))


class RuleOnlyScorer:
    """Scores every rule signal with the rule defaults: p = the strategy threshold, TP/SL/hold from the plan."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cache: dict[tuple, Scores] = {}  # Scores is frozen: equal plans share one instance

    def score(self, signals: list[Signal]) -> list[Scores]:
        return [self._one(s) for s in signals]

    def _one(self, s: Signal) -> Scores:
        key = (s.strategy, s.plan.take_profit_pct, s.plan.stop_loss_pct, s.plan.max_hold)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = Scores(
                confidence=min_confidence(s.strategy, self._settings),
                take_profit_pct=s.plan.take_profit_pct,
                stop_loss_pct=s.plan.stop_loss_pct,
                size_multiplier=1.0,
                hold=s.plan.max_hold,
                model_version=None,
                rule_only=True,
            )
        return found
