"""The strategy manager: conflicts, ordering across symbols, limits, regime effects, reasons."""

from __future__ import annotations

import pytest

from core.domain import ReasonCode, Regime, StrategyName
from core.errors import StrategyError
from core.manager import StrategyManager
from core.risk import Holding, PortfolioView
from core.scoring import RuleOnlyScorer, expected_value
from core.settings import load_settings
from tests.trading_helpers import SYMBOLS, TS, make_signal

S = load_settings()


def _decide(signals, settings=S, book=None, regime=Regime.NORMAL, scores=None):
    scores = scores if scores is not None else RuleOnlyScorer(settings).score(signals)
    return StrategyManager(settings).decide(signals, scores, book or PortfolioView(1000.0), regime, TS)


def test_decide_when_two_strategies_on_one_symbol_then_higher_confidence_wins() -> None:
    signals = [make_signal("BTC", StrategyName.DCA, S), make_signal("BTC", StrategyName.SWING, S)]
    result = _decide(signals)
    by_strategy = {d.strategy: d for d in result.decisions}
    assert by_strategy[StrategyName.SWING].taken
    assert not by_strategy[StrategyName.DCA].taken
    assert by_strategy[StrategyName.DCA].reason is ReasonCode.LOST_CONFLICT
    assert by_strategy[StrategyName.DCA].detail == "lost conflict to swing (conf 0.65 > 0.60)"
    assert by_strategy[StrategyName.SWING].reason is ReasonCode.TAKEN
    assert [e.signal.strategy for e in result.entries] == [StrategyName.SWING]


def test_decide_when_confidence_equal_then_higher_ev_wins() -> None:
    signals = [make_signal("ETH", StrategyName.DCA, S), make_signal("ETH", StrategyName.CHANNEL, S)]
    base = RuleOnlyScorer(S).score(signals)
    scores = [sc.model_copy(update={"confidence": 0.7, "rule_only": False, "model_version": "1"}) for sc in base]
    # DCA: 0.7*0.10 - 0.3*0.08 - (0.0025+0.004) = 0.0395; channel: 0.7*0.06 - 0.3*0.03 - (0.0045+0.004) = 0.0245
    assert expected_value(signals[0], scores[0], S) == pytest.approx(0.0395)
    assert expected_value(signals[1], scores[1], S) == pytest.approx(0.0245)
    result = _decide(signals, scores=scores)
    loser = next(d for d in result.decisions if not d.taken)
    assert loser.strategy == StrategyName.CHANNEL
    assert loser.reason is ReasonCode.LOST_CONFLICT
    assert loser.detail == "lost conflict to dca (conf 0.70 = 0.70, EV 0.0395 > 0.0245)"


def test_decide_when_many_symbols_then_taken_in_ev_order_until_limits() -> None:
    # Swing EV (0.0715) > DCA EV (0.0215) > channel EV (< 0): swings are taken first.
    signals = [make_signal(sym, strat, S) for sym, strat in zip(
        SYMBOLS[:6], [StrategyName.DCA, StrategyName.CHANNEL, StrategyName.SWING, StrategyName.DCA,
                      StrategyName.SWING, StrategyName.SWING], strict=True)]
    result = _decide(signals)
    taken = [(e.signal.symbol, e.signal.strategy, round(e.notional, 2)) for e in result.entries]
    # Swings SOL, ADA, AVAX tie on EV and confidence -> alphabetical; the swing allocation ($300) holds two.
    # Then DCA BTC/XRP (EV 0.0215): BTC gets its full $200 budget, which fills the $500 cap.
    assert taken == [
        ("ADA", StrategyName.SWING, 150.0),
        ("AVAX", StrategyName.SWING, 150.0),
        ("BTC", StrategyName.DCA, 200.0),
    ]
    reasons = {d.symbol: (d.reason, d.detail) for d in result.decisions if not d.taken}
    assert reasons["SOL"][0] is ReasonCode.ALLOCATION_EXHAUSTED
    assert reasons["SOL"][1].startswith("strategy allocation exhausted (swing 30%")
    assert reasons["XRP"] == (ReasonCode.NOTIONAL_CAP, "open notional cap 50% reached")
    assert reasons["ETH"] == (ReasonCode.NOTIONAL_CAP, "open notional cap 50% reached")
    assert sum(e.notional for e in result.entries) <= 500.0 + 1e-9
    assert len(result.decisions) == len(signals)


def test_decide_when_six_candidates_fit_then_sixth_refused_by_max_positions() -> None:
    roomy = load_settings(risk={"max_open_notional": 1.0, "positions_per_strategy": 10})
    signals = [make_signal(sym, StrategyName.DCA, roomy) for sym in SYMBOLS[:6]]
    result = _decide(signals, settings=roomy)
    assert len(result.entries) == 5
    [refused] = [d for d in result.decisions if not d.taken]
    assert (refused.reason, refused.detail) == (ReasonCode.MAX_POSITIONS, "max positions 5 reached")


def test_decide_when_symbol_already_held_then_skipped() -> None:
    book = PortfolioView(1000.0, [Holding("BTC", StrategyName.DCA, 100.0)])
    result = _decide([make_signal("BTC", StrategyName.SWING, S)], book=book)
    assert result.entries == []
    assert result.decisions[0].reason is ReasonCode.SYMBOL_HELD
    assert result.decisions[0].detail == "symbol BTC already held by dca"


def test_decide_when_panic_then_nothing_taken_and_reason_says_so() -> None:
    signals = [make_signal(sym, StrategyName.DCA, S) for sym in SYMBOLS[:3]]
    result = _decide(signals, regime=Regime.PANIC)
    assert result.entries == []
    assert all(d.reason is ReasonCode.REGIME_NO_ENTRIES for d in result.decisions)
    assert all(d.detail == "regime PANIC: no new entries" for d in result.decisions)
    assert all(d.regime == Regime.PANIC for d in result.decisions)


def test_decide_when_caution_then_sizes_halved_for_model_scores() -> None:
    signals = [make_signal("BTC", StrategyName.DCA, S)]
    scores = [RuleOnlyScorer(S).score(signals)[0].model_copy(update={"confidence": 0.8, "rule_only": False, "model_version": "2"})]
    normal = _decide(signals, scores=scores).entries[0].notional
    caution = _decide(signals, scores=scores, regime=Regime.CAUTION).entries[0].notional
    assert caution == pytest.approx(normal * S.risk.regime.caution_size_factor)


def test_decide_when_rule_only_then_every_decision_records_no_champion_beside_a_clean_reason() -> None:
    signals = [make_signal("BTC", StrategyName.DCA, S), make_signal("BTC", StrategyName.SWING, S)]
    result = _decide(signals)
    assert all(d.scores is not None and d.scores.rule_only and d.scores.model_version is None for d in result.decisions)
    assert all(d.scores.source == "rule-only defaults (no champion model)" for d in result.decisions if d.scores)
    assert not any("rule-only" in d.detail for d in result.decisions)  # the scorer is data, not appended text


def test_decision_when_stored_with_an_english_reason_then_loaded_with_its_code_and_text_kept() -> None:
    from core.domain import Decision

    old = {"signal_id": "dca:BTC:1h:x", "symbol": "BTC", "strategy": "dca", "ts": "2024-01-01T00:00:00Z",
           "taken": False, "reason": "symbol BTC already pending by swing [rule-only defaults (no champion model)]"}
    d = Decision.model_validate(old)
    assert d.reason is ReasonCode.SYMBOL_PENDING and d.detail == old["reason"]
    with pytest.raises(ValueError, match="unknown decision reason"):
        Decision.model_validate(old | {"reason": "because"})


def test_decide_when_scores_missing_then_strategy_error() -> None:
    with pytest.raises(StrategyError, match="1 scores for 2 signals"):
        _decide([make_signal("BTC", StrategyName.DCA, S), make_signal("ETH", StrategyName.DCA, S)],
                scores=RuleOnlyScorer(S).score([make_signal("BTC", StrategyName.DCA, S)]))
