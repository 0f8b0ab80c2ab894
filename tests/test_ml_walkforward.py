"""Walk-forward splits (purge, embargo) and the leakage checks on real detection events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from core.settings import load_settings
from models.dataset import build_events
from models.evaluate import walk_forward
from models.walkforward import walk_forward_folds

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE", "LINK", "XRP"]
START, END = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def settings():
    return load_settings(ml={"n_estimators": 40, "walk_forward_folds": 4})


@pytest.fixture(scope="module")
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", SYMBOLS, START, END)


@pytest.fixture(scope="module")
def swing(bars: pl.DataFrame, settings):
    return build_events(bars, settings, ("swing",))["swing"]


def _events(hours: list[int], horizon_h: int) -> pl.DataFrame:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(hours=h) for h in hours]
    return pl.DataFrame({"ts": ts, "label_end": [t + timedelta(hours=horizon_h) for t in ts],
                         "success": [i % 2 for i in range(len(ts))]})


def test_folds_when_label_horizon_reaches_test_window_then_event_purged() -> None:
    # Arrange: one event every 10h, each label decided over the next 30h; 5 blocks of 20 events.
    ev = _events(list(range(0, 1000, 10)), horizon_h=30)
    # Act
    folds = walk_forward_folds(ev, n_folds=4, embargo=timedelta(hours=72), min_train=5)
    # Assert: hand count for fold 0: test starts at event 20 (h=200); events at h=180,190 end at 210,220
    # (inside the test window) and h=170 ends at 200 (the first test bar): those three are purged.
    f0 = folds[0]
    assert f0.test_start == ev["ts"][20]
    assert sorted(f0.train_idx.tolist()) == list(range(17))
    assert f0.purged == 3
    for f in folds:
        train_end = ev["label_end"].to_numpy()[f.train_idx]
        assert (train_end < np.datetime64(f.test_start.replace(tzinfo=None))).all()
        assert set(f.train_idx).isdisjoint(f.test_idx)


def test_folds_when_not_expanding_then_embargo_drops_events_just_after_test() -> None:
    ev = _events(list(range(0, 1000, 10)), horizon_h=30)
    folds = walk_forward_folds(ev, n_folds=4, embargo=timedelta(hours=72), expanding=False, min_train=5)
    f0 = folds[0]
    test_end = ev["ts"][39]  # block 1 is events 20..39 (h=200..390)
    after = [i for i in f0.train_idx if ev["ts"][int(i)] > test_end]
    # events at h=400..460 are within 72h of the test end (embargo); the first kept one is h=470 (index 47)
    assert min(after) == 47
    assert all(ev["ts"][int(i)] - test_end > timedelta(hours=72) for i in after)


def test_folds_when_training_part_has_one_outcome_then_fold_skipped() -> None:
    ev = _events(list(range(0, 500, 10)), horizon_h=5).with_columns(success=pl.lit(1))
    assert walk_forward_folds(ev, n_folds=4, embargo=timedelta(hours=1), min_train=5) == []


def test_folds_when_columns_missing_then_clear_error() -> None:
    with pytest.raises(ValueError, match="label_end"):
        walk_forward_folds(pl.DataFrame({"ts": [datetime(2024, 1, 1, tzinfo=UTC)]}), 2, timedelta(hours=1))


def test_walk_forward_when_labels_shuffled_then_auc_near_half(swing, settings) -> None:
    # Arrange: a decent real sample (~1,200 swing events), outcomes permuted: no feature can predict them.
    data = swing.trainable
    assert data.height > 800
    rng = np.random.default_rng(3)
    shuffled = data.with_columns(pl.Series("success", rng.permutation(data["success"].to_numpy())))
    # Act
    wf = walk_forward(shuffled, "swing", swing.feature_names, settings)
    # Assert
    assert wf.pooled["n"] > 600
    assert wf.pooled["auc"] == pytest.approx(0.5, abs=0.07)


def test_walk_forward_when_run_then_every_prediction_is_out_of_sample(swing, settings) -> None:
    data = swing.trainable
    wf = walk_forward(data, "swing", swing.feature_names, settings)
    preds = wf.predictions
    # each event is predicted at most once, by a fold whose training data ended before its label window
    assert preds["signal_id"].n_unique() == preds.height
    assert {"pred_confidence", "pred_take_profit_pct", "pred_stop_loss_pct"} <= set(preds.columns)
    assert preds["pred_take_profit_pct"].is_between(0.03, 0.15).all()
    assert preds["pred_stop_loss_pct"].is_between(0.05, 0.12).all()
    assert len(wf.folds) == 4
    for key in ("auc", "brier", "brier_base", "base_rate", "mae_take_profit_pct", "mae_stop_loss_pct"):
        assert key in wf.pooled
    # the pooled sample is the union of the fold samples
    assert wf.pooled["n"] == sum(f["n"] for f in wf.folds)


def test_walk_forward_when_run_twice_then_identical_predictions(swing, settings) -> None:
    data = swing.trainable.head(400)
    a = walk_forward(data, "swing", swing.feature_names, settings).predictions
    b = walk_forward(data, "swing", swing.feature_names, settings).predictions
    assert a["pred_confidence"].to_list() == b["pred_confidence"].to_list()
