"""Nested walk-forward tuning: the search never sees an outer test fold, and every trial is counted."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from core.settings import load_settings
from models.dataset import build_events
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
    # Calls come in order: each outer fold's search (n_trials x its inner folds), then the final search.
    pos = 0
    for fold in outer:
        inner = walk_forward_folds(events[fold.train_idx], N_INNER, settings.ml.embargo, min_train=30)
        chunk = calls[pos : pos + N_TRIALS * len(inner)]
        pos += len(chunk)
        assert chunk, "the search ran"
        # every event any trial saw was decided before the outer test window started
        assert max(c[1] for c in chunk) < fold.test_start
        assert max(c[0] for c in chunk) < fold.test_start
    final = calls[pos:]
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
