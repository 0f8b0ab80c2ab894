"""Walk-forward splits in time with purging and an embargo (de Prado, AFML ch. 7).

Events are ordered by signal time and cut into `n_folds + 1` blocks of equal event count. Fold k tests on
block k+1 and trains on what came before it (an expanding window). Two rules keep the test fold unseen:
- purge: a training event whose label horizon [ts, label_end] reaches into the test window is dropped
  (its outcome was decided by test-period bars);
- embargo: training events that start within `embargo` after the test window are dropped too. With
  expanding windows nothing after the test fold is used anyway; the rule matters when
  `expanding=False` (train on everything outside the test block) and is kept for both.
The embargo must be at least the longest label horizon (max hold), which `settings.ml.embargo` defaults to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Fold:
    index: int
    train_idx: np.ndarray  # row positions into the events frame
    test_idx: np.ndarray
    test_start: datetime
    test_end: datetime
    purged: int  # training candidates dropped by purge + embargo


def walk_forward_folds(
    events: pl.DataFrame,
    n_folds: int,
    embargo: timedelta,
    expanding: bool = True,
    min_train: int = 30,
) -> list[Fold]:
    """Folds over an events frame with columns `ts` and `label_end` (row order is kept for the indices).

    Folds whose training part has fewer than `min_train` events or only one class of `success` (when that
    column exists) are skipped, so the first usable fold may be k > 0.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if not {"ts", "label_end"} <= set(events.columns):
        raise ValueError("events need columns ts and label_end (the end of each label's horizon)")
    n = events.height
    if n < n_folds + 1:
        return []
    order = np.argsort(events["ts"].to_numpy(), kind="stable")
    ts = events["ts"].to_numpy()
    end = events["label_end"].to_numpy()
    success = events["success"].to_numpy() if "success" in events.columns else None
    bounds = np.linspace(0, n, n_folds + 2).astype(int)
    folds: list[Fold] = []
    for k in range(n_folds):
        test_pos = order[bounds[k + 1] : bounds[k + 2]]
        if test_pos.size == 0:
            continue
        t0, t1 = ts[test_pos].min(), ts[test_pos].max()
        # Events at exactly the boundary time belong to the test block, never to training.
        in_test_time = (ts >= t0) & (ts <= t1)
        before = ts < t0
        after = ts > t1
        overlaps = before & (end >= t0)  # purge: label decided inside the test window
        embargoed = after & (ts <= t1 + np.timedelta64(embargo))
        candidates = before if expanding else (before | after)
        keep = candidates & ~overlaps & ~embargoed & ~in_test_time
        train_pos = np.flatnonzero(keep)
        if train_pos.size < min_train or (success is not None and np.unique(success[train_pos]).size < 2):
            continue
        folds.append(
            Fold(
                index=k,
                train_idx=train_pos,
                test_idx=np.sort(test_pos),
                test_start=_to_datetime(t0),
                test_end=_to_datetime(t1),
                purged=int((candidates & ~in_test_time).sum() - train_pos.size),
            )
        )
    return folds


def _to_datetime(value: np.datetime64) -> datetime:
    us = int(value.astype("datetime64[us]").astype(np.int64))
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
