"""SHAP explanations of a small model trained on real events: exact attributions and a real PNG per output."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from xgboost import DMatrix, XGBRegressor

from core.settings import load_settings
from models.dataset import build_events
from models.explain import explain_strategy_model, shap_summary_plot, shap_values
from models.train import fit_strategy_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def swing(real_candles):
    settings = load_settings(ml={"n_estimators": 20})
    bars = real_candles("1h", ["BTC", "ETH", "SOL", "DOGE"], datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC))
    ev = build_events(bars, settings, ("swing",))["swing"]
    model = fit_strategy_model(ev.trainable, "swing", ev.feature_names, settings)
    return model, ev.trainable


def test_explain_strategy_model_when_real_model_then_one_png_per_output(swing, tmp_path: Path) -> None:
    model, events = swing
    paths = explain_strategy_model(model, events, tmp_path / "shap")
    assert set(paths) == {"confidence", "take_profit_pct", "stop_loss_pct"}  # swing's outputs
    for p in paths.values():
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000  # a drawn plot, not an empty canvas


def test_shap_values_when_real_booster_then_they_sum_to_its_margin(swing) -> None:
    # Shapley efficiency: bias + sum of a row's SHAP values = the booster's raw margin for that row; and the
    # values equal xgboost's own TreeSHAP (pred_contribs, an independent implementation).
    model, events = swing
    booster = model.classifier.calibrated_classifiers_[0].estimator
    x = model.matrix(events.head(50))
    assert np.isnan(x).any()  # missing inputs are part of the check
    values = shap_values([booster], x)
    contribs = booster.get_booster().predict(DMatrix(x), pred_contribs=True)
    margin = booster.predict(x, output_margin=True)
    np.testing.assert_allclose(values, contribs[:, :-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(values.sum(axis=1) + contribs[:, -1], margin, rtol=1e-4, atol=1e-4)
    # the ensemble value is the mean of its boosters'
    boosters = [c.estimator for c in model.classifier.calibrated_classifiers_]
    each = [shap_values([b], x) for b in boosters]
    np.testing.assert_allclose(shap_values(boosters, x), np.mean(each, axis=0))


def test_shap_values_when_target_depends_on_one_feature_then_it_dominates() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = 3.0 * x[:, 1] + 0.05 * rng.normal(size=400)
    reg = XGBRegressor(n_estimators=30, max_depth=3, n_jobs=1, random_state=0).fit(x, y)
    mean_abs = np.abs(shap_values([reg], x)).mean(axis=0)
    assert mean_abs.argmax() == 1 and mean_abs[1] > 10 * max(mean_abs[0], mean_abs[2])


def test_shap_summary_plot_when_inputs_missing_then_clear_error(swing, tmp_path: Path) -> None:
    model, events = swing
    with pytest.raises(ValueError, match="lacks model inputs"):
        shap_summary_plot(model.regressors["take_profit_pct"], events.drop("rsi"), model.feature_names, tmp_path / "x.png", "t")
    with pytest.raises(ValueError, match="no rows"):
        shap_summary_plot(model.regressors["take_profit_pct"], events.head(0), model.feature_names, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()
    assert isinstance(events, pl.DataFrame)
