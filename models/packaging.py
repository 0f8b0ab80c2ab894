"""A strategy's fitted models as an MLflow model package, and back.

The package is MLflow "models from code" (models/pyfunc_model.py) with three artifacts: the calibrated
classifier in the sklearn flavour (stored with skops, no pickle), each regressor in xgboost's native JSON,
and meta.json (strategy, feature names, output clip ranges). Loading goes through a given client, so the
caller's tracking and registry URIs are used, never the process-wide ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs in the dependencies
import polars as pl
import sklearn
import skops
import xgboost
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from models.train import TARGETS, StrategyModel

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
LOGGED_MODEL_NAME = "model"
# Pinned to what trained the model; given explicitly because inferring them runs a subprocess (~30 s).
PIP_REQUIREMENTS = [f"{m.__name__}=={m.__version__}" for m in (mlflow, xgboost, sklearn, skops, pd, np)]
# MLflow 3 stores sklearn models with skops; these are the types our classifier holds.
SKOPS_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.TimeSeriesSplit",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
]


def write_artifacts(model: StrategyModel, folder: Path) -> dict[str, str]:
    """The package's artifacts in `folder`: classifier (sklearn flavour), regressors (JSON), meta.json."""
    clf_dir = folder / "classifier"
    mlflow.sklearn.save_model(
        model.classifier, str(clf_dir), skops_trusted_types=SKOPS_TRUSTED_TYPES, pip_requirements=PIP_REQUIREMENTS
    )
    reg_dir = folder / "regressors"
    reg_dir.mkdir()
    for name, reg in model.regressors.items():
        reg.save_model(str(reg_dir / f"{name}.json"))
    meta = {
        "strategy": model.strategy,
        "feature_names": model.feature_names,
        "regressors": list(model.regressors),
        "clip": {k: list(TARGETS[k][1]) for k in model.regressors},
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return {"classifier": str(clf_dir), "regressors": str(reg_dir), "meta": str(folder / "meta.json")}


def log_model(model: StrategyModel, example: pl.DataFrame, folder: Path) -> ModelInfo:
    """Log the package to the active run (MLflow's fluent API: call inside models.tracking.scoped_uris).

    The signature and input example are the first rows of `example` (the training events)."""
    artifacts = write_artifacts(model, folder)
    x_example = example.select(pl.col(c).cast(pl.Float64) for c in model.feature_names).head(5).to_pandas()
    y_example = pd.DataFrame(model.predict(x_example.to_numpy(dtype=np.float64)))
    info: ModelInfo = mlflow.pyfunc.log_model(
        name=LOGGED_MODEL_NAME,
        python_model=str(PYFUNC_CODE),
        artifacts=artifacts,
        signature=infer_signature(x_example, y_example),
        input_example=x_example,
        pip_requirements=PIP_REQUIREMENTS,
    )
    return info


def version_location(c: MlflowClient, name: str, version: str) -> str:
    """Where a registered version's files are, resolved through `c` (not a models:/ URI, whose
    resolution would read the process-wide registry URI)."""
    uri = c.get_model_version_download_uri(name, version)
    if uri.startswith("models:/"):  # a logged model's id: its artifact location is in the tracking store
        model_id = c.get_model_version(name, version).model_id
        if model_id:
            uri = c.get_logged_model(model_id).artifact_location
    return uri


def download_version(c: MlflowClient, name: str, version: str) -> str:
    """A local folder with the registered version's package (a local store's own folder, else a new
    temporary copy)."""
    local: str = mlflow.artifacts.download_artifacts(
        artifact_uri=version_location(c, name, version), tracking_uri=c.tracking_uri
    )
    return local


def load_version(c: MlflowClient, name: str, version: str) -> Any:
    """The registered version's `models.pyfunc_model.StrategyPyfunc` (feature_names, predict_matrix)."""
    return mlflow.pyfunc.load_model(download_version(c, name, version)).unwrap_python_model()
