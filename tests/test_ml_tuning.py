"""Nested walk-forward tuning: the search never sees an outer test fold, and every trial is counted."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from core.errors import ConfigError
from core.settings import load_settings
from models import tuning
from models.dataset import build_events
from models.pipeline import train_strategy
from models.tracking import client
from models.tuning import Space, brier_objective, nested_tune, search, with_params
from models.walkforward import walk_forward_folds

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE"]
START, END = datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC)
SMALL: Space = {"n_estimators": (5, 20, False), "max_depth": (2, 3, False), "learning_rate": (0.05, 0.3, True)}
N_TRIALS, N_OUTER, N_INNER = 2, 2, 2


@pytest.fixture(scope="module")
def settings():
    return load_settings(ml={"n_estimators": 10, "walk_forward_folds": N_OUTER})


@pytest.fixture(scope="module")
def swing(real_candles, settings):
    bars = real_candles("1h", SYMBOLS, START, END)
    ev = build_events(bars, settings, ("swing",))["swing"]
    return ev.trainable.sort("ts"), ev.feature_names


@pytest.fixture(scope="module")
def tuned(swing, settings):
    events, names = swing
    calls: list[tuple[np.datetime64, np.datetime64, int]] = []
    real = brier_objective("swing", names)

    def spy(train: pl.DataFrame, test: pl.DataFrame, s) -> float:
        seen = pl.concat([train, test])
        calls.append((seen["ts"].max(), seen["label_end"].max(), s.ml.n_estimators))
        return real(train, test, s)

    result = nested_tune(events, "swing", names, settings, n_trials=N_TRIALS, n_inner=N_INNER, space=SMALL, objective=spy)
    return result, calls


def test_nested_tune_when_searching_then_no_trial_sees_its_outer_test_fold(swing, settings, tuned) -> None:
    events, _ = swing
    result, calls = tuned
    outer = walk_forward_folds(events, N_OUTER, settings.ml.embargo)
    assert len(result.outer) == len(outer) >= 1
    final = _final_search_after_outer_folds(calls, events, outer, settings)
    assert final and len(final) % N_TRIALS == 0  # the final search uses all events (its own inner folds)


def test_nested_tune_when_done_then_every_configuration_counted_and_loggable(tuned) -> None:
    result, calls = tuned
    assert result.n_trials == N_TRIALS * (len(result.outer) + 1)
    assert result.trials_per_search == N_TRIALS
    assert {c[2] for c in calls} <= set(range(5, 21))  # trials stayed inside the given space
    assert set(result.params_to_log()) == {"tuned_n_estimators", "tuned_max_depth", "tuned_learning_rate"}
    metrics = result.metrics_to_log()
    assert metrics["tuning_n_trials"] == float(result.n_trials)
    for f in result.outer:
        assert 0.0 <= metrics[f"tuning_outer{f.index}_brier"] <= 1.0
        assert f.n_test > 0 and f.test_start > START


def test_search_when_same_seed_then_same_best_params(swing, settings) -> None:
    events, names = swing
    head = events.head(events.height // 2)
    a = search(head, brier_objective("swing", names), settings, 2, N_INNER, SMALL, seed=3)
    b = search(head, brier_objective("swing", names), settings, 2, N_INNER, SMALL, seed=3)
    assert a == b
    assert isinstance(a[0]["n_estimators"], int) and 5 <= a[0]["n_estimators"] <= 20


def test_search_when_too_few_events_then_clear_error(swing, settings) -> None:
    events, names = swing
    with pytest.raises(ValueError, match="too few events"):
        search(events.head(10), brier_objective("swing", names), settings, 1, N_INNER, SMALL)


def test_with_params_when_out_of_range_then_refused_like_any_setting(settings) -> None:
    assert with_params(settings, {"max_depth": 3}).ml.max_depth == 3
    assert settings.ml.max_depth == 4  # the original is untouched
    with pytest.raises(ValidationError, match="max_depth"):
        with_params(settings, {"max_depth": 100})


# -- the training pipeline with settings.ml.tuning_trials (models.pipeline.train_strategy) -------------


def _pipeline_settings(tmp: str, trials: int):
    return load_settings(
        data={"var_dir": tmp},
        strategy={"swing": {"min_confidence": 0.2}},  # the ML book trades, so its Sharpe (and DSR) exist
        ml={"tracking_uri": f"sqlite:///{tmp}/mlflow.db", "n_estimators": 10, "walk_forward_folds": N_OUTER,
            "tuning_trials": trials, "tuning_inner_folds": N_INNER},
    )  # fmt: skip


def test_train_strategy_when_tuning_on_then_folds_tune_on_their_past_and_n_trials_logged_to_mlflow(
    real_candles, tmp_path, monkeypatch
) -> None:
    settings = _pipeline_settings(str(tmp_path), N_TRIALS)
    bars = real_candles("1h", SYMBOLS, START, END)
    ev = build_events(bars, settings, ("swing",))["swing"]
    seen: list[tuple[object, object]] = []  # (max ts, max label_end) of every frame a trial was scored on
    real = tuning.brier_objective

    def spying(strategy: str, names: list[str]):
        inner = real(strategy, names)

        def loss(train: pl.DataFrame, test: pl.DataFrame, s) -> float:
            both = pl.concat([train, test])
            seen.append((both["ts"].max(), both["label_end"].max()))
            return inner(train, test, s)

        return loss

    monkeypatch.setattr(tuning, "brier_objective", spying)
    monkeypatch.setattr(tuning, "DEFAULT_SPACE", SMALL)  # small boosters: the wiring is under test, not xgboost
    report = train_strategy(ev, bars, settings, log=True, backtest=True)  # the backtest's returns feed the DSR
    assert report.model is not None and report.model.tuning is not None and report.run_id

    # 1. each outer fold's search saw only events decided before its test window; then the final search
    #    ran on all events (its last inner test fold ends with the last event)
    events = ev.trainable.sort("ts")
    outer = walk_forward_folds(events, N_OUTER, settings.ml.embargo)
    assert len(outer) >= 1 and len(report.walk_forward.folds) == len(outer)
    final = _final_search_after_outer_folds(seen, events, outer, settings)
    assert final and max(c[0] for c in final) == events["ts"].max()

    # 2. the real MLflow store has the count (every search's trials), the inner-CV score and the params,
    #    and the DSR was computed with that count
    store = client(settings)  # both URIs explicit: another test may have set the process-wide registry
    run = store.get_run(report.run_id)
    m, p = run.data.metrics, run.data.params
    searches = len(outer) + 1
    assert m["tuning_n_trials"] == N_TRIALS * searches == report.model.tuning.n_trials
    assert m["unc_n_trials"] == m["tuning_n_trials"] and 0.0 <= m["unc_deflated_sharpe"] <= 1.0
    assert 0.0 < m["tuning_inner_brier"] < 1.0 and m["tuning_searches"] == searches
    assert p["tuning_trials"] == str(N_TRIALS)
    tuned = report.model.tuning.params
    assert set(tuned) == {"n_estimators", "max_depth", "learning_rate"} and 5 <= tuned["n_estimators"] <= 20
    for k, v in tuned.items():  # the registered model was fitted with the chosen params
        assert p[f"tuned_{k}"] == str(v) == p[f"xgb_{k}"]
    # per fold (MLflow step = fold index): that fold's own choice and inner score
    history = store.get_metric_history(report.run_id, "fold_tuned_max_depth")
    assert sorted(h.step for h in history) == [f.index for f in outer]


def test_train_strategy_when_tuning_off_then_previous_behaviour_and_no_search(real_candles, tmp_path, monkeypatch) -> None:
    from models.evaluate import walk_forward
    from models.train import booster_params, fit_strategy_model

    settings = _pipeline_settings(str(tmp_path), 0)
    assert load_settings().ml.tuning_trials == 0  # off by default (docs/ml.md "Tuning")
    bars = real_candles("1h", SYMBOLS, START, END)
    ev = build_events(bars, settings, ("swing",))["swing"]

    def no_search(*_a, **_k):
        raise AssertionError("tuning is off: no search may run")

    monkeypatch.setattr(tuning, "search", no_search)
    report = train_strategy(ev, bars, settings, log=False, backtest=False)
    before = walk_forward(ev.trainable, "swing", ev.feature_names, settings)  # the untuned path, as before
    assert report.walk_forward.predictions.equals(before.predictions)
    assert report.walk_forward.folds == before.folds and not any("tuned_n_estimators" in f for f in before.folds)
    model = report.model
    assert model is not None and model.tuning is None and model.params == booster_params(settings)
    plain = fit_strategy_model(ev.trainable, "swing", ev.feature_names, settings)
    x = plain.matrix(ev.trainable)
    assert np.array_equal(model.predict(x)["confidence"], plain.predict(x)["confidence"])


def test_tuning_settings_when_invalid_then_refused() -> None:
    with pytest.raises(ConfigError, match="ml.tuning_trials"):
        load_settings(ml={"tuning_trials": -1})
    with pytest.raises(ConfigError, match="ml.tuning_inner_folds"):
        load_settings(ml={"tuning_inner_folds": 1})
    with pytest.raises(ValueError, match="tuning_trials >= 1"):
        tuning.WalkForwardTuner("swing", [], load_settings())


def _final_search_after_outer_folds(calls, events, outer, settings):  # noqa: ANN001, ANN202 - test helper
    """Calls come in order: each outer fold's search (n_trials x its inner folds), then the final search.
    Asserts every event any fold's trial saw was decided before that fold's test window started, and
    returns the final search's calls."""
    pos = 0
    for fold in outer:
        inner = walk_forward_folds(events[fold.train_idx], N_INNER, settings.ml.embargo, min_train=30)
        chunk = calls[pos : pos + N_TRIALS * len(inner)]
        pos += len(chunk)
        assert chunk, "the fold's search ran"
        assert max(c[1] for c in chunk) < fold.test_start
        assert max(c[0] for c in chunk) < fold.test_start
    return calls[pos:]
