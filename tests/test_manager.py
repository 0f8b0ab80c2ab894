"""The strategy manager: conflicts, ordering across symbols, limits, regime effects, reasons."""

from __future__ import annotations

import pytest

from core.domain import Regime, StrategyName
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
    assert by_strategy[StrategyName.DCA].reason.startswith("lost conflict to swing (conf 0.65 > 0.60)")
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
    assert loser.reason.startswith("lost conflict to dca (conf 0.70 = 0.70, EV 0.0395 > 0.0245)")


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
    reasons = {d.symbol: d.reason for d in result.decisions if not d.taken}
    assert reasons["SOL"].startswith("strategy allocation exhausted (swing 30%")
    assert reasons["XRP"].startswith("open notional cap 50% reached")
    assert reasons["ETH"].startswith("open notional cap 50% reached")
    assert sum(e.notional for e in result.entries) <= 500.0 + 1e-9
    assert len(result.decisions) == len(signals)


def test_decide_when_six_candidates_fit_then_sixth_refused_by_max_positions() -> None:
    roomy = load_settings(risk={"max_open_notional": 1.0, "positions_per_strategy": 10})
    signals = [make_signal(sym, StrategyName.DCA, roomy) for sym in SYMBOLS[:6]]
    result = _decide(signals, settings=roomy)
    assert len(result.entries) == 5
    [refused] = [d for d in result.decisions if not d.taken]
    assert refused.reason.startswith("max positions 5 reached")


def test_decide_when_symbol_already_held_then_skipped() -> None:
    book = PortfolioView(1000.0, [Holding("BTC", StrategyName.DCA, 100.0)])
    result = _decide([make_signal("BTC", StrategyName.SWING, S)], book=book)
    assert result.entries == []
    assert result.decisions[0].reason.startswith("symbol BTC already held by dca")


def test_decide_when_panic_then_nothing_taken_and_reason_says_so() -> None:
    signals = [make_signal(sym, StrategyName.DCA, S) for sym in SYMBOLS[:3]]
    result = _decide(signals, regime=Regime.PANIC)
    assert result.entries == []
    assert all(d.reason.startswith("regime PANIC: no new entries") for d in result.decisions)
    assert all(d.regime == Regime.PANIC for d in result.decisions)


def test_decide_when_caution_then_sizes_halved_for_model_scores() -> None:
    signals = [make_signal("BTC", StrategyName.DCA, S)]
    scores = [RuleOnlyScorer(S).score(signals)[0].model_copy(update={"confidence": 0.8, "rule_only": False, "model_version": "2"})]
    normal = _decide(signals, scores=scores).entries[0].notional
    caution = _decide(signals, scores=scores, regime=Regime.CAUTION).entries[0].notional
    assert caution == pytest.approx(normal * S.risk.regime.caution_size_factor)


def test_decide_when_rule_only_then_every_decision_says_no_champion() -> None:
    signals = [make_signal("BTC", StrategyName.DCA, S), make_signal("BTC", StrategyName.SWING, S)]
    result = _decide(signals)
    assert all(d.reason.endswith("[rule-only defaults (no champion model)]") for d in result.decisions)
    assert all(d.scores is not None and d.scores.rule_only for d in result.decisions)


def test_decide_when_scores_missing_then_strategy_error() -> None:
    with pytest.raises(StrategyError, match="1 scores for 2 signals"):
        _decide([make_signal("BTC", StrategyName.DCA, S), make_signal("ETH", StrategyName.DCA, S)],
                scores=RuleOnlyScorer(S).score([make_signal("BTC", StrategyName.DCA, S)]))
