"""Log one training run to MLflow, register its model and alias the new version `challenger`.

One experiment and one registered model per strategy (`<prefix>-<strategy>`). Params, tags, metrics and
artifacts go through the client of the settings' store; only the model package is logged with MLflow's
fluent API, inside models.tracking.scoped_uris.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking.context.registry import resolve_tags

from core.settings import Settings
from models.evaluate import PRED_PREFIX, WalkForwardResult
from models.explain import explain_strategy_model
from models.packaging import log_model
from models.plots import plot_calibration, plot_equity, plot_feature_importance
from models.tracking import CHALLENGER, MlflowTarget, experiment_id, experiment_name, model_name, scoped_uris
from models.train import CALIBRATION, StrategyModel, booster_params
from models.uncertainty import uncertainty_metrics

EQUITY_LABELS = {"ml": "ML-filtered", "rule": "rule-only", "bh": "buy-and-hold BTC"}


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    version: str
    model_uri: str


def _finite(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def _params(model: StrategyModel, wf: WalkForwardResult, settings: Settings) -> dict[str, Any]:
    return {
        "strategy": model.strategy,
        "settings_fingerprint": settings.fingerprint(),
        "features": ",".join(model.feature_names),
        "calibration": CALIBRATION,
        "walk_forward_folds": settings.ml.walk_forward_folds,
        "embargo_h": settings.ml.embargo.total_seconds() / 3600,
        "threshold": wf.threshold,
        **{f"xgb_{k}": v for k, v in (model.params or booster_params(settings)).items()},  # as fitted (tuned)
        "tuning_trials": settings.ml.tuning_trials,
        **({f"tuned_{k}": v for k, v in model.tuning.params.items()} if model.tuning else {}),
    }


def _uncertainty(wf: WalkForwardResult, backtest: dict[str, Any], n_trials: int) -> dict[str, float]:
    """Issue 12: bootstrap intervals of the pooled OOS AUC/Brier and the ML book's daily Sharpe, and the DSR."""
    if wf.predictions.is_empty():
        return {}
    equity = backtest.get("ml_equity")
    returns = None
    if equity is not None and equity.height:
        daily = equity.sort("ts").group_by_dynamic("ts", every="1d").agg(pl.col("equity").last())
        returns = daily["equity"].pct_change().drop_nulls().to_numpy()
    y = wf.predictions["success"].to_numpy().astype(int)
    p = wf.predictions[PRED_PREFIX + "confidence"].to_numpy()
    return _finite(uncertainty_metrics(y, p, returns, n_trials, periods_per_year=365, n_boot=500), "unc_")


def _metrics(
    wf: WalkForwardResult,
    backtest: dict[str, Any],
    learning: dict[str, Any] | None,
    n_trials: int = 1,
    tuning: dict[str, float] | None = None,
) -> list[Metric]:
    now = int(time.time() * 1000)
    flat = _finite(wf.pooled, "oos_") | _finite(backtest.get("ml", {}), "bt_ml_") | _finite(tuning or {}, "")
    flat |= _uncertainty(wf, backtest, n_trials)
    flat |= _finite(backtest.get("rule", {}), "bt_rule_") | _finite(backtest.get("bh", {}), "bt_bh_")
    if learning is not None:
        flat |= {k: float(v) for k, v in _learning_counts(learning).items()}
        flat |= _finite(learning.get("accuracy_metrics", {}), "")
    out = [Metric(k, v, now, 0) for k, v in flat.items()]
    for fold in wf.folds:
        out += [Metric(k, v, now, int(fold["fold"])) for k, v in _finite(fold, "fold_").items()]
    return out


def _learning_counts(learning: dict[str, Any]) -> dict[str, int]:
    return {k: int(learning.get(k, 0)) for k in ("outcome_trades", "outcome_rows_used", "outcome_duplicates")}


def _artifacts(
    model: StrategyModel, wf: WalkForwardResult, backtest: dict[str, Any], learning: dict[str, Any] | None, d: Path
) -> list[tuple[Path, str]]:
    """(file, artifact folder) of every plot and evaluation file, written into `d`."""
    strategy = model.strategy
    out = [(plot_feature_importance(model.feature_importance(), d / "feature_importance.png",
                                    f"{strategy}: feature importance"), "plots")]  # fmt: skip
    if not wf.predictions.is_empty():
        y = wf.predictions["success"].to_numpy().astype(int)
        p = wf.predictions[PRED_PREFIX + "confidence"].to_numpy()
        title = f"{strategy}: calibration (walk-forward OOS)"
        out.append((plot_calibration(y, p, d / "calibration.png", title), "plots"))
        wf.predictions.drop(pl.col(pl.List, pl.Struct, pl.Object)).write_parquet(d / "oos_predictions.parquet")  # type: ignore[arg-type]
        out.append((d / "oos_predictions.parquet", "evaluation"))
    curves = {k: backtest[f"{k}_equity"] for k in EQUITY_LABELS if f"{k}_equity" in backtest}
    if curves:
        labelled = {EQUITY_LABELS[k]: v for k, v in curves.items()}
        out.append((plot_equity(labelled, d / "oos_equity.png", f"{strategy}: out-of-sample equity"), "plots"))
        for k, curve in curves.items():
            curve.write_parquet(d / f"oos_equity_{k}.parquet")
            out.append((d / f"oos_equity_{k}.parquet", "evaluation"))
    acc = (learning or {}).get("accuracy")
    if acc is not None:
        summary = {"buckets": acc.buckets.to_dicts(), "summary": acc.summary.to_dicts()}
        (d / "ml_accuracy.json").write_text(json.dumps(summary, indent=2, default=str))
        out.append((d / "ml_accuracy.json", "evaluation"))
    (d / "walk_forward.json").write_text(json.dumps({"folds": wf.folds, "pooled": wf.pooled}, indent=2, default=str))
    out.append((d / "walk_forward.json", "evaluation"))
    if not wf.predictions.is_empty():  # issue 12: SHAP summary per output of the final model, on the OOS events
        out += [(path, "explanations") for path in explain_strategy_model(model, wf.predictions, d).values()]
    return out


def log_training_run(
    model: StrategyModel,
    wf: WalkForwardResult,
    backtest: dict[str, Any],
    settings: Settings,
    example: pl.DataFrame,
    n_events: int,
    learning: dict[str, Any] | None = None,
    n_trials: int | None = None,
) -> RunRecord:
    """Log params, metrics, plots, equity curves and the model; register it and alias it `challenger`.

    `backtest` holds the OOS comparison (models.oos.oos_backtest): {"window": (start, end), "ml": {metric:
    value}, "rule": {...}, "ml_equity": frame(ts, equity), "rule_equity": ...} (+ "bh", "bh_equity":
    buy-and-hold BTC). `learning` (models.pipeline.learning_summary): stored outcomes used (params and
    metrics outcome_trades / outcome_rows_used / outcome_duplicates) and the ML accuracy (metrics acc_*,
    artifact evaluation/ml_accuracy.json). `n_trials`: configurations tried to arrive at this model (e.g.
    models.tuning.TuningResult.n_trials), the Deflated Sharpe Ratio's input (metric unc_deflated_sharpe);
    default: the model's own tuning count (models.train.TuningSummary, metrics tuning_*), else 1.
    """
    if n_trials is None:
        n_trials = model.tuning.n_trials if model.tuning else 1
    target = MlflowTarget.from_settings(settings)
    c = target.client()
    name = model_name(model.strategy, settings)
    window = backtest.get("window") or (None, None)
    tags = {
        "strategy": model.strategy,
        "settings_fingerprint": settings.fingerprint(),
        "oos_window_start": str(window[0]),
        "oos_window_end": str(window[1]),
        "trained_until": model.trained_until.isoformat() if model.trained_until else "",
    }
    exp = experiment_id(c, experiment_name(model.strategy, settings), target.tracking_uri)
    # resolve_tags adds what mlflow.start_run would (user, source, git commit); ours win.
    run_id = c.create_run(exp, tags=resolve_tags(tags)).info.run_id
    try:
        params = _params(model, wf, settings) | {"n_events": n_events}
        if learning is not None:
            params |= _learning_counts(learning)
        c.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        tuning = model.tuning.metrics if model.tuning else None
        _log_metrics(c, run_id, _metrics(wf, backtest, learning, n_trials, tuning))
        with tempfile.TemporaryDirectory() as tmp:
            for path, folder in _artifacts(model, wf, backtest, learning, Path(tmp)):
                c.log_artifact(run_id, str(path), folder)
            package = Path(tmp) / "package"
            package.mkdir()
            with scoped_uris(target), mlflow.start_run(run_id=run_id):  # ends the run FINISHED (or FAILED)
                info = log_model(model, example, package)
                mv = mlflow.register_model(info.model_uri, name)
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than this bookkeeping
            if c.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
                c.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    return RunRecord(run_id, str(mv.version), info.model_uri)


def _log_metrics(c: MlflowClient, run_id: str, metrics: list[Metric], batch: int = 1000) -> None:
    """log_batch takes at most 1000 metrics per call."""
    for i in range(0, len(metrics), batch):
        c.log_batch(run_id, metrics=metrics[i : i + batch])
