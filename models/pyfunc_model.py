"""The registered model of one strategy, as MLflow "models from code" (no pickled Python object of ours).

Logged by models.registry with three artifacts:
- classifier: the calibrated classifier, saved with the mlflow.sklearn flavour;
- regressors: one xgboost booster per regression output, in xgboost's native JSON format;
- meta: JSON with the strategy, the feature names and each output's clip range.
`predict` takes a DataFrame of the feature columns and returns one column per output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from xgboost import XGBRegressor


class StrategyPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.strategy: str = meta["strategy"]
        self.feature_names: list[str] = meta["feature_names"]
        self.clip: dict[str, tuple[float, float]] = {k: tuple(v) for k, v in meta["clip"].items()}
        self.classifier = mlflow.sklearn.load_model(context.artifacts["classifier"])
        self.regressors: dict[str, XGBRegressor] = {}
        for name in meta["regressors"]:
            reg = XGBRegressor()
            reg.load_model(str(Path(context.artifacts["regressors"]) / f"{name}.json"))
            self.regressors[name] = reg

    def predict_matrix(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Fast path for the scorer: a float matrix in feature_names order -> every output, clipped."""
        out = {"confidence": self.classifier.predict_proba(x)[:, 1].astype(np.float64)}
        for name, reg in self.regressors.items():
            lo, hi = self.clip[name]
            out[name] = np.clip(reg.predict(x).astype(np.float64), lo, hi)
        return out

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        x = model_input[self.feature_names].to_numpy(dtype=np.float64)
        return pd.DataFrame(self.predict_matrix(x))


mlflow.models.set_model(StrategyPyfunc())
