"""Whether to take a scored signal: on net expected value or on SPEC's probability thresholds (default).

"Confidence" is the model's calibrated probability that the trade, simulated with the plan's entry and the
venue's fees, ends with a net return > 0 (docs/ml.md). Comparing it with one fixed threshold ignores the
payoff: a Swing trade with TP 15% / SL 5% breaks even near p = 0.28 after fees, so a 0.65 threshold
refuses trades that are worth taking. The EV rule uses what the model knows instead:

    EV = p * TP - (1 - p) * SL - round-trip fees and slippage   (TP, SL: the model's own predictions)

and takes the signal when EV > settings.ml.min_ev. A regime that raises the threshold (CAUTION,
+0.10) lowers p by the same amount before the EV is computed, so both rules get stricter together.

Rule-only scores (no champion model) are always judged by the threshold: their p is the threshold by
construction (core.scoring.RuleOnlyScorer), not an estimate, and an EV built on it would mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.domain import ReasonCode, Scores, Signal
from core.scoring import min_confidence, net_ev, round_trip_fees
from core.settings import DecisionRule, Settings

__all__ = ["Decision", "DecisionRule", "break_even_probability", "decide", "takes"]

_EPS = 1e-9  # a rule-only p equal to its threshold must not be refused by float noise (0.6 + 0.0)


@dataclass(frozen=True)
class Decision:
    take: bool
    reason: str  # the detail, with its numbers
    code: ReasonCode = ReasonCode.TAKEN


_TAKE = Decision(True, "approved")  # frozen: one shared instance (asked for every signal of a backtest)


def break_even_probability(take_profit: float, stop_loss: float, fees: float) -> float:
    """The p at which EV = 0: (SL + fees) / (TP + SL)."""
    return (stop_loss + fees) / (take_profit + stop_loss)


def takes(
    rule: DecisionRule,
    p: np.ndarray,
    take_profit: np.ndarray,
    stop_loss: np.ndarray,
    fees: np.ndarray | float,
    threshold: np.ndarray | float,
    min_ev: float,
    threshold_add: float = 0.0,
) -> np.ndarray:
    """Vectorised decision for arrays of scored events (the bench and evaluations use it; `decide` too)."""
    p = np.asarray(p, dtype=np.float64)
    if rule == DecisionRule.THRESHOLD:
        return np.asarray(p + _EPS >= np.asarray(threshold) + threshold_add)
    ev = net_ev(np.clip(p - threshold_add, 0.0, 1.0), np.asarray(take_profit), np.asarray(stop_loss), np.asarray(fees))
    return np.asarray(ev > min_ev + _EPS)


def decide(signal: Signal, scores: Scores, threshold_add: float, settings: Settings) -> Decision:
    """Take or refuse one scored signal under settings.ml.decision_rule (rule-only scores: the threshold)."""
    threshold = min_confidence(signal.strategy, settings) + threshold_add
    rule = DecisionRule.THRESHOLD if scores.rule_only else settings.ml.decision_rule
    if rule == DecisionRule.THRESHOLD:
        if round(scores.confidence, 9) < round(threshold, 9):
            return Decision(False, f"confidence {scores.confidence:.2f} < threshold {threshold:.2f}", ReasonCode.LOW_CONFIDENCE)
        return _TAKE
    fees = round_trip_fees(signal, settings)
    p = max(0.0, scores.confidence - threshold_add)
    ev = float(net_ev(p, scores.take_profit_pct, scores.stop_loss_pct, fees))
    if ev <= settings.ml.min_ev + _EPS:
        p_be = break_even_probability(scores.take_profit_pct, scores.stop_loss_pct, fees)
        return Decision(
            False,
            f"expected value {ev:+.2%} <= min {settings.ml.min_ev:+.2%} "
            f"(p {scores.confidence:.2f}{f' - {threshold_add:.2f} regime' if threshold_add else ''}, "
            f"break-even p {p_be:.2f}, TP {scores.take_profit_pct:.1%}, SL {scores.stop_loss_pct:.1%}, fees {fees:.2%})",
            ReasonCode.LOW_EXPECTED_VALUE,
        )
    return _TAKE
