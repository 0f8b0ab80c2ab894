"""SHAP explanations: which inputs move each model's output, and which way (summary plots as PNG files).

TreeExplainer gives exact Shapley values for tree ensembles. The confidence model is a calibrated
ensemble (one xgboost booster per calibration fold, each followed by a sigmoid); its SHAP values are the
mean of the boosters' margin (log-odds) SHAP values -- the sigmoids are monotone, so the ranking and
direction of each feature's effect is the boosters'. Regressors are explained directly. The files are
returned for the caller to log as MLflow artifacts (this module imports no MLflow).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs in flows and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import shap  # type: ignore[import-untyped]  # noqa: E402
from xgboost import XGBModel  # noqa: E402

from models.train import StrategyModel  # noqa: E402

MAX_ROWS = 2000  # SHAP cost grows with rows; a summary plot reads the same from a 2,000-event sample


def shap_values(models: list[XGBModel], x: np.ndarray) -> np.ndarray:
    """(rows, features) SHAP values in each model's margin space, averaged over the models."""
    return np.mean([np.asarray(shap.TreeExplainer(m).shap_values(x)) for m in models], axis=0)


def shap_summary_plot(
    models: XGBModel | list[XGBModel],
    frame: pl.DataFrame,
    feature_names: list[str],
    path: Path,
    title: str,
    max_display: int = 20,
    seed: int = 0,
) -> Path:
    """Beeswarm summary of SHAP values over `frame` (features as columns; nulls are xgboost's missing)."""
    if frame.is_empty():
        raise ValueError("no rows to explain")
    missing = [f for f in feature_names if f not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks model inputs {missing}")
    if frame.height > MAX_ROWS:
        frame = frame.sample(MAX_ROWS, seed=seed)
    x = frame.select(pl.col(f).cast(pl.Float64) for f in feature_names).to_numpy()
    values = shap_values(models if isinstance(models, list) else [models], x)
    plt.figure()
    shap.summary_plot(values, x, feature_names=feature_names, max_display=max_display, show=False)
    fig = plt.gcf()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def explain_strategy_model(model: StrategyModel, frame: pl.DataFrame, out_dir: Path) -> dict[str, Path]:
    """One SHAP summary PNG per output of a strategy's model: {"confidence": path, "take_profit_pct": ...}."""
    boosters: list[XGBModel] = [c.estimator for c in model.classifier.calibrated_classifiers_]
    out = {
        "confidence": shap_summary_plot(
            boosters, frame, model.feature_names, out_dir / f"shap_{model.strategy}_confidence.png",
            f"{model.strategy}: SHAP (log-odds of a net win, mean of {len(boosters)} calibration boosters)",
        )
    }  # fmt: skip
    for name, reg in model.regressors.items():
        out[name] = shap_summary_plot(
            reg, frame, model.feature_names, out_dir / f"shap_{model.strategy}_{name}.png", f"{model.strategy}: SHAP ({name})"
        )
    return out
