"""No look-ahead: every output row at t is the same whether or not bars after t exist. Checked on real
candles of 3 symbols across the 2024-07-15 .. 2024-09-07 data hole, and proven able to fail with a
deliberately leaky strategy."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest

from core.domain import StrategyName
from core.errors import StrategyError
from core.regime import regime_frame
from core.settings import load_settings
from core.strategies.base import assert_no_lookahead, checked_detect, cut_points_every
from core.strategies.dca import DcaStrategy
from core.strategies.registry import build_strategies, detect_all
from tests.strategy_candles import real_candles, utc

SETTINGS = load_settings()


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    # BTC ETH SOL, 2024-06-20 .. 2024-09-20: ~600 bars each, including the 55-day hole.
    return real_candles(["BTC", "ETH", "SOL"], utc(2024, 6, 20), utc(2024, 9, 20))


@pytest.fixture(scope="module")
def cuts(bars) -> list:
    return [*cut_points_every(bars, 5), utc(2024, 7, 14, 23), utc(2024, 9, 8, 3)]


@dataclass(frozen=True)
class LeakyDca:
    """DCA that peeks at the next bar's close (shift(-1)): the check must catch it."""

    inner: DcaStrategy
    name: StrategyName = StrategyName.DCA
    feature_names: tuple[str, ...] = DcaStrategy.feature_names

    def detect(self, bars: pl.DataFrame) -> pl.DataFrame:
        out = self.inner.detect(bars)
        peek = (pl.col("close").shift(-1).over("symbol") > pl.col("close")).fill_null(False)
        return out.with_columns((pl.col("signal") | peek).alias("signal"))


@pytest.mark.parametrize("name", list(StrategyName))
def test_detect_when_future_bars_removed_then_rows_up_to_cut_unchanged(bars, cuts, name):
    strategy = build_strategies(SETTINGS)[name]
    assert_no_lookahead(lambda b: checked_detect(strategy, b), bars, cuts)


def test_detect_all_when_future_bars_removed_then_signals_up_to_cut_unchanged(bars, cuts):
    assert_no_lookahead(lambda b: detect_all(b, SETTINGS), bars, cuts)


def test_regime_when_future_bars_removed_then_rows_up_to_cut_unchanged(bars, cuts):
    assert_no_lookahead(lambda b: regime_frame(b, SETTINGS, min_breadth_coins=3), bars, cuts)


def test_assert_no_lookahead_when_strategy_uses_shift_minus_1_then_raises(bars, cuts):
    leaky = LeakyDca(DcaStrategy.from_settings(SETTINGS.strategy))
    with pytest.raises(StrategyError, match="look-ahead"):
        assert_no_lookahead(lambda b: checked_detect(leaky, b), bars, cuts)
