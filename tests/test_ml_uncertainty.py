"""Bootstrap intervals and the Deflated Sharpe Ratio against hand-computed and published cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.uncertainty import (
    auc,
    auc_interval,
    block_bootstrap_indices,
    bootstrap_interval,
    brier_interval,
    deflated_sharpe_from_returns,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe,
    sharpe_interval,
    uncertainty_metrics,
)


def test_deflated_sharpe_when_bailey_lopez_de_prado_example_then_090() -> None:
    # The paper's numerical example (JPM 2014, sec. "A numerical example"): annualised SR 2.5 over 5 years
    # of daily returns (T = 1250), N = 100 trials with annualised V[SR] = 1/2, skew -3, kurtosis 10.
    # Published: SR0 = 0.1132 per day (1.79 annualised) and DSR = 0.9004.
    sr, v = 2.5 / math.sqrt(250), 0.5 / 250
    assert expected_max_sharpe(100, v) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe_ratio(sr, 1250, 100, v, skew=-3, kurt=10) == pytest.approx(0.9004, abs=5e-5)


def test_probabilistic_sharpe_when_hand_computed_then_matches() -> None:
    # SR = benchmark -> 0.5; SR 0.1 vs 0, T=101, normal: Z(0.1*10/sqrt(1 + 2/4*0.01)) = Z(0.99751) = 0.84073
    assert probabilistic_sharpe_ratio(0.2, 0.2, 50) == pytest.approx(0.5)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101) == pytest.approx(0.840734, abs=1e-5)


def test_deflated_sharpe_when_more_trials_then_lower() -> None:
    dsr = [deflated_sharpe_ratio(0.1, 500, n, 0.002) for n in (1, 10, 100, 1000)]
    assert dsr[0] == pytest.approx(probabilistic_sharpe_ratio(0.1, 0.0, 500))  # one trial: no selection
    assert dsr == sorted(dsr, reverse=True) and dsr[-1] < dsr[0] - 0.3


def test_deflated_sharpe_when_negative_skew_then_lower_than_normal() -> None:
    assert deflated_sharpe_ratio(0.15, 400, 20, 0.002, skew=-2, kurt=8) < deflated_sharpe_ratio(0.15, 400, 20, 0.002)


def test_deflated_sharpe_from_returns_when_pure_noise_many_trials_then_small() -> None:
    r = np.random.default_rng(1).normal(0, 0.01, 500)
    assert deflated_sharpe_from_returns(r, n_trials=200) < 0.2


def test_sharpe_when_hand_computed_then_matches() -> None:
    # mean 0.005, sample sd sqrt(500e-6 / 3) = 0.0129099 -> 0.387298
    assert sharpe(np.array([0.01, -0.01, 0.02, 0.0])) == pytest.approx(0.387298, abs=1e-6)
    assert math.isnan(sharpe(np.array([0.01, 0.01])))


def test_auc_when_compared_with_sklearn_then_equal_including_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)  # many ties
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert math.isnan(auc(np.ones(5), np.arange(5.0)))


def test_block_bootstrap_indices_when_block_len_given_then_rows_come_in_circular_runs() -> None:
    idx = block_bootstrap_indices(10, 4, 50, np.random.default_rng(0))
    assert idx.shape == (50, 10)
    # within each block of 4 the rows are consecutive modulo 10 (the last block is cut to fill n = 10)
    for row in idx:
        for b in range(0, 10, 4):
            block = row[b : b + 4]
            assert ((np.diff(block) % 10) == 1).all()


def test_bootstrap_interval_when_block_is_whole_series_then_mean_interval_collapses() -> None:
    # block_len = n: every replicate is a rotation of the series, so the mean never changes.
    x = np.array([1.0, 2.0, 4.0, 8.0])
    iv = bootstrap_interval(np.mean, x, block_len=4, n_boot=200)
    assert iv.point == iv.low == iv.high == pytest.approx(3.75)


def test_auc_and_brier_interval_when_perfect_predictions_then_degenerate() -> None:
    y = np.array([0, 1] * 20)
    iv = auc_interval(y, y.astype(float), n_boot=200)
    assert (iv.point, iv.low, iv.high) == (1.0, 1.0, 1.0)
    b = brier_interval(y, y.astype(float), n_boot=200)
    assert (b.point, b.low, b.high) == (0.0, 0.0, 0.0)


def test_bootstrap_interval_when_iid_mean_then_close_to_normal_theory() -> None:
    # mean of 2000 N(0, 1): 95% half-width 1.96 / sqrt(2000) = 0.0438
    x = np.random.default_rng(5).normal(0, 1, 2000)
    iv = bootstrap_interval(np.mean, x, block_len=1, n_boot=2000)
    assert (iv.high - iv.low) / 2 == pytest.approx(0.0438, rel=0.1)
    assert iv.low < iv.point < iv.high


def test_sharpe_interval_when_autocorrelated_returns_then_blocks_widen_it() -> None:
    # AR(1) with phi 0.8: the iid bootstrap understates the Sharpe's uncertainty; blocks do not.
    rng = np.random.default_rng(11)
    e = rng.normal(0.001, 0.01, 3000)
    r = np.empty_like(e)
    r[0] = e[0]
    for t in range(1, e.size):
        r[t] = 0.8 * r[t - 1] + e[t]
    iid = sharpe_interval(r, 365, block_len=1, n_boot=400)
    blocks = sharpe_interval(r, 365, block_len=50, n_boot=400)
    assert (blocks.high - blocks.low) > 1.8 * (iid.high - iid.low)
    assert iid.point == pytest.approx(sharpe(r) * math.sqrt(365))


def test_uncertainty_metrics_when_called_then_every_loggable_number_present() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    out = uncertainty_metrics(y, p, rng.normal(0, 0.01, 200), n_trials=12, periods_per_year=365, n_boot=200)
    assert set(out) == {"auc", "auc_ci_low", "auc_ci_high", "brier", "brier_ci_low", "brier_ci_high", "sharpe",
                        "sharpe_ci_low", "sharpe_ci_high", "deflated_sharpe", "n_trials"}  # fmt: skip
    assert out["auc_ci_low"] < out["auc"] < out["auc_ci_high"] and out["auc"] > 0.6
    assert 0.0 <= out["deflated_sharpe"] <= 1.0


def test_bootstrap_interval_when_bad_input_then_clear_error() -> None:
    with pytest.raises(ValueError, match="same length"):
        bootstrap_interval(np.mean, np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="n_trials"):
        expected_max_sharpe(0, 0.1)
