"""MLflow tracking and the model registry: log a training run, register it, move the aliases.

One experiment and one registered model per strategy (`<prefix>-<strategy>`). Every new version gets the
alias `challenger`. Promotion moves `champion` to the challenger only when the challenger's out-of-sample
backtest beats the champion's on the same window by `ml.promotion_min_improvement` in
`ml.promotion_metric`; with no champion yet, the first challenger becomes champion.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import skops
import sklearn
import xgboost
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from core.settings import Settings
from models.evaluate import PRED_PREFIX, WalkForwardResult
from models.plots import plot_calibration, plot_equity, plot_feature_importance
from models.train import CALIBRATION, TARGETS, StrategyModel, _booster_params

CHAMPION = "champion"
CHALLENGER = "challenger"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
# Pinned to what trained the model; given explicitly because inferring them runs a subprocess (~30 s).
PIP_REQUIREMENTS = [f"{m.__name__}=={m.__version__}" for m in (mlflow, xgboost, sklearn, skops, pd, np)]
SKOPS_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.TimeSeriesSplit",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
]


def tracking_uri(settings: Settings) -> str:
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def client(settings: Settings) -> MlflowClient:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in logs
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_name(strategy: str, settings: Settings) -> str:
    return f"{settings.ml.experiment_prefix}-{strategy}"


def model_name(strategy: str, settings: Settings) -> str:
    return f"{settings.ml.registered_model_prefix}-{strategy}"


def _experiment_id(name: str, settings: Settings) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # Keep artifacts beside a local sqlite store instead of ./mlruns of whatever the cwd is.
    location = None
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        location = (Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent / "artifacts" / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    version: str
    model_uri: str


def _finite(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def log_training_run(
    model: StrategyModel,
    wf: WalkForwardResult,
    backtest: dict[str, Any],
    settings: Settings,
    example: pl.DataFrame,
    n_events: int,
    learning: dict[str, Any] | None = None,
) -> RunRecord:
    """Log params, metrics, plots, equity curves and the model; register it and alias it `challenger`.

    `backtest` holds the OOS comparison: {"window": (start, end), "ml": {metric: value}, "rule": {...},
    "ml_equity": frame(ts, equity), "rule_equity": frame(ts, equity)} (+ "bh", "bh_equity": buy-and-hold BTC).
    `learning` (models.pipeline.learning_summary): stored outcomes used (params and metrics
    outcome_trades / outcome_rows_used / outcome_duplicates) and the ML accuracy (metrics acc_*, artifact
    evaluation/ml_accuracy.json).
    """
    c = client(settings)
    strategy = model.strategy
    name = model_name(strategy, settings)
    window = backtest.get("window") or (None, None)
    with mlflow.start_run(experiment_id=_experiment_id(experiment_name(strategy, settings), settings)) as run:
        mlflow.log_params(
            {
                "strategy": strategy,
                "settings_fingerprint": settings.fingerprint(),
                "n_events": n_events,
                "features": ",".join(model.feature_names),
                "calibration": CALIBRATION,
                "walk_forward_folds": settings.ml.walk_forward_folds,
                "embargo_h": settings.ml.embargo.total_seconds() / 3600,
                "threshold": wf.threshold,
                **{f"xgb_{k}": v for k, v in _booster_params(settings).items()},
            }
        )
        mlflow.set_tags(
            {
                "strategy": strategy,
                "settings_fingerprint": settings.fingerprint(),
                "oos_window_start": str(window[0]),
                "oos_window_end": str(window[1]),
                "trained_until": model.trained_until.isoformat() if model.trained_until else "",
            }
        )
        if learning is not None:
            counts = {k: int(learning.get(k, 0)) for k in ("outcome_trades", "outcome_rows_used", "outcome_duplicates")}
            mlflow.log_params(counts)
            mlflow.log_metrics({k: float(v) for k, v in counts.items()} | _finite(learning.get("accuracy_metrics", {}), ""))
        mlflow.log_metrics(_finite(wf.pooled, "oos_"))
        for fold in wf.folds:
            mlflow.log_metrics(_finite(fold, "fold_"), step=int(fold["fold"]))
        mlflow.log_metrics(
            _finite(backtest.get("ml", {}), "bt_ml_") | _finite(backtest.get("rule", {}), "bt_rule_")
            | _finite(backtest.get("bh", {}), "bt_bh_")
        )
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            plot_feature_importance(model.feature_importance(), d / "feature_importance.png", f"{strategy}: feature importance")
            mlflow.log_artifact(str(d / "feature_importance.png"), "plots")
            if not wf.predictions.is_empty():
                y = wf.predictions["success"].to_numpy().astype(int)
                p = wf.predictions[PRED_PREFIX + "confidence"].to_numpy()
                plot_calibration(y, p, d / "calibration.png", f"{strategy}: calibration (walk-forward OOS)")
                mlflow.log_artifact(str(d / "calibration.png"), "plots")
                wf.predictions.drop(pl.col(pl.List, pl.Struct, pl.Object)).write_parquet(d / "oos_predictions.parquet")
                mlflow.log_artifact(str(d / "oos_predictions.parquet"), "evaluation")
            curves = {k: backtest[f"{k}_equity"] for k in ("ml", "rule", "bh") if f"{k}_equity" in backtest}
            if curves:
                labels = {"ml": "ML-filtered", "rule": "rule-only", "bh": "buy-and-hold BTC"}
                plot_equity({labels[k]: v for k, v in curves.items()}, d / "oos_equity.png", f"{strategy}: out-of-sample equity")
                mlflow.log_artifact(str(d / "oos_equity.png"), "plots")
                for k, curve in curves.items():
                    curve.write_parquet(d / f"oos_equity_{k}.parquet")
                    mlflow.log_artifact(str(d / f"oos_equity_{k}.parquet"), "evaluation")
            acc = (learning or {}).get("accuracy")
            if acc is not None:
                (d / "ml_accuracy.json").write_text(json.dumps(
                    {"buckets": acc.buckets.to_dicts(), "summary": acc.summary.to_dicts()}, indent=2, default=str))
                mlflow.log_artifact(str(d / "ml_accuracy.json"), "evaluation")
            (d / "walk_forward.json").write_text(json.dumps({"folds": wf.folds, "pooled": wf.pooled}, indent=2, default=str))
            mlflow.log_artifact(str(d / "walk_forward.json"), "evaluation")
            info = _log_model(model, example, d)
        mv = mlflow.register_model(info.model_uri, name)
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    return RunRecord(run.info.run_id, str(mv.version), info.model_uri)


def _log_model(model: StrategyModel, example: pl.DataFrame, tmp: Path) -> Any:
    """Models from code (pyfunc_model.py) + the sklearn-flavour classifier + native xgboost boosters."""
    clf_dir = tmp / "classifier"
    # MLflow 3 stores sklearn models with skops (no pickle); these are the types our classifier holds.
    mlflow.sklearn.save_model(
        model.classifier, str(clf_dir), skops_trusted_types=SKOPS_TRUSTED_TYPES, pip_requirements=PIP_REQUIREMENTS
    )
    reg_dir = tmp / "regressors"
    reg_dir.mkdir()
    for name, reg in model.regressors.items():
        reg.save_model(str(reg_dir / f"{name}.json"))
    meta = {
        "strategy": model.strategy,
        "feature_names": model.feature_names,
        "regressors": list(model.regressors),
        "clip": {k: list(TARGETS[k][1]) for k in model.regressors},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    x_example = example.select(pl.col(c).cast(pl.Float64) for c in model.feature_names).head(5).to_pandas()
    y_example = pd.DataFrame(model.predict(x_example.to_numpy(dtype=np.float64)))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts={"classifier": str(clf_dir), "regressors": str(reg_dir), "meta": str(tmp / "meta.json")},
        signature=infer_signature(x_example, y_example),
        input_example=x_example,
        pip_requirements=PIP_REQUIREMENTS,
    )


def alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    """Version behind an alias, or None when the model or the alias does not exist.

    Any other failure (store unreachable, ...) is raised: "no champion" must not be confused with
    "cannot ask".
    """
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@dataclass(frozen=True)
class PromotionDecision:
    strategy: str
    promoted: bool
    reason: str
    champion: str | None  # version that is champion after the decision
    challenger: str | None
    challenger_value: float | None = None  # the promotion metric of each on the compared window
    champion_value: float | None = None
    window: tuple[str, str] | None = None


def promote(strategy: str, settings: Settings) -> PromotionDecision:
    """Promote the challenger to champion if its OOS backtest beats the champion's on the same window.

    Same evaluation window (same data): the logged backtest metrics are compared. Different windows (a
    retrain on more data): both are backtested again on the challenger's walk-forward events that come
    after the champion's training data, where neither model saw the outcome - the challenger with its
    walk-forward predictions, the champion with its own predictions on the same events.
    """
    c = client(settings)
    name = model_name(strategy, settings)
    chal = alias_version(c, name, CHALLENGER)
    champ = alias_version(c, name, CHAMPION)
    if chal is None:
        return PromotionDecision(strategy, False, f"{name} has no challenger; train first", champ, None)
    if champ == chal:
        return PromotionDecision(strategy, False, f"version {chal} is already champion", champ, chal)
    if champ is None:
        c.set_registered_model_alias(name, CHAMPION, chal)
        return PromotionDecision(strategy, True, "no champion yet: the first challenger becomes champion", chal, chal)
    metric = settings.ml.promotion_metric
    run_chal = c.get_run(c.get_model_version(name, chal).run_id)
    run_champ = c.get_run(c.get_model_version(name, champ).run_id)
    keys = ("oos_window_start", "oos_window_end")
    if all(run_chal.data.tags.get(k) == run_champ.data.tags.get(k) for k in keys):
        window = (run_chal.data.tags.get(keys[0], ""), run_chal.data.tags.get(keys[1], ""))
        a, b = run_chal.data.metrics.get(f"bt_ml_{metric}"), run_champ.data.metrics.get(f"bt_ml_{metric}")
        how = "logged OOS backtests, same window"
    else:
        compared = _reevaluate(c, name, strategy, champ, run_champ, run_chal, settings)
        if isinstance(compared, str):
            return PromotionDecision(strategy, False, compared, champ, chal)
        a, b, window = compared
        how = "both re-backtested on the challenger's OOS events after the champion's training data"
    if a is None or b is None:
        return PromotionDecision(strategy, False, f"metric {metric} missing (challenger {a}, champion {b})", champ, chal)
    margin = settings.ml.promotion_min_improvement
    verdict = "beats" if a > b + margin else "does not beat"
    reason = f"{metric} {a:.4f} {verdict} champion v{champ} {b:.4f} + {margin} ({how}, {window[0]} .. {window[1]})"
    if a > b + margin:
        c.set_registered_model_alias(name, CHAMPION, chal)
        return PromotionDecision(strategy, True, reason, chal, chal, a, b, window)
    return PromotionDecision(strategy, False, reason, champ, chal, a, b, window)


def _reevaluate(
    c: MlflowClient, name: str, strategy: str, champ: str, run_champ: Any, run_chal: Any, settings: Settings
) -> tuple[float | None, float | None, tuple[str, str]] | str:
    """(challenger metric, champion metric, window) on the common unseen window, or why there is none."""
    from models.dataset import load_history
    from models.pipeline import oos_backtest

    until = run_champ.data.tags.get("trained_until")
    if not until:
        return f"champion v{champ} has no trained_until tag; retrain it to compare on a common window"
    path = mlflow.artifacts.download_artifacts(
        run_id=run_chal.info.run_id, artifact_path="evaluation/oos_predictions.parquet", tracking_uri=c.tracking_uri
    )
    preds = pl.read_parquet(path).filter(pl.col("ts") > datetime.fromisoformat(until))
    if preds.is_empty():
        return f"the challenger has no out-of-sample events after champion v{champ}'s training data (until {until})"
    model = mlflow.pyfunc.load_model(f"models:/{name}/{champ}").unwrap_python_model()
    x = preds.select(pl.col(f).cast(pl.Float64) for f in model.feature_names).to_numpy()
    champ_preds = preds.drop(pl.col("^pred_.*$")).with_columns(
        pl.Series(f"{PRED_PREFIX}{k}", v) for k, v in model.predict_matrix(x).items()
    )
    start, end = preds["ts"].min(), preds["ts"].max()
    bars = load_history(settings, preds["symbol"].unique().sort().to_list(), str(preds["timeframe"][0]),
                        start - timedelta(days=30), end + timedelta(days=5))  # warm-up and the last trades' exits
    metric = settings.ml.promotion_metric
    a = oos_backtest(bars, settings, strategy, preds)
    b = oos_backtest(bars, settings, strategy, champ_preds)
    return a["ml"].get(metric), b["ml"].get(metric), a["window"]
