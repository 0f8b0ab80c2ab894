"""Hyperparameter search without fooling ourselves: Optuna inside nested walk-forward folds.

Outer folds are models.walkforward folds over all events. For each outer fold the search sees ONLY that
fold's (purged, embargoed) training events: it cuts them into inner walk-forward folds and lets Optuna
(TPE, seeded) pick the parameters with the best mean inner-fold Brier score. The chosen parameters are
then fitted on the whole outer training span and scored once on the outer test fold, which no trial
ever saw: the outer scores are an honest estimate of "tuned model" performance, the number to compare
with the untuned walk-forward. The parameters to use from now on come from one more search over the
inner folds of all events (the last, largest training span).

Every configuration tried is counted (`n_trials`): the Deflated Sharpe Ratio (models.uncertainty) and a
reader of the MLflow run need to know how many were tried, not only the winner. This module logs
nothing: `TuningResult.params_to_log()` / `metrics_to_log()` are what the MLflow caller records.
The tuned parameters are settings (ml.n_estimators, ml.max_depth, ml.learning_rate), so a tuned model is
trained by the same code as any other (models.train.fit_strategy_model).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import optuna
import polars as pl

from core.settings import Settings
from models.train import TuningSummary, fit_strategy_model
from models.uncertainty import auc, brier
from models.walkforward import walk_forward_folds

# name -> (low, high, log scale); ints for integer settings
Space = dict[str, tuple[float, float, bool]]
DEFAULT_SPACE: Space = {
    "n_estimators": (50, 400, True),
    "max_depth": (2, 6, False),
    "learning_rate": (0.01, 0.2, True),
}
_INT_PARAMS = {"n_estimators", "max_depth"}

# (train events, test events, settings with the trial's parameters) -> loss (lower is better)
Objective = Callable[[pl.DataFrame, pl.DataFrame, Settings], float]


@dataclass(frozen=True)
class OuterFold:
    index: int
    test_start: datetime
    test_end: datetime
    n_train: int
    n_test: int
    best_params: dict[str, float]
    inner_loss: float  # best mean inner-fold loss (seen by the search)
    test_auc: float  # outer test fold (never seen by the search)
    test_brier: float


@dataclass
class TuningResult:
    strategy: str
    best_params: dict[str, float]
    n_trials: int  # every configuration tried, over all outer searches and the final one
    trials_per_search: int
    outer: list[OuterFold] = field(default_factory=list)

    def params_to_log(self) -> dict[str, float]:
        return {f"tuned_{k}": v for k, v in self.best_params.items()}

    def metrics_to_log(self) -> dict[str, float]:
        out = {"tuning_n_trials": float(self.n_trials), "tuning_trials_per_search": float(self.trials_per_search)}
        if self.outer:
            out["tuning_outer_auc_mean"] = float(np.nanmean([f.test_auc for f in self.outer]))
            out["tuning_outer_brier_mean"] = float(np.mean([f.test_brier for f in self.outer]))
        for f in self.outer:
            out[f"tuning_outer{f.index}_auc"] = f.test_auc
            out[f"tuning_outer{f.index}_brier"] = f.test_brier
        return out


def brier_objective(strategy: str, feature_names: list[str]) -> Objective:
    """Fit the strategy's models on train, return the Brier score of its calibrated p on test."""

    def loss(train: pl.DataFrame, test: pl.DataFrame, settings: Settings) -> float:
        model = fit_strategy_model(train, strategy, feature_names, settings, outputs=())  # the classifier only
        p = model.predict(model.matrix(test))["confidence"]
        return brier(test["success"].to_numpy(), p)

    return loss


def with_params(settings: Settings, params: dict[str, float]) -> Settings:
    """Settings with the ml.* hyperparameters replaced (validated like any settings)."""
    ml = settings.ml.model_validate(settings.ml.model_dump() | params)
    return settings.model_copy(update={"ml": ml})


def _suggest(trial: optuna.Trial, space: Space) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, (lo, hi, log) in space.items():
        if name in _INT_PARAMS:
            out[name] = float(trial.suggest_int(name, int(lo), int(hi), log=log))
        else:
            out[name] = trial.suggest_float(name, lo, hi, log=log)
    return out


def _typed(params: dict[str, float]) -> dict[str, float]:
    return {k: (int(v) if k in _INT_PARAMS else v) for k, v in params.items()}


def search(
    events: pl.DataFrame,
    objective: Objective,
    settings: Settings,
    n_trials: int,
    n_inner: int,
    space: Space | None = None,
    seed: int | None = None,
) -> tuple[dict[str, float], float]:
    """Optuna over the inner walk-forward folds of `events` only: (best params, best mean inner loss)."""
    inner = walk_forward_folds(events, n_inner, settings.ml.embargo, min_train=max(30, 2 * n_inner))
    if not inner:
        raise ValueError(f"too few events ({events.height}) for {n_inner} inner folds with both outcomes")
    space = space or DEFAULT_SPACE

    def run(trial: optuna.Trial) -> float:
        trial_settings = with_params(settings, _typed(_suggest(trial, space)))
        losses = [objective(events[f.train_idx], events[f.test_idx], trial_settings) for f in inner]
        return float(np.mean(losses))

    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=settings.ml.random_seed if seed is None else seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(run, n_trials=n_trials)
    return _typed(study.best_params), float(study.best_value)


def nested_tune(
    events: pl.DataFrame,
    strategy: str,
    feature_names: list[str],
    settings: Settings,
    n_trials: int = 20,
    n_outer: int | None = None,
    n_inner: int = 3,
    space: Space | None = None,
    objective: Objective | None = None,
) -> TuningResult:
    """Nested walk-forward search on labelled events (ts, label_end, success, targets, features)."""
    events = events.sort("ts")
    objective = objective or brier_objective(strategy, feature_names)
    n_outer = n_outer or settings.ml.walk_forward_folds
    outer: list[OuterFold] = []
    for fold in walk_forward_folds(events, n_outer, settings.ml.embargo):
        train, test = events[fold.train_idx], events[fold.test_idx]
        try:
            params, inner_loss = search(train, objective, settings, n_trials, n_inner, space)
        except ValueError:
            continue  # this outer training span is too small to search in; later (larger) ones are not
        model = fit_strategy_model(train, strategy, feature_names, with_params(settings, params))
        p = model.predict(model.matrix(test))["confidence"]
        y = test["success"].to_numpy()
        outer.append(
            OuterFold(fold.index, fold.test_start, fold.test_end, train.height, test.height, params, inner_loss,
                      auc(y, p), brier(y, p))
        )  # fmt: skip
    best, _ = search(events, objective, settings, n_trials, n_inner, space)
    return TuningResult(strategy, best, n_trials * (len(outer) + 1), n_trials, outer)


def untuned_outer_scores(events: pl.DataFrame, strategy: str, feature_names: list[str], settings: Settings) -> dict[str, float]:
    """The same outer folds with the settings' own parameters: what tuning must beat."""
    events = events.sort("ts")
    aucs, briers = [], []
    for fold in walk_forward_folds(events, settings.ml.walk_forward_folds, settings.ml.embargo):
        train, test = events[fold.train_idx], events[fold.test_idx]
        model = fit_strategy_model(train, strategy, feature_names, settings)
        p = model.predict(model.matrix(test))["confidence"]
        aucs.append(auc(test["success"].to_numpy(), p))
        briers.append(brier(test["success"].to_numpy(), p))
    if not aucs:
        return {"auc_mean": math.nan, "brier_mean": math.nan}
    return {"auc_mean": float(np.nanmean(aucs)), "brier_mean": float(np.mean(briers))}


@dataclass(frozen=True)
class SpanSearch:
    """One search over one training span (an outer fold's, or all events for the final model)."""

    n_train: int
    params: dict[str, float]  # {} when the span was too small for the inner folds: the settings' own
    inner_loss: float  # best mean inner-fold Brier (nan when no search ran)
    trials: int


class WalkForwardTuner:
    """The training pipeline's tuner (settings.ml.tuning_trials trials over settings.ml.tuning_inner_folds).

    Called with a training span, it searches that span's inner walk-forward folds ONLY and returns the
    settings to fit with plus fold metrics: models.evaluate.walk_forward calls it with each outer fold's
    (purged, embargoed) training events, models.pipeline once more with all events for the final model.
    Every search is kept, so `summary()` counts every configuration tried."""

    def __init__(
        self,
        strategy: str,
        feature_names: list[str],
        settings: Settings,
        space: Space | None = None,
        objective: Objective | None = None,
    ) -> None:
        if settings.ml.tuning_trials < 1:
            raise ValueError("WalkForwardTuner needs settings.ml.tuning_trials >= 1 (0 means tuning is off)")
        self.settings = settings
        self.space = space
        self.objective = objective or brier_objective(strategy, feature_names)
        self.searches: list[SpanSearch] = []

    def __call__(self, train: pl.DataFrame) -> tuple[Settings, dict[str, float]]:
        ml = self.settings.ml
        try:
            params, loss = search(train.sort("ts"), self.objective, self.settings, ml.tuning_trials,
                                  ml.tuning_inner_folds, self.space)  # fmt: skip
        except ValueError:  # too few events (or one outcome) for the inner folds: keep the settings' own
            self.searches.append(SpanSearch(train.height, {}, math.nan, 0))
            return self.settings, {"tuning_trials": 0.0}
        self.searches.append(SpanSearch(train.height, params, loss, ml.tuning_trials))
        fold = {"tuning_trials": float(ml.tuning_trials), "tuning_inner_brier": loss}
        return with_params(self.settings, params), fold | {f"tuned_{k}": float(v) for k, v in params.items()}

    @property
    def n_trials(self) -> int:
        return sum(s.trials for s in self.searches)

    def summary(self) -> TuningSummary:
        """After the final search (the last call): the configurations tried, its params and inner score."""
        if not self.searches:
            raise ValueError("no search has run")
        final, outer = self.searches[-1], self.searches[:-1]
        metrics = {
            "tuning_n_trials": float(self.n_trials),
            "tuning_trials_per_search": float(self.settings.ml.tuning_trials),
            "tuning_inner_folds": float(self.settings.ml.tuning_inner_folds),
            "tuning_searches": float(sum(1 for s in self.searches if s.trials)),
            "tuning_inner_brier": final.inner_loss,  # the final model's search (all events)
        }
        fold_losses = [s.inner_loss for s in outer if s.trials]
        if fold_losses:
            metrics["tuning_fold_inner_brier_mean"] = float(np.mean(fold_losses))
        return TuningSummary(self.n_trials, dict(final.params), {k: v for k, v in metrics.items() if math.isfinite(v)})
