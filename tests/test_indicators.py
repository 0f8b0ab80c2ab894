"""Indicators against (1) hand-computed values, (2) a plain-Python reference of the TA-Lib formulas on
real candles, (3) TA-Lib itself when it is installed."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from core import indicators as ind
from core.domain import TIMEFRAME_DURATION
from tests.strategy_candles import bars_from_closes, make_bars, real_candles, utc

# ---- plain-Python references of the TA-Lib definitions (loops on purpose: independent of polars) ----


def ref_rsi(closes: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(closes)
    ch = [closes[i] - closes[i - 1] for i in range(1, len(closes))]
    if len(ch) < n:
        return out
    ag = sum(max(c, 0.0) for c in ch[:n]) / n
    al = sum(max(-c, 0.0) for c in ch[:n]) / n
    out[n] = 100 * ag / (ag + al)
    for i in range(n + 1, len(closes)):
        c = ch[i - 1]
        ag = (ag * (n - 1) + max(c, 0.0)) / n
        al = (al * (n - 1) + max(-c, 0.0)) / n
        out[i] = 100 * ag / (ag + al)
    return out


def ref_ema(xs: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(xs)
    if len(xs) < n:
        return out
    k = 2 / (n + 1)
    e = sum(xs[:n]) / n
    out[n - 1] = e
    for i in range(n, len(xs)):
        e = xs[i] * k + e * (1 - k)
        out[i] = e
    return out


def ref_atr(h: list[float], lo: list[float], c: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(c)
    tr = [max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(c))]
    if len(tr) < n:
        return out
    a = sum(tr[:n]) / n
    out[n] = a
    for i in range(n + 1, len(c)):
        a = (a * (n - 1) + tr[i - 1]) / n
        out[i] = a
    return out


def _assert_close(got: list[float | None], want: list[float | None]) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if w is None:
            assert g is None, f"bar {i}: expected warm-up null, got {g}"
        else:
            assert g is not None and math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), f"bar {i}: {g} != {w}"


@pytest.fixture(scope="module")
def btc_eth():
    # 600 real hours of BTC and ETH (2021-01-01 ..), enough for every warm-up.
    return real_candles(["BTC", "ETH"], utc(2021, 1, 1), utc(2021, 1, 25, 23))


# ---- hand-computed values ----


def test_rsi_when_three_bar_period_then_matches_hand_arithmetic():
    # closes 10, 11, 10.5, 11.5, 11, 12 -> changes +1, -0.5, +1, -0.5, +1; period 3.
    # bar 3: avg gain (1+0+1)/3 = 2/3, avg loss (0+0.5+0)/3 = 1/6 -> RSI = 100*(2/3)/(5/6) = 80
    # bar 4 (-0.5): gain (2/3*2+0)/3 = 4/9, loss (1/6*2+0.5)/3 = 5/18 -> RSI = 100*8/13 = 61.538...
    # bar 5 (+1):  gain (4/9*2+1)/3 = 17/27, loss (5/18*2)/3 = 5/27 -> RSI = 100*17/22 = 77.27...
    df = bars_from_closes([10, 11, 10.5, 11.5, 11, 12])
    got = df.select(ind.rsi("close", 3)).to_series().to_list()
    assert got[:3] == [None, None, None]
    assert got[3] == pytest.approx(80.0)
    assert got[4] == pytest.approx(800 / 13)
    assert got[5] == pytest.approx(1700 / 22)


def test_rsi_when_prices_flat_then_50_not_oversold():
    got = bars_from_closes([5.0] * 20).select(ind.rsi("close", 14)).to_series().to_list()
    assert got[13] is None and got[14:] == [50.0] * 6


def test_ema_when_three_bar_period_then_sma_seed_then_recursion():
    # [2, 4, 6, 5, 9], n=3, k=0.5: seed (2+4+6)/3 = 4; then 4+0.5*(5-4) = 4.5; 4.5+0.5*(9-4.5) = 6.75
    got = pl.DataFrame({"x": [2.0, 4, 6, 5, 9]}).select(ind.ema("x", 3)).to_series().to_list()
    assert got == [None, None, 4.0, 4.5, 6.75]


def test_atr_when_three_bar_period_then_matches_hand_arithmetic():
    # TR1 = max(11-9, |11-9|, |9-9|) = 2; TR2 = max(1, |10.5-10|, |9.5-10|) = 1;
    # TR3 = max(2, |13-10|, |11-10|) = 3 -> ATR3 = (2+1+3)/3 = 2
    # TR4 = max(4.5, |12.5-12|, |8-12|) = 4.5 -> ATR4 = (2*2 + 4.5)/3 = 2.8333...
    df = make_bars([(9, 10, 8, 9, 1), (9, 11, 9, 10, 1), (10, 10.5, 9.5, 10, 1), (10, 13, 11, 12, 1), (12, 12.5, 8, 9, 1)])
    got = df.select(ind.atr(3)).to_series().to_list()
    assert got[:3] == [None, None, None]
    assert got[3] == pytest.approx(2.0)
    assert got[4] == pytest.approx(8.5 / 3)


def test_volume_average_when_bar_20_then_mean_of_previous_20_excluding_current():
    df = pl.DataFrame({"volume": [float(v) for v in range(1, 26)]})
    got = df.select(ind.volume_average(20)).to_series().to_list()
    assert got[19] is None  # only 19 previous bars
    assert got[20] == pytest.approx(10.5)  # mean(1..20); the current 21 is excluded
    assert got[24] == pytest.approx(14.5)  # mean(5..24)


def test_realised_volatility_when_two_returns_then_annualised_sample_std():
    # log returns ln(110/100) = 0.0953102, ln(99/110) = -0.1053605; sample std = |r1 - r2| / sqrt(2)
    # annualised on 1h bars by sqrt(365*24 = 8760)
    r1, r2 = math.log(1.1), math.log(0.9)
    want = abs(r1 - r2) / math.sqrt(2) * math.sqrt(8760)
    got = pl.DataFrame({"close": [100.0, 110.0, 99.0]}).select(
        ind.realised_volatility(2, TIMEFRAME_DURATION["1h"])
    ).to_series().to_list()
    assert got[:2] == [None, None]
    assert got[2] == pytest.approx(want)


def test_rolling_high_when_excluding_current_then_previous_bars_only():
    df = pl.DataFrame({"high": [1.0, 5, 2, 3, 9]})
    assert df.select(ind.rolling_high(3)).to_series().to_list() == [None, None, 5, 5, 9]
    assert df.select(ind.rolling_high(3, include_current=False)).to_series().to_list() == [None, None, None, 5, 5]


# ---- real candles against the reference ----


@pytest.mark.parametrize("symbol", ["BTC", "ETH"])
def test_indicators_when_real_candles_then_agree_with_talib_reference(btc_eth, symbol):
    out = btc_eth.with_columns(
        ind.rsi("close", 14).over("symbol").alias("rsi"),
        ind.ema("close", 50).over("symbol").alias("ema"),
        ind.atr(14).over("symbol").alias("atr"),
    ).filter(pl.col("symbol") == symbol)
    c, h, lo = (out.get_column(k).to_list() for k in ("close", "high", "low"))
    _assert_close(out.get_column("rsi").to_list(), ref_rsi(c, 14))
    _assert_close(out.get_column("ema").to_list(), ref_ema(c, 50))
    _assert_close(out.get_column("atr").to_list(), ref_atr(h, lo, c, 14))


def test_indicators_when_talib_installed_then_identical_after_warmup(btc_eth):
    talib = pytest.importorskip("talib", reason="TA-Lib wheel not installed (it is a dev dependency: make test installs it)")
    one = btc_eth.filter(pl.col("symbol") == "BTC")
    out = one.select(ind.rsi("close", 14).alias("rsi"), ind.ema("close", 50).alias("ema"), ind.atr(14).alias("atr"))
    c, h, lo = (one.get_column(k).to_numpy() for k in ("close", "high", "low"))
    for name, ref in (("rsi", talib.RSI(c, 14)), ("ema", talib.EMA(c, 50)), ("atr", talib.ATR(h, lo, c, 14))):
        mine = out.get_column(name).to_numpy().astype(float)
        assert np.array_equal(np.isnan(mine), np.isnan(ref)), name
        np.testing.assert_allclose(mine[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-10, err_msg=name)


def test_indicators_when_over_symbol_then_each_symbol_as_if_alone(btc_eth):
    both = btc_eth.with_columns(ind.rsi("close", 14).over("symbol").alias("rsi"))
    alone = btc_eth.filter(pl.col("symbol") == "ETH").with_columns(ind.rsi("close", 14).alias("rsi"))
    assert both.filter(pl.col("symbol") == "ETH").get_column("rsi").equals(alone.get_column("rsi"))
