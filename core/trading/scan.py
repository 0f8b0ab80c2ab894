"""The scan as one pure function: from the detected signals, the book's view, the regime and the
scorer to a plan (decisions with reason codes and the entries' orders, built once). The Prefect scan
(tasks.trading) and the backtest engine (core.backtest.engine) both call `plan_scan`; nothing here
reads a clock, a store or a venue.

Detection is core.strategies.registry (scan_latest on a live window; detect_all once over a backtest's
history: the same rules, a value at bar t from bars <= t only); the regime reading is core.regime.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.domain import Decision, Regime, Scores, Signal, timeframe_duration
from core.manager import StrategyManager, Verdict, skips_by_code
from core.risk import PortfolioView
from core.scoring import Scorer
from core.settings import Settings
from core.trading.entries import PlannedEntry, order_rows, plan_entry


@dataclass(frozen=True)
class RegimeState:
    """The regime the last scan saw (stored between scans so a change is noticed once)."""

    regime: Regime
    reason: str
    since: datetime | None = None

    def to_record(self) -> dict[str, Any]:
        return {"regime": self.regime.value, "reason": self.reason, "since": self.since.isoformat() if self.since else None}

    @classmethod
    def from_record(cls, payload: dict[str, Any]) -> RegimeState:
        since = payload.get("since")
        return cls(Regime(payload["regime"]), str(payload.get("reason", "")), datetime.fromisoformat(since) if since else None)


@dataclass
class ScanPlan:
    now: datetime
    signals: list[Signal]  # on closed bars, not decided before
    scores: list[Scores]
    regime: RegimeState
    previous_regime: Regime | None
    verdicts: list[Verdict] = field(default_factory=list)  # one per signal, in the manager's order
    entries: list[PlannedEntry] = field(default_factory=list)

    @functools.cached_property
    def decisions(self) -> list[Decision]:
        """The verdicts as Decision models (what the journal stores and the scan shows), built on first
        read: the backtest engine reads the verdicts as rows and never builds them."""
        return [v.decision() for v in self.verdicts]

    @property
    def regime_changed(self) -> bool:
        return self.previous_regime is not self.regime.regime

    @property
    def skipped(self) -> list[Decision]:
        return [d for d in self.decisions if not d.taken]

    @property
    def skipped_verdicts(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.taken]

    @property
    def skips_by_code(self) -> dict[str, int]:
        return skips_by_code(self.decisions)

    def order_rows(self) -> list[dict[str, object]]:
        return order_rows(self.entries)


def plan_scan(
    signals: list[Signal],
    view: PortfolioView,
    decided: Collection[str],
    regime: tuple[Regime, str],
    previous: RegimeState | None,
    scorer: Scorer,
    settings: Settings,
    now: datetime,
    manager: StrategyManager | None = None,
) -> ScanPlan:
    """Decide on the signals whose bar closed by `now` and that no earlier scan decided (the 5-minute
    schedule sees the same hourly bar 12 times), with the book as `view` shows it (core.trading.
    valuation) in `regime` (core.regime, as of now); each taken entry becomes its position and orders.
    `previous`: the regime the last scan stored (None: none stored, which counts as a change)."""
    closed = [s for s in signals if s.ts + timeframe_duration(s.timeframe) <= now]
    fresh = [s for s in closed if s.signal_id not in decided] if decided else closed
    state = RegimeState(regime[0], regime[1], now)
    if previous is not None and previous.regime is state.regime:
        state = previous  # unchanged: keep when it began
    plan = ScanPlan(now, fresh, [], state, previous.regime if previous else None)
    if not fresh:
        return plan
    plan.scores = scorer.score(fresh)
    result = (manager or StrategyManager(settings)).decide(fresh, plan.scores, view, state.regime, now)
    plan.verdicts = result.verdicts
    taken = {v.signal.signal_id: v.decision() for v in result.verdicts if v.taken}
    plan.entries = [plan_entry(e.signal, e.scores, e.notional, settings, taken[e.signal.signal_id]) for e in result.entries]
    return plan
