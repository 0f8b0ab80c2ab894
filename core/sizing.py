"""Position size = budget share x ML size multiplier x volatility scaler x regime size factor,
never above what the strategy's allocation has free, nor above the free room under the open-notional cap.

Budget share (the spec is silent; our choice): allocation x equity / risk.positions_per_strategy
(default 2), so each strategy can run two full-size positions inside its allocation. With $1000:
DCA 40% -> $400 / 2 = $200 per DCA position (5 grid levels of $40), Swing 30% -> $150, Channel
30% -> $150. Five average positions (~$170) would exceed the 50% open-notional cap ($500), so the cap,
not the slot count, is what usually binds; sizing clips to it instead of refusing while >= the
minimum order notional is left.

Volatility scaler = target vol / realised vol (both annualised), clipped to [0.5, 1.5]; with no
realised vol (too few bars) the scaler is 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.domain import Scores, Signal, StrategyName
from core.risk import PortfolioView, allocation_free, cap_free
from core.settings import Settings


@dataclass(frozen=True)
class SizeResult:
    notional: float
    budget: float
    size_multiplier: float
    vol_scaler: float
    regime_factor: float
    capped_by: str | None  # "allocation" | "open notional cap" | None

    def explain(self) -> str:
        text = (
            f"size ${self.notional:.2f} = budget ${self.budget:.2f} x ML {self.size_multiplier:.2f} "
            f"x vol {self.vol_scaler:.2f} x regime {self.regime_factor:.2f}"
        )
        return text + (f", capped by {self.capped_by}" if self.capped_by else "")


def budget_share(strategy: StrategyName, equity: float, settings: Settings) -> float:
    return settings.risk.allocation[strategy.value] * equity / settings.risk.positions_per_strategy


def vol_scaler(realised_vol: float | None, settings: Settings) -> float:
    r = settings.risk
    if realised_vol is None or not math.isfinite(realised_vol) or realised_vol <= 0:
        return 1.0
    return min(r.vol_scaler_max, max(r.vol_scaler_min, r.target_volatility / realised_vol))


def size_position(
    signal: Signal,
    scores: Scores,
    view: PortfolioView,
    regime_factor: float,
    realised_vol: float | None,
    settings: Settings,
) -> SizeResult:
    budget = budget_share(signal.strategy, view.equity, settings)
    scaler = vol_scaler(realised_vol, settings)
    raw = budget * scores.size_multiplier * scaler * regime_factor
    alloc_room = allocation_free(signal.strategy, view, settings)
    cap_room = cap_free(view, settings)
    notional, capped = raw, None
    if alloc_room < notional:
        notional, capped = alloc_room, "allocation"
    if cap_room < notional:
        notional, capped = cap_room, "open notional cap"
    return SizeResult(max(0.0, notional), budget, scores.size_multiplier, scaler, regime_factor, capped)
