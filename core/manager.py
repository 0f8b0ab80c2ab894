"""The strategy manager: from scored signals to decisions (taken or skipped, always with a reason).

One call per scan (or per bar in a backtest): conflicts on one symbol are settled first (higher
confidence, then higher EV), then the winners are taken in order of EV then confidence, each through
the risk checks and sizing with the book as it stands after the previous ones were taken. The manager
only decides; opening positions/orders for the taken entries is the execution side's job.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from core.domain import Decision, OrderType, ReasonCode, Regime, Scores, Signal
from core.errors import StrategyError
from core.risk import (
    Holding,
    PortfolioView,
    RegimeEffects,
    RiskCheck,
    check_book,
    check_confidence,
    check_min_notional,
    check_regime,
)
from core.scoring import net_ev, round_trip_fee
from core.settings import Settings
from core.sizing import SizeResult, size_position

# The signal feature carrying the annualised realised volatility (last 24h of bars, core.indicators)
# used by the volatility scaler; every strategy reports it.
VOL_FEATURE = "rvol_24h"


@dataclass(frozen=True)
class Entry:
    """A taken decision the execution side must open: the signal, its scores and the sized notional."""

    signal: Signal
    scores: Scores
    notional: float
    size: SizeResult


class Verdict(NamedTuple):
    """One decision as plain values, what the manager decides for every signal. `decision()` is its
    Decision model, built only where one is stored or shown (the journal, a scan's artifact): a backtest
    keeps these tuples as rows instead of validating a model for each of its ~18k signals."""

    signal: Signal
    scores: Scores
    ev: float
    code: ReasonCode
    detail: str
    regime: Regime
    ts: datetime
    notional: float = 0.0

    @property
    def taken(self) -> bool:
        return self.code is ReasonCode.TAKEN

    def decision(self) -> Decision:
        """The scorer that produced the scores is in `scores` (model_version, rule_only), not the text."""
        sig = self.signal
        return Decision(
            signal_id=sig.signal_id,
            symbol=sig.symbol,
            strategy=sig.strategy,
            ts=self.ts,
            taken=self.taken,
            reason=self.code,
            detail=self.detail,
            regime=self.regime,
            confidence=self.scores.confidence,
            expected_value=self.ev,
            notional=self.notional,
            scores=self.scores,
            features=sig.features,  # validation copies it into the decision's own dict
        )


@dataclass
class ManagerResult:
    verdicts: list[Verdict] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    @functools.cached_property
    def decisions(self) -> list[Decision]:
        return [v.decision() for v in self.verdicts]


def skips_by_code(decisions: Iterable[Decision]) -> dict[str, int]:
    """How many signals were skipped for each reason code (what the reports show), most first."""
    counts = Counter(d.reason.value for d in decisions if not d.taken)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class _Candidate(NamedTuple):  # a tuple: built for every signal of a backtest, cheaper than a frozen dataclass
    signal: Signal
    scores: Scores
    ev: float


def _default_effects(regime: Regime, settings: Settings) -> RegimeEffects:
    from core.regime import (
        regime_effects,  # the regime module owns what each regime means
    )

    return regime_effects(regime, settings)


class StrategyManager:
    def __init__(
        self,
        settings: Settings,
        effects: Callable[[Regime, Settings], RegimeEffects] = _default_effects,
    ) -> None:
        self._settings = settings
        self._effects = effects
        # Round-trip fee per entry type (core.scoring.round_trip_fee), from the frozen settings once.
        self._fees = {t: round_trip_fee(t, settings) for t in OrderType}

    def decide(
        self,
        signals: list[Signal],
        scores: list[Scores],
        portfolio: PortfolioView,
        regime: Regime,
        ts: datetime,
    ) -> ManagerResult:
        if len(signals) != len(scores):
            raise StrategyError(f"scorer returned {len(scores)} scores for {len(signals)} signals")
        s = self._settings
        effects = self._effects(regime, s)
        view = PortfolioView(portfolio.equity, list(portfolio.holdings))  # working copy, grows as we take
        out = ManagerResult()
        fees = self._fees
        cands = [  # core.scoring.expected_value, with the fee of the entry type looked up
            _Candidate(sig, sc, float(net_ev(sc.confidence, sc.take_profit_pct, sc.stop_loss_pct, fees[sig.plan.entry_type])))
            for sig, sc in zip(signals, scores, strict=True)
        ]

        # 1. Conflicts: one candidate per symbol (ties broken by strategy name for determinism).
        by_symbol: dict[str, list[_Candidate]] = {}
        for c in cands:
            by_symbol.setdefault(c.signal.symbol, []).append(c)
        winners: list[_Candidate] = []
        for group in by_symbol.values():
            group.sort(key=lambda c: (-c.scores.confidence, -c.ev, c.signal.strategy))  # a StrEnum sorts by its value
            best = group[0]
            winners.append(best)
            for lost in group[1:]:
                reason = self._conflict_reason(best, lost)
                out.verdicts.append(Verdict(*lost, ReasonCode.LOST_CONFLICT, reason, regime, ts))

        # 2. Across symbols: EV, then confidence, then symbol (determinism).
        winners.sort(key=lambda c: (-c.ev, -c.scores.confidence, c.signal.symbol))
        for c in winners:
            check = self._pre_checks(c, view, regime, effects)
            if not check.approved:
                out.verdicts.append(Verdict(*c, check.code, check.reason, regime, ts))
                continue
            vol = c.signal.features.get(VOL_FEATURE)
            size = size_position(c.signal, c.scores, view, effects.size_factor, vol, s)
            check = check_min_notional(size.notional, s)
            if not check.approved:
                reason = check.reason + (f" ({size.capped_by} nearly used up)" if size.capped_by else "")
                out.verdicts.append(Verdict(*c, ReasonCode.BELOW_MIN_NOTIONAL, reason, regime, ts))
                continue
            out.verdicts.append(Verdict(*c, ReasonCode.TAKEN, size.explain(), regime, ts, size.notional))
            out.entries.append(Entry(c.signal, c.scores, size.notional, size))
            view.add(Holding(c.signal.symbol, c.signal.strategy, size.notional, pending=True))
        return out

    def _pre_checks(self, c: _Candidate, view: PortfolioView, regime: Regime, effects: RegimeEffects) -> RiskCheck:
        # In this order, stopping at the first denial (the later checks are not computed).
        check = check_regime(c.signal, regime, effects)
        if check.approved:
            check = check_confidence(c.signal, c.scores, effects, self._settings)
        if check.approved:
            check = check_book(c.signal, view, self._settings)
        return check if not check.approved else RiskCheck.ok()

    @staticmethod
    def _conflict_reason(best: _Candidate, lost: _Candidate) -> str:
        w, lo = best.scores.confidence, lost.scores.confidence
        if round(w, 9) > round(lo, 9):
            return f"lost conflict to {best.signal.strategy.value} (conf {w:.2f} > {lo:.2f})"
        if best.ev > lost.ev:
            return f"lost conflict to {best.signal.strategy.value} (conf {w:.2f} = {lo:.2f}, EV {best.ev:.4f} > {lost.ev:.4f})"
        return f"lost conflict to {best.signal.strategy.value} (conf and EV equal; tie broken by strategy name)"
