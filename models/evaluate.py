"""Walk-forward evaluation of one strategy's models: per-fold and pooled out-of-sample metrics.

Each fold fits fresh models on its (purged, embargoed) training events and predicts its test events;
the pooled metrics are computed on the concatenation of all test predictions, each made by a model that
never saw that event or any event whose label horizon reached into its fold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
from sklearn.metrics import brier_score_loss, roc_auc_score

from core.backtest.buy_and_hold import BENCHMARK_SYMBOL, buy_and_hold
from core.settings import Settings
from models.train import STRATEGY_OUTPUTS, TARGETS, fit_strategy_model
from models.walkforward import Fold, walk_forward_folds

PRED_PREFIX = "pred_"
BUY_AND_HOLD_METRICS = ("total_return", "sharpe", "max_drawdown", "trades", "fees", "final_equity")


@dataclass
class WalkForwardResult:
    strategy: str
    threshold: float
    folds: list[dict[str, float]] = field(default_factory=list)
    pooled: dict[str, float] = field(default_factory=dict)
    predictions: pl.DataFrame = field(default_factory=pl.DataFrame)  # OOS test events + pred_* + fold


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float, train_base_rate: float) -> dict[str, float]:
    """AUC, Brier vs the Brier of always predicting the training base rate, precision at the threshold."""
    y = y.astype(int)
    both = np.unique(y).size == 2
    taken = p >= threshold
    return {
        "n": float(y.size),
        "base_rate": float(y.mean()) if y.size else math.nan,
        "auc": float(roc_auc_score(y, p)) if both else math.nan,
        "brier": float(brier_score_loss(y, p, pos_label=1)) if y.size else math.nan,
        "brier_base": float(np.mean((y - train_base_rate) ** 2)) if y.size else math.nan,
        "precision_at_threshold": float(y[taken].mean()) if taken.any() else math.nan,
        "taken_share": float(taken.mean()) if y.size else math.nan,
    }


# What rule-only trading uses for each output, per event (the plan's own values): the MAE baseline.
RULE_DEFAULT_EXPRS: dict[str, pl.Expr] = {
    "take_profit_pct": pl.col("tp_pct"),
    "stop_loss_pct": pl.col("sl_pct"),
    "size_multiplier": pl.lit(1.0),
    "hold_hours": pl.col("max_hold_h"),
}


def regression_metrics(frame: pl.DataFrame, strategy: str) -> dict[str, float]:
    """MAE of each regressor against its clipped target, next to the MAE of the plan's rule default."""
    out: dict[str, float] = {}
    filled = frame.filter(pl.col("filled").fill_null(False))
    for name in STRATEGY_OUTPUTS[strategy]:
        column, (lo, hi) = TARGETS[name]
        sub = filled.filter(pl.col(column).is_not_null())
        if sub.is_empty():
            continue
        target = pl.col(column).clip(lo, hi)
        row = sub.select(
            model=(pl.col(PRED_PREFIX + name) - target).abs().mean(),
            rule=(RULE_DEFAULT_EXPRS[name].cast(pl.Float64) - target).abs().mean(),
        ).row(0, named=True)
        out[f"mae_{name}"] = float(row["model"])
        out[f"mae_{name}_rule"] = float(row["rule"])
    return out


# (a fold's training events) -> (settings to fit that fold's model with, fold metrics to log): the
# nested-tuning hook (models.tuning.WalkForwardTuner); it is only ever shown the fold's training events.
FoldTuner = Callable[[pl.DataFrame], tuple[Settings, dict[str, float]]]


def walk_forward(
    events: pl.DataFrame, strategy: str, feature_names: list[str], settings: Settings, tune: FoldTuner | None = None
) -> WalkForwardResult:
    """Evaluate on labelled, filled events (columns: ts, label_end, success, targets, features).

    `tune`: choose each fold's hyperparameters from its training events alone (None: the settings' own)."""
    threshold = float(getattr(settings.strategy, strategy).min_confidence)
    events = events.sort("ts")
    folds = walk_forward_folds(events, settings.ml.walk_forward_folds, settings.ml.embargo)
    result = WalkForwardResult(strategy, threshold)
    parts: list[pl.DataFrame] = []
    for fold in folds:
        train = events[fold.train_idx]
        test = events[fold.test_idx]
        fit_settings, tuned = tune(train) if tune is not None else (settings, {})
        model = fit_strategy_model(train, strategy, feature_names, fit_settings)
        preds = model.predict(model.matrix(test))
        test = test.with_columns(
            *(pl.Series(PRED_PREFIX + k, v.astype(np.float64)) for k, v in preds.items()), fold=pl.lit(fold.index)
        )
        metrics = classification_metrics(test["success"].to_numpy(), preds["confidence"], threshold, model.base_rate)
        metrics |= regression_metrics(test, strategy)
        metrics |= {"fold": float(fold.index), "n_train": float(fold.train_idx.size), "purged": float(fold.purged)}
        metrics |= tuned
        result.folds.append(metrics)
        parts.append(test)
    if parts:
        # Brier base per event: the base rate its fold's training events had (what was known beforehand).
        bases = pl.DataFrame({"fold": [f.index for f in folds], "_base": _train_base_rates(events, folds)})
        pooled = pl.concat(parts, how="diagonal_relaxed").with_columns(pl.col("fold").cast(pl.Int64))
        pooled = pooled.join(bases, on="fold", how="left", maintain_order="left")
        y = pooled["success"].to_numpy().astype(int)
        p = pooled[PRED_PREFIX + "confidence"].to_numpy()
        base_p = pooled["_base"].to_numpy()
        result.pooled = classification_metrics(y, p, threshold, 0.0) | {"brier_base": float(np.mean((y - base_p) ** 2))}
        result.pooled |= regression_metrics(pooled, strategy)
        result.pooled["folds"] = float(len(parts))
        result.predictions = pooled.drop("_base")
    return result


def _train_base_rates(events: pl.DataFrame, folds: list[Fold]) -> list[float]:
    y = events["success"].to_numpy()
    return [float(y[f.train_idx].mean()) for f in folds]


def buy_and_hold_btc(
    bars: pl.DataFrame, settings: Settings, start: datetime, end: datetime
) -> tuple[dict[str, float], pl.DataFrame] | None:
    """Buy-and-hold BTC over the OOS window, same bars and capital as the backtests beside it (stats,
    equity), or None when the bars hold no BTC in the window (core.backtest.buy_and_hold has the rules)."""
    if bars.filter((pl.col("symbol") == BENCHMARK_SYMBOL) & (pl.col("ts") >= start) & (pl.col("ts") < end)).is_empty():
        return None
    bh = buy_and_hold(bars, settings, start, end)
    stats = {k: float(bh.stats[k]) for k in BUY_AND_HOLD_METRICS if bh.stats.get(k) is not None}
    return stats, bh.equity
