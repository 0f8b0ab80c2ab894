"""Regime / circuit breaker: known real bars (a crash, a rally, a sell-off), thresholds, priority,
gaps, and the effects the manager applies."""

from __future__ import annotations

import polars as pl
import pytest

from core.domain import Regime
from core.errors import DataQualityError
from core.regime import REGIME_COLUMNS, regime_at, regime_effects, regime_frame
from core.settings import load_settings
from tests.strategy_candles import H, bars_from_closes, real_candles, utc

SETTINGS = load_settings()
COINS = ["BTC", "ETH", "XRP", "BNB", "ADA", "LINK", "ATOM", "DOGE"]  # the monitored coins listed in 2020-05


@pytest.fixture(scope="module")
def may_june_2020() -> pl.DataFrame:
    return regime_frame(real_candles(COINS, utc(2020, 5, 11), utc(2020, 6, 3)), SETTINGS)


def _at(frame: pl.DataFrame, ts) -> dict:
    return frame.filter(pl.col("ts") == ts).row(0, named=True)


def test_regime_when_real_btc_crash_2020_06_02_then_panic_with_all_three_reasons(may_june_2020):
    row = _at(may_june_2020, utc(2020, 6, 2, 14))
    # BTC close 13:00 10155.96 -> 14:00 9581.47: 1h = 9581.47 / 10155.96 - 1 = -5.66% <= -3%
    assert row["btc_ret_1h"] == pytest.approx(9581.47 / 10155.96 - 1)
    # 10:00 10141.25 -> 14:00: 4h = 9581.47 / 10141.25 - 1 = -5.52% <= -5%
    assert row["btc_ret_4h"] == pytest.approx(9581.47 / 10141.25 - 1)
    # 4h returns: ADA -6.37%, ATOM -8.17%, BNB -5.56%, BTC -5.52%, ETH -7.45%, LINK -6.59%, XRP -5.91%,
    # DOGE -3.77% -> 7 of 8 coins down more than 5% = 87.5% >= 70%
    assert row["breadth_down_4h"] == pytest.approx(7 / 8)
    assert row["regime"] == Regime.PANIC
    assert "BTC 1h -5.66%" in row["reason"] and "BTC 4h -5.52%" in row["reason"] and "87.5% of coins" in row["reason"]
    # the hour before was calm: 1h +0.32%, 4h +0.55%, no coin down 5% -> NORMAL
    before = _at(may_june_2020, utc(2020, 6, 2, 13))
    assert before["regime"] == Regime.NORMAL and before["breadth_down_4h"] == 0.0


def test_regime_when_real_btc_up_10pct_in_24h_then_euphoria(may_june_2020):
    # BTC 2020-05-13 09:00 8914.22 -> 05-14 09:00 9803.54: 24h = +9.98% >= +8%
    row = _at(may_june_2020, utc(2020, 5, 14, 9))
    assert row["btc_ret_24h"] == pytest.approx(9803.54 / 8914.22 - 1)
    assert row["regime"] == Regime.EUPHORIA and row["reason"].startswith("BTC 24h 9.98%")


def test_regime_when_real_btc_down_7pct_in_24h_then_caution(may_june_2020):
    # BTC 2020-05-20 14:00 9765.09 -> 05-21 14:00 9084.00: 24h = -6.97% <= -5% (1h and 4h not at panic levels)
    row = _at(may_june_2020, utc(2020, 5, 21, 14))
    assert row["btc_ret_24h"] == pytest.approx(9084.0 / 9765.09 - 1)
    assert row["btc_ret_1h"] > -0.03 and row["btc_ret_4h"] > -0.05
    assert row["regime"] == Regime.CAUTION


def _market(btc: list[float], others: list[float] | None = None, n_others: int = 4) -> pl.DataFrame:
    frames = [bars_from_closes(btc, symbol="BTC")]
    for sym in ["ETH", "SOL", "XRP", "ADA", "DOGE"][:n_others]:
        frames.append(bars_from_closes(others if others is not None else [100.0] * len(btc), symbol=sym))
    return pl.concat(frames)


def test_regime_when_btc_1h_exactly_minus_3pct_then_panic():
    # 100 -> 97: 97/100 - 1 = -3% <= -3%
    f = regime_frame(_market([100.0] * 30 + [97.0]), SETTINGS)
    assert f.row(-1, named=True)["regime"] == Regime.PANIC


def test_regime_when_btc_1h_minus_2_99pct_then_not_panic():
    f = regime_frame(_market([100.0] * 30 + [97.01]), SETTINGS)
    assert f.row(-1, named=True)["regime"] != Regime.PANIC


def test_regime_when_panic_and_euphoria_both_hold_then_panic_wins():
    # BTC +12% over 24h (euphoria) but -4% in the last hour (panic)
    btc = [100.0] * 30 + [116.0, 112.0]
    row = regime_frame(_market(btc), SETTINGS).row(-1, named=True)
    assert row["btc_ret_24h"] >= 0.08 and row["btc_ret_1h"] <= -0.03
    assert row["regime"] == Regime.PANIC


def test_regime_when_breadth_up_over_70pct_then_euphoria_even_if_btc_flat():
    # 4 other coins +20% in 24h, BTC flat: breadth_up = 4/5 = 80% >= 70%
    others = [100.0] * 30 + [120.0] * 2
    row = regime_frame(_market([100.0] * 32, others), SETTINGS).row(-1, named=True)
    assert row["breadth_up_24h"] == pytest.approx(0.8) and row["regime"] == Regime.EUPHORIA


def test_regime_when_fewer_than_5_coins_then_breadth_null_and_ignored():
    others = [100.0] * 30 + [120.0] * 2
    row = regime_frame(_market([100.0] * 32, others, n_others=3), SETTINGS).row(-1, named=True)
    assert row["breadth_up_24h"] is None and row["regime"] == Regime.NORMAL


def test_regime_when_bar_1h_earlier_missing_then_no_1h_return():
    # BTC drops 10% across a 2h hole: the 1h return is unknown (null), not a fake -10% in 1h
    btc = bars_from_closes([100.0] * 30 + [90.0], symbol="BTC")
    ts = btc.get_column("ts").to_list()
    btc = btc.with_columns(pl.Series("ts", ts[:-1] + [ts[-1] + 2 * H]))
    row = regime_frame(btc, SETTINGS).row(-1, named=True)
    assert row["btc_ret_1h"] is None
    assert row["btc_ret_4h"] == pytest.approx(-0.10) and row["regime"] == Regime.PANIC  # the 4h return is real


def test_regime_frame_when_no_btc_then_data_quality_error():
    with pytest.raises(DataQualityError, match="BTC"):
        regime_frame(bars_from_closes([1.0] * 5, symbol="ETH"), SETTINGS)


def test_regime_frame_when_built_then_contract_columns(may_june_2020):
    assert tuple(may_june_2020.columns) == REGIME_COLUMNS
    assert set(may_june_2020.get_column("regime").unique()) <= {r.value for r in Regime}


def test_regime_at_when_between_rows_then_last_row_at_or_before(may_june_2020):
    assert regime_at(may_june_2020, utc(2020, 6, 2, 14, 30))[0] is Regime.PANIC
    assert regime_at(may_june_2020, utc(2020, 6, 2, 13, 59))[0] is Regime.NORMAL
    regime, reason = regime_at(may_june_2020, utc(2019, 1, 1))
    assert regime is Regime.NORMAL and "no regime data" in reason


def test_regime_effects_when_each_regime_then_spec_effects():
    assert regime_effects(Regime.PANIC, SETTINGS).allow_entries is False
    caution = regime_effects(Regime.CAUTION, SETTINGS)
    assert (caution.allow_entries, caution.size_factor, caution.threshold_add) == (True, 0.5, 0.10)
    euphoria = regime_effects(Regime.EUPHORIA, SETTINGS)
    assert (euphoria.allow_entries, euphoria.allow_swing) == (True, False)
    normal = regime_effects(Regime.NORMAL, SETTINGS)
    assert (normal.allow_swing, normal.size_factor, normal.threshold_add) == (True, 1.0, 0.0)


def test_regime_when_btc_vol_jumps_over_2x_its_median_then_caution():
    # 300 calm hours alternating 100 / 100.1, then 24 hours alternating 100 / 102: 1h moves of 2% stay
    # above the -3% panic line and the 24h return is 0, but the 24h realised vol is ~20x its median.
    closes = [100.0 + 0.1 * (i % 2) for i in range(300)] + [100.0 + 2.0 * (i % 2) for i in range(24)]
    row = regime_frame(bars_from_closes(closes, symbol="BTC"), SETTINGS).row(-1, named=True)
    assert row["vol_ratio"] > 2.0 and row["btc_ret_1h"] > -0.03 and abs(row["btc_ret_24h"]) < 0.03
    assert row["regime"] == Regime.CAUTION and "realised vol" in row["reason"]


def test_regime_frame_when_validated_flag_then_same_frame_and_unsorted_still_refused_without_it():
    bars = real_candles(COINS, utc(2020, 5, 11), utc(2020, 5, 20))
    # validated=True (the backtest engine validated these bars already) skips only the re-check
    assert regime_frame(bars, SETTINGS, validated=True).equals(regime_frame(bars, SETTINGS))
    with pytest.raises(DataQualityError, match="sorted"):
        regime_frame(bars.sort("ts"), SETTINGS)
