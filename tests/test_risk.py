"""Risk limits: each check answers approved or denied with the reason a person would write down."""

from __future__ import annotations

from core.domain import Regime, StrategyName
from core.regime import regime_effects
from core.risk import Holding, PortfolioView, check_book, check_confidence, check_min_notional, check_regime
from core.scoring import RuleOnlyScorer
from core.settings import load_settings
from tests.trading_helpers import make_signal

S = load_settings()


def _book(*holdings: tuple[str, StrategyName, float], equity: float = 1000.0) -> PortfolioView:
    return PortfolioView(equity, [Holding(sym, strat, n) for sym, strat, n in holdings])


def test_check_book_when_sixth_position_then_refused() -> None:
    # Arrange: five tiny positions (well under the cap and every allocation), a sixth symbol asks.
    book = _book(*[(s, StrategyName.DCA, 10.0) for s in ["BTC", "ETH", "SOL", "XRP", "ADA"]])
    signal = make_signal("AVAX", StrategyName.SWING, S)
    # Act
    check = check_book(signal, book, S)
    # Assert
    assert not check.approved
    assert check.reason == "max positions 5 reached"
    assert check_book(signal, _book(*[(s, StrategyName.DCA, 10.0) for s in ["BTC", "ETH", "SOL", "XRP"]]), S).approved


def test_check_book_when_open_notional_at_cap_then_refused() -> None:
    # 50% of $1000 = $500 open: 200 DCA + 150 swing + 150 channel (each allocation still has room).
    book = _book(("BTC", StrategyName.DCA, 200.0), ("ETH", StrategyName.SWING, 150.0), ("SOL", StrategyName.CHANNEL, 150.0))
    check = check_book(make_signal("XRP", StrategyName.DCA, S), book, S)
    assert not check.approved
    assert check.reason == "open notional cap 50% reached"


def test_check_book_when_cap_has_room_left_then_approved() -> None:
    book = _book(("BTC", StrategyName.DCA, 200.0), ("ETH", StrategyName.SWING, 150.0), ("SOL", StrategyName.CHANNEL, 100.0))
    assert check_book(make_signal("XRP", StrategyName.DCA, S), book, S).approved


def test_check_book_when_strategy_allocation_exhausted_then_refused() -> None:
    # Swing has 30% of $2000 = $600 allocated and uses all of it; the cap ($1000) still has room.
    book = _book(("BTC", StrategyName.SWING, 300.0), ("ETH", StrategyName.SWING, 300.0), equity=2000.0)
    check = check_book(make_signal("XRP", StrategyName.SWING, S), book, S)
    assert not check.approved
    assert check.reason.startswith("strategy allocation exhausted (swing 30%")
    assert check_book(make_signal("XRP", StrategyName.DCA, S), book, S).approved


def test_check_book_when_symbol_held_or_pending_then_refused() -> None:
    held = PortfolioView(1000.0, [Holding("BTC", StrategyName.DCA, 40.0)])
    pending = PortfolioView(1000.0, [Holding("BTC", StrategyName.DCA, 200.0, pending=True)])
    signal = make_signal("BTC", StrategyName.SWING, S)
    assert check_book(signal, held, S).reason == "symbol BTC already held by dca"
    assert check_book(signal, pending, S).reason == "symbol BTC already pending by dca"


def test_check_regime_when_panic_or_euphoria_then_entries_limited() -> None:
    dca, swing = make_signal("BTC", StrategyName.DCA, S), make_signal("ETH", StrategyName.SWING, S)
    panic, euphoria = regime_effects(Regime.PANIC, S), regime_effects(Regime.EUPHORIA, S)
    assert check_regime(dca, Regime.PANIC, panic).reason == "regime PANIC: no new entries"
    assert check_regime(swing, Regime.EUPHORIA, euphoria).reason == "regime EUPHORIA: no new swing entries"
    assert check_regime(dca, Regime.EUPHORIA, euphoria).approved
    assert check_regime(swing, Regime.NORMAL, regime_effects(Regime.NORMAL, S)).approved


def test_check_confidence_when_caution_then_threshold_raised_by_010() -> None:
    signal = make_signal("BTC", StrategyName.DCA, S)
    [rule] = RuleOnlyScorer(S).score([signal])
    assert check_confidence(signal, rule, regime_effects(Regime.NORMAL, S), S).approved
    caution = check_confidence(signal, rule, regime_effects(Regime.CAUTION, S), S)
    assert not caution.approved
    assert caution.reason == "confidence 0.60 < threshold 0.70"
    strong = rule.model_copy(update={"confidence": 0.71, "rule_only": False, "model_version": "3"})
    assert check_confidence(signal, strong, regime_effects(Regime.CAUTION, S), S).approved


def test_check_confidence_when_below_threshold_then_refused_with_numbers() -> None:
    t = load_settings(ml={"decision_rule": "threshold"})  # SPEC's rule; the EV rule is in test_decision_rule
    signal = make_signal("BTC", StrategyName.SWING, t)
    [rule] = RuleOnlyScorer(t).score([signal])
    weak = rule.model_copy(update={"confidence": 0.55, "rule_only": False, "model_version": "1"})
    assert check_confidence(signal, weak, regime_effects(Regime.NORMAL, t), t).reason == "confidence 0.55 < threshold 0.65"


def test_check_min_notional_when_below_minimum_then_refused() -> None:
    assert not check_min_notional(4.99, S).approved
    assert check_min_notional(5.0, S).approved
