"""Pre-trade risk: every check answers with a value (approved, or denied with a reason), never raises.

The manager asks these questions in a fixed order so the first failing limit is the one recorded:
regime -> confidence threshold -> one position per symbol -> max positions -> open notional cap ->
strategy allocation -> minimum order notional (after sizing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from core.decision_rule import decide
from core.domain import ReasonCode, Regime, Scores, Signal, StrategyName
from core.settings import Settings


@dataclass(frozen=True)
class RiskCheck:
    approved: bool
    reason: str  # the detail: which limit, with its numbers
    code: ReasonCode = ReasonCode.TAKEN  # why it was denied (TAKEN: nothing here stands in the way)

    @staticmethod
    def ok(reason: str = "approved") -> RiskCheck:
        # frozen, so the common answer is one shared instance (asked for every candidate of a backtest)
        return _APPROVED if reason == "approved" else RiskCheck(True, reason)

    @staticmethod
    def deny(code: ReasonCode, reason: str) -> RiskCheck:
        return RiskCheck(False, reason, code)


_APPROVED = RiskCheck(True, "approved")


class RegimeEffects(Protocol):
    """What core.regime.regime_effects returns. Read-only members, so the frozen dataclass satisfies it."""

    @property
    def allow_entries(self) -> bool: ...
    @property
    def allow_swing(self) -> bool: ...
    @property
    def size_factor(self) -> float: ...
    @property
    def threshold_add(self) -> float: ...


@dataclass(frozen=True)
class Holding:
    """A symbol we hold or have resting entry orders for; notional = marked filled qty + resting orders."""

    symbol: str
    strategy: StrategyName
    notional: float
    pending: bool = False


@dataclass
class PortfolioView:
    """What risk and sizing need to know about the book at decision time (add holdings with `add`)."""

    equity: float
    holdings: list[Holding] = field(default_factory=list)
    # Running totals (the manager asks for them once per candidate; holdings only grow during a decision).
    _by_symbol: dict[str, Holding] = field(default_factory=dict, init=False, repr=False, compare=False)
    _total: float = field(default=0.0, init=False, repr=False, compare=False)
    _by_strategy: dict[StrategyName, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        held, self.holdings = self.holdings, []
        for h in held:
            self.add(h)

    def add(self, holding: Holding) -> None:
        self.holdings.append(holding)
        self._by_symbol[holding.symbol] = holding
        self._total += holding.notional
        self._by_strategy[holding.strategy] = self._by_strategy.get(holding.strategy, 0.0) + holding.notional

    @property
    def open_notional(self) -> float:
        return self._total

    def strategy_notional(self, strategy: StrategyName) -> float:
        return self._by_strategy.get(strategy, 0.0)

    def holds(self, symbol: str) -> Holding | None:
        return self._by_symbol.get(symbol)


def allocation_limit(strategy: StrategyName, view: PortfolioView, settings: Settings) -> float:
    return settings.risk.allocation[strategy.value] * view.equity


def allocation_free(strategy: StrategyName, view: PortfolioView, settings: Settings) -> float:
    return max(0.0, allocation_limit(strategy, view, settings) - view.strategy_notional(strategy))


def cap_free(view: PortfolioView, settings: Settings) -> float:
    return max(0.0, settings.risk.max_open_notional * view.equity - view.open_notional)


def check_regime(signal: Signal, regime: Regime, effects: RegimeEffects) -> RiskCheck:
    if not effects.allow_entries:
        return RiskCheck.deny(ReasonCode.REGIME_NO_ENTRIES, f"regime {regime.value}: no new entries")
    if signal.strategy == StrategyName.SWING and not effects.allow_swing:
        return RiskCheck.deny(ReasonCode.REGIME_NO_SWING, f"regime {regime.value}: no new swing entries")
    return RiskCheck.ok()


def check_confidence(signal: Signal, scores: Scores, effects: RegimeEffects, settings: Settings) -> RiskCheck:
    """The decision rule (settings.ml.decision_rule: net EV or SPEC's threshold; core.decision_rule)."""
    decision = decide(signal, scores, effects.threshold_add, settings)
    return RiskCheck.ok() if decision.take else RiskCheck.deny(decision.code, decision.reason)


def check_book(signal: Signal, view: PortfolioView, settings: Settings) -> RiskCheck:
    """Limits that depend on the book only: symbol held, position count, notional cap, allocation."""
    held = view.holds(signal.symbol)
    if held is not None:
        state = "pending" if held.pending else "held"
        code = ReasonCode.SYMBOL_PENDING if held.pending else ReasonCode.SYMBOL_HELD
        return RiskCheck.deny(code, f"symbol {signal.symbol} already {state} by {held.strategy.value}")
    if len(view.holdings) >= settings.risk.max_positions:
        return RiskCheck.deny(ReasonCode.MAX_POSITIONS, f"max positions {settings.risk.max_positions} reached")
    floor = max(settings.risk.min_order_notional, 1e-9)
    if cap_free(view, settings) < floor:
        return RiskCheck.deny(ReasonCode.NOTIONAL_CAP, f"open notional cap {settings.risk.max_open_notional:.0%} reached")
    if allocation_free(signal.strategy, view, settings) < floor:
        return RiskCheck.deny(
            ReasonCode.ALLOCATION_EXHAUSTED,
            f"strategy allocation exhausted ({signal.strategy.value} "
            f"{settings.risk.allocation[signal.strategy.value]:.0%} of equity in use)"
        )
    return RiskCheck.ok()


def check_min_notional(notional: float, settings: Settings) -> RiskCheck:
    if notional < settings.risk.min_order_notional or notional <= 0:
        return RiskCheck.deny(
            ReasonCode.BELOW_MIN_NOTIONAL,
            f"order notional {notional:.2f} < minimum {settings.risk.min_order_notional:.2f}",
        )
    return RiskCheck.ok()
