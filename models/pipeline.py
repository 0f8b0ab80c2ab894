"""The training pipeline of one or all strategies: events -> walk-forward -> OOS backtest -> fit -> MLflow.

Orchestration only: models.dataset builds the events, models.evaluate walks forward, models.oos backtests
the walk-forward predictions, models.train fits the final model and models.run_log logs and registers it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from core.settings import Settings
from core.storage.base import Store
from models.dataset import STRATEGIES, StrategyEvents, build_events, load_history
from models.evaluate import WalkForwardResult, walk_forward
from models.oos import oos_backtest
from models.outcomes import append_outcomes, ml_accuracy, read_outcomes
from models.run_log import log_training_run
from models.train import StrategyModel, fit_strategy_model


@dataclass
class TrainingReport:
    strategy: str
    n_events: int
    walk_forward: WalkForwardResult | None
    backtest: dict[str, Any] = field(default_factory=dict)
    model: StrategyModel | None = None
    version: str | None = None
    run_id: str | None = None
    seconds: float = 0.0
    skipped: str | None = None
    # Learning loop (models.outcomes): stored outcomes used, duplicates, and the ML accuracy of the
    # stored model-scored trades; {} when trained without an outcomes store. log_training_run(learning=).
    learning: dict[str, Any] = field(default_factory=dict)


def learning_summary(ev: StrategyEvents, outcomes: pl.DataFrame) -> tuple[StrategyEvents, dict[str, Any]]:
    """Append the de-duplicated stored outcomes to the events; what was used, and the ML accuracy."""
    merged, extra = append_outcomes(ev, outcomes)
    mine = outcomes.filter(pl.col("strategy") == ev.strategy) if outcomes.height else outcomes
    acc = ml_accuracy(mine)
    info: dict[str, Any] = {
        "outcome_trades": extra.trades if extra else 0,
        "outcome_rows_used": extra.rows.height if extra else 0,
        "outcome_duplicates": extra.duplicates if extra else 0,
        "accuracy": acc,
        "accuracy_metrics": acc.metrics(ev.strategy),
    }
    return merged, info


def train_strategy(
    ev: StrategyEvents,
    bars: pl.DataFrame,
    settings: Settings,
    *,
    log: bool = True,
    backtest: bool = True,
    outcomes: pl.DataFrame | None = None,
) -> TrainingReport:
    """Walk-forward evaluate, OOS-backtest, fit the final model on every event, log and register it.

    With settings.ml.tuning_trials > 0 the hyperparameters are searched (models.tuning.WalkForwardTuner)
    inside each walk-forward fold's training events, and once more on all events for the final model;
    the run logs the chosen params, the inner-fold score and every configuration tried (the DSR's n).

    `outcomes` (models.outcomes.read_outcomes of a store): the stored paper/live closed trades; those of
    this strategy that are not historical events are appended to the training events (walk-forward and
    final fit), and the counts and the ML accuracy of the model-scored ones are logged with the run."""
    t0 = time.perf_counter()
    learning: dict[str, Any] = {}
    if outcomes is not None:
        ev, learning = learning_summary(ev, outcomes)
    data = ev.trainable
    if data.height < 2 * (settings.ml.walk_forward_folds + 1) or data["success"].n_unique() < 2:
        why = f"too few labelled events ({data.height}) or one outcome only"
        return TrainingReport(ev.strategy, data.height, None, skipped=why, learning=learning)
    tuner = None
    if settings.ml.tuning_trials:  # nested: each outer fold tunes on its own training events only
        from models.tuning import WalkForwardTuner  # optuna is imported only when tuning is on

        tuner = WalkForwardTuner(ev.strategy, ev.feature_names, settings)
    wf = walk_forward(data, ev.strategy, ev.feature_names, settings, tune=tuner)
    bt = oos_backtest(bars, settings, ev.strategy, wf.predictions) if backtest else {}
    final_settings = tuner(data)[0] if tuner is not None else settings  # the final model tunes on all events
    model = fit_strategy_model(data, ev.strategy, ev.feature_names, final_settings)
    if tuner is not None:
        model.tuning = tuner.summary()
    report = TrainingReport(ev.strategy, data.height, wf, bt, model, learning=learning)
    if log:
        rec = log_training_run(model, wf, bt, settings, data, data.height, learning=learning or None)
        report.version, report.run_id = rec.version, rec.run_id
    report.seconds = time.perf_counter() - t0
    return report


def train_all(
    settings: Settings,
    strategies: tuple[str, ...] = STRATEGIES,
    bars: pl.DataFrame | None = None,
    *,
    log: bool = True,
    backtest: bool = True,
    outcomes_store: Store | None = None,
) -> list[TrainingReport]:
    """Train every strategy on `bars` (default: the shipped history of settings.data.symbols); with
    `outcomes_store`, plus the stored paper/live outcomes (SPEC 5's learning loop, models.outcomes)."""
    bars = bars if bars is not None else load_history(settings)
    events = build_events(bars, settings, strategies)
    outcomes = None
    if outcomes_store is not None:
        outcomes = read_outcomes(outcomes_store, settings, timeframe=str(bars["timeframe"][0]))
    return [
        train_strategy(events[s], bars, settings, log=log, backtest=backtest, outcomes=outcomes) for s in strategies
    ]
