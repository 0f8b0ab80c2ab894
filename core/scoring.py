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

from core.domain import OrderType, Scores, Signal, StrategyName
from core.settings import Settings

FloatOrArray = TypeVar("FloatOrArray", float, np.ndarray)


@runtime_checkable
class Scorer(Protocol):
    def score(self, signals: list[Signal]) -> list[Scores]:
        """One Scores per signal, same order; a batch in one call."""


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
