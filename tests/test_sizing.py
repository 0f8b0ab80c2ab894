"""Sizing: budget share x ML multiplier x vol scaler x regime factor, clipped to free allocation and cap."""

from __future__ import annotations

import pytest

from core.domain import StrategyName
from core.risk import Holding, PortfolioView
from core.scoring import RuleOnlyScorer
from core.settings import load_settings
from core.sizing import budget_share, size_position, vol_scaler
from tests.trading_helpers import make_signal

S = load_settings()


def test_budget_share_when_1000_dollars_then_200_150_150() -> None:
    # allocation x equity / positions_per_strategy (2): 0.4*1000/2, 0.3*1000/2, 0.3*1000/2.
    assert budget_share(StrategyName.DCA, 1000.0, S) == pytest.approx(200.0)
    assert budget_share(StrategyName.SWING, 1000.0, S) == pytest.approx(150.0)
    assert budget_share(StrategyName.CHANNEL, 1000.0, S) == pytest.approx(150.0)


def test_vol_scaler_when_vol_extreme_then_clipped_to_half_and_one_and_a_half() -> None:
    # target 0.60 annualised: 0.60/0.30 = 2 -> 1.5; 0.60/2.40 = 0.25 -> 0.5; 0.60/0.80 = 0.75.
    assert vol_scaler(0.30, S) == pytest.approx(1.5)
    assert vol_scaler(2.40, S) == pytest.approx(0.5)
    assert vol_scaler(0.80, S) == pytest.approx(0.75)
    assert vol_scaler(None, S) == 1.0
    assert vol_scaler(float("nan"), S) == 1.0


def test_size_position_when_book_empty_then_product_of_factors() -> None:
    signal = make_signal("BTC", StrategyName.DCA, S)
    [scores] = RuleOnlyScorer(S).score([signal])
    scores = scores.model_copy(update={"size_multiplier": 1.2})
    size = size_position(signal, scores, PortfolioView(1000.0), 0.5, 0.80, S)
    # 200 x 1.2 x 0.75 x 0.5 = 90
    assert size.notional == pytest.approx(90.0)
    assert size.capped_by is None


def test_size_position_when_allocation_nearly_used_then_clipped_to_free_allocation() -> None:
    signal = make_signal("ETH", StrategyName.SWING, S)
    [scores] = RuleOnlyScorer(S).score([signal])
    book = PortfolioView(1000.0, [Holding("BTC", StrategyName.SWING, 250.0)])
    size = size_position(signal, scores, book, 1.0, 0.30, S)  # raw 150 x 1.5 = 225, swing has 300-250 free
    assert size.notional == pytest.approx(50.0)
    assert size.capped_by == "allocation"


def test_size_position_when_cap_nearly_used_then_clipped_to_cap_room() -> None:
    signal = make_signal("ETH", StrategyName.DCA, S)
    [scores] = RuleOnlyScorer(S).score([signal])
    book = PortfolioView(1000.0, [Holding("BTC", StrategyName.SWING, 300.0), Holding("SOL", StrategyName.CHANNEL, 120.0)])
    size = size_position(signal, scores, book, 1.0, None, S)  # raw 200, DCA free 400, cap free 500-420 = 80
    assert size.notional == pytest.approx(80.0)
    assert size.capped_by == "open notional cap"
