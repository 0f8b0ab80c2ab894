"""Decision rule: net EV from the model's p, TP and SL after venue fees, or SPEC's probability thresholds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from core.decision_rule import DecisionRule, break_even_probability, decide, takes
from core.domain import Regime, StrategyName
from core.regime import regime_effects
from core.risk import check_confidence
from core.scoring import RuleOnlyScorer, round_trip_fees
from core.settings import load_settings
from models.decision_eval import compare_rules, rule_outcomes
from tests.trading_helpers import make_signal

EV = load_settings(ml={"decision_rule": "ev"})
THRESHOLD = load_settings(ml={"decision_rule": "threshold"})


def _model_scores(strategy: StrategyName, p: float, tp: float, sl: float, settings=EV):
    signal = make_signal("BTC", strategy, settings)
    [rule] = RuleOnlyScorer(settings).score([signal])
    return signal, rule.model_copy(
        update={"confidence": p, "take_profit_pct": tp, "stop_loss_pct": sl, "rule_only": False, "model_version": "1"}
    )


def test_round_trip_fees_when_market_or_limit_entry_then_hand_computed() -> None:
    # swing: taker 0.40% + slippage 0.05% in, taker 0.40% out; dca: maker 0.25% in, taker 0.40% out
    assert round_trip_fees(make_signal("BTC", StrategyName.SWING, EV), EV) == pytest.approx(0.0085)
    assert round_trip_fees(make_signal("BTC", StrategyName.DCA, EV), EV) == pytest.approx(0.0065)


def test_break_even_probability_when_swing_payoff_then_near_029() -> None:
    # (SL + fees) / (TP + SL) = (0.05 + 0.0085) / 0.20
    assert break_even_probability(0.15, 0.05, 0.0085) == pytest.approx(0.2925)


def test_decide_when_ev_rule_and_p_just_above_break_even_then_taken_though_below_threshold() -> None:
    # EV(0.30) = 0.30*0.15 - 0.70*0.05 - 0.0085 = +0.0015; the SPEC threshold (0.65) refuses the same trade.
    signal, scores = _model_scores(StrategyName.SWING, 0.30, 0.15, 0.05)
    assert decide(signal, scores, 0.0, EV).take
    _, same = _model_scores(StrategyName.SWING, 0.30, 0.15, 0.05, THRESHOLD)
    refused = decide(signal, same, 0.0, THRESHOLD)
    assert not refused.take and refused.reason == "confidence 0.30 < threshold 0.65"


def test_decide_when_ev_rule_and_p_below_break_even_then_refused_with_numbers() -> None:
    # EV(0.28) = 0.042 - 0.036 - 0.0085 = -0.0025
    signal, scores = _model_scores(StrategyName.SWING, 0.28, 0.15, 0.05)
    d = decide(signal, scores, 0.0, EV)
    assert not d.take
    assert d.reason.startswith("expected value -0.25% <= min +0.00% (p 0.28, break-even p 0.29, TP 15.0%, SL 5.0%")


def test_decide_when_min_ev_raised_then_thin_edge_refused() -> None:
    signal, scores = _model_scores(StrategyName.SWING, 0.30, 0.15, 0.05)  # EV +0.15%
    strict = load_settings(ml={"decision_rule": "ev", "min_ev": 0.002})
    assert not decide(signal, scores, 0.0, strict).take
    assert decide(signal, scores.model_copy(update={"confidence": 0.32}), 0.0, strict).take  # EV +0.55%


def test_decide_when_model_predicts_tighter_tp_then_same_p_refused() -> None:
    # p 0.40, TP 5%, SL 5%: 0.02 - 0.03 - 0.0085 < 0 -- the model's own TP/SL matter, not the plan's 15%/5%.
    signal, scores = _model_scores(StrategyName.SWING, 0.40, 0.05, 0.05)
    assert signal.plan.take_profit_pct == pytest.approx(0.15)
    assert not decide(signal, scores, 0.0, EV).take


def test_check_confidence_when_caution_and_ev_rule_then_p_lowered_by_010() -> None:
    caution = regime_effects(Regime.CAUTION, EV)
    assert caution.threshold_add == pytest.approx(0.10)
    signal, ok = _model_scores(StrategyName.SWING, 0.40, 0.15, 0.05)  # 0.30 after the regime: EV +0.15%
    assert check_confidence(signal, ok, caution, EV).approved
    _, weak = _model_scores(StrategyName.SWING, 0.38, 0.15, 0.05)  # 0.28 after the regime: EV -0.25%
    refused = check_confidence(signal, weak, caution, EV)
    assert not refused.approved and "p 0.38 - 0.10 regime" in refused.reason
    assert check_confidence(signal, weak, regime_effects(Regime.NORMAL, EV), EV).approved


def test_check_confidence_when_rule_only_scores_and_ev_rule_then_threshold_applies() -> None:
    # Rule-only p is the threshold itself, not an estimate: rule-only trading is unchanged by the EV rule.
    signal = make_signal("BTC", StrategyName.DCA, EV)
    [rule] = RuleOnlyScorer(EV).score([signal])
    assert check_confidence(signal, rule, regime_effects(Regime.NORMAL, EV), EV).approved
    assert check_confidence(signal, rule, regime_effects(Regime.CAUTION, EV), EV).reason == "confidence 0.60 < threshold 0.70"


def test_takes_when_arrays_then_matches_decide_per_element() -> None:
    ps = np.array([0.20, 0.28, 0.30, 0.50, 0.70])
    for rule, settings in ((DecisionRule.EV, EV), (DecisionRule.THRESHOLD, THRESHOLD)):
        mask = takes(rule, ps, np.full(5, 0.15), np.full(5, 0.05), 0.0085, 0.65, settings.ml.min_ev)
        expected = [decide(*_model_scores(StrategyName.SWING, float(p), 0.15, 0.05, settings), 0.0, settings).take for p in ps]
        assert mask.tolist() == expected
    assert takes(DecisionRule.EV, ps, np.full(5, 0.15), np.full(5, 0.05), 0.0085, 0.65, 0.0).tolist() == [
        False, False, True, True, True,
    ]  # fmt: skip


def test_settings_when_decision_rule_unknown_then_refused() -> None:
    with pytest.raises(Exception, match="decision_rule"):
        load_settings(ml={"decision_rule": "coin-flip"})


def _predictions() -> pl.DataFrame:
    # Four swing events in 2024 Q1, Q2, Q3, Q3: p, the model's TP/SL and the realised net return.
    ts = [datetime(2024, 1, 5, tzinfo=UTC), datetime(2024, 4, 2, tzinfo=UTC),
          datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 9, 30, tzinfo=UTC)]  # fmt: skip
    return pl.DataFrame({
        "ts": ts, "entry_type": ["market"] * 4, "tp_pct": [0.15] * 4, "sl_pct": [0.05] * 4,
        "pred_confidence": [0.70, 0.20, 0.35, 0.29], "pred_take_profit_pct": [0.15, 0.15, 0.15, 0.15],
        "pred_stop_loss_pct": [0.05, 0.05, 0.05, 0.05], "net_return": [0.10, -0.05, -0.05, 0.14],
    })  # fmt: skip


def test_compare_rules_when_hand_built_predictions_then_counts_win_rate_and_quarters() -> None:
    out = compare_rules(_predictions(), "swing", EV)
    # threshold 0.65 takes event 0 only (Q1 of Q1..Q3: 1/3 quarters)
    assert out["threshold"] == {"trades": 1.0, "win_rate": 1.0, "mean_net_return": pytest.approx(0.10),
                                "quarters_with_trades_share": pytest.approx(1 / 3)}  # fmt: skip
    # EV (break-even 0.2925) takes events 0 and 2: Q1 and Q3
    assert out["ev"]["trades"] == 2.0 and out["ev"]["win_rate"] == 0.5
    assert out["ev"]["mean_net_return"] == pytest.approx(0.025)
    assert out["ev"]["quarters_with_trades_share"] == pytest.approx(2 / 3)
    assert out["all"]["trades"] == 4.0 and out["all"]["quarters_with_trades_share"] == 1.0


def test_rule_outcomes_when_nothing_taken_then_nan_rates_and_zero_share() -> None:
    out = rule_outcomes(_predictions(), np.zeros(4, dtype=bool))
    assert out["trades"] == 0.0 and np.isnan(out["win_rate"]) and out["quarters_with_trades_share"] == 0.0
