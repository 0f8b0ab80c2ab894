"""Fit one strategy's models: a calibrated xgboost classifier and an xgboost regressor per other output.

Deterministic: fixed seed, one thread per booster (n_jobs=1), histogram trees; the same data and settings
give bit-identical predictions. Probabilities are calibrated with sklearn's CalibratedClassifierCV,
method "sigmoid" (Platt): with a few hundred events per strategy isotonic regression overfits its step
function, while two sigmoid parameters are stable. The calibration folds are TimeSeriesSplit folds, so
each calibrator is fitted on events that come after its booster's training events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import TimeSeriesSplit
from xgboost import XGBClassifier, XGBRegressor

from core.settings import Settings

# Output name -> (target column, clip range). Ranges are SPEC 3's; predictions are clipped to them too.
TARGETS: dict[str, tuple[str, tuple[float, float]]] = {
    "take_profit_pct": ("tp_target", (0.03, 0.15)),
    "stop_loss_pct": ("sl_target", (0.05, 0.12)),
    "size_multiplier": ("size_target", (0.5, 1.5)),
    "hold_hours": ("hold_target_h", (12.0, 72.0)),
}
# Which regression outputs each strategy's model has (SPEC 3); the confidence classifier is always there.
STRATEGY_OUTPUTS: dict[str, tuple[str, ...]] = {
    "dca": ("take_profit_pct", "stop_loss_pct", "size_multiplier", "hold_hours"),
    "swing": ("take_profit_pct", "stop_loss_pct"),
    "channel": ("take_profit_pct", "stop_loss_pct", "hold_hours"),
}
CALIBRATION = "sigmoid"
CALIBRATION_FOLDS = 3


def booster_params(settings: Settings) -> dict[str, object]:
    ml = settings.ml
    return {
        "n_estimators": ml.n_estimators,
        "max_depth": ml.max_depth,
        "learning_rate": ml.learning_rate,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 3.0,
        "tree_method": "hist",
        "max_bin": 64,  # coarse histograms: ~2x faster, no loss on a few thousand events
        "random_state": ml.random_seed,
        "n_jobs": 1,
    }


@dataclass(frozen=True)
class TuningSummary:
    """How a model's hyperparameters were chosen (models.tuning.WalkForwardTuner); logged with its run."""

    n_trials: int  # configurations tried: every outer fold's search plus the final model's (the DSR's input)
    params: dict[str, float]  # the final model's tuned hyperparameters ({} when its search could not run)
    metrics: dict[str, float]  # tuning_* metrics of the MLflow run


@dataclass
class StrategyModel:
    """The fitted models of one strategy; `predict` returns every output, clipped to its range."""

    strategy: str
    feature_names: list[str]
    classifier: CalibratedClassifierCV
    regressors: dict[str, XGBRegressor] = field(default_factory=dict)
    base_rate: float = 0.5
    trained_until: datetime | None = None  # last label_end of the training events: later bars are unseen
    params: dict[str, object] = field(default_factory=dict)  # booster_params it was fitted with
    tuning: TuningSummary | None = None  # set by models.pipeline when settings.ml.tuning_trials > 0

    def matrix(self, frame: pl.DataFrame) -> np.ndarray:
        return frame.select(pl.col(c).cast(pl.Float64) for c in self.feature_names).to_numpy()

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = {"confidence": self.classifier.predict_proba(x)[:, 1]}
        for name, reg in self.regressors.items():
            lo, hi = TARGETS[name][1]
            out[name] = np.clip(reg.predict(x).astype(np.float64), lo, hi)
        return out

    def feature_importance(self) -> dict[str, float]:
        """Mean gain-based importance of the calibrated ensemble's boosters, normalised to sum 1."""
        imps = np.mean([c.estimator.feature_importances_ for c in self.classifier.calibrated_classifiers_], axis=0)
        total = float(imps.sum()) or 1.0
        return {f: float(v) / total for f, v in zip(self.feature_names, imps, strict=True)}


def fit_strategy_model(
    frame: pl.DataFrame,
    strategy: str,
    feature_names: list[str],
    settings: Settings,
    outputs: tuple[str, ...] | None = None,
) -> StrategyModel:
    """Fit on labelled events (sorted by ts inside); needs both outcomes present.

    `outputs`: the regression outputs to fit (default: the strategy's, STRATEGY_OUTPUTS); () fits the
    classifier only (models.tuning scores trials on the classifier's Brier alone)."""
    frame = frame.sort("ts")
    y = frame["success"].cast(pl.Int8).to_numpy()
    if np.unique(y).size < 2:
        raise ValueError(
            f"{strategy}: training events have one outcome only ({frame.height} events); need wins and losses"
        )
    x = frame.select(pl.col(c).cast(pl.Float64) for c in feature_names).to_numpy()
    params = booster_params(settings)
    clf = CalibratedClassifierCV(
        XGBClassifier(**params, eval_metric="logloss"),
        method=CALIBRATION,
        cv=_calibration_cv(y),
    )
    clf.fit(x, y)
    regressors: dict[str, XGBRegressor] = {}
    for name in STRATEGY_OUTPUTS[strategy] if outputs is None else outputs:
        column, (lo, hi) = TARGETS[name]
        target = frame[column].cast(pl.Float64).clip(lo, hi).to_numpy()
        reg = XGBRegressor(**params, objective="reg:squarederror")
        reg.fit(x, target)
        regressors[name] = reg
    until = frame["label_end"].max() if "label_end" in frame.columns else None
    return StrategyModel(strategy, list(feature_names), clf, regressors, base_rate=float(y.mean()),
                         trained_until=until, params=params)  # type: ignore[arg-type]  # fmt: skip


def _calibration_cv(y: np.ndarray) -> TimeSeriesSplit | int:
    """Time-ordered calibration folds when every fold's training part sees both classes, else stratified."""
    tss = TimeSeriesSplit(n_splits=CALIBRATION_FOLDS)
    for train_idx, test_idx in tss.split(y):
        if np.unique(y[train_idx]).size < 2 or np.unique(y[test_idx]).size < 2:
            return CALIBRATION_FOLDS
    return tss
