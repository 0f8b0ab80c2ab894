"""The registered model of one strategy, as MLflow "models from code" (no pickled Python object of ours).

Logged by models.packaging with three artifacts:
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
import pandas as pd  # type: ignore[import-untyped]  # no pandas-stubs in the dependencies
from mlflow.pyfunc.model import PythonModel
from scipy.special import expit
from xgboost import XGBRegressor


class StrategyPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.strategy: str = meta["strategy"]
        self.feature_names: list[str] = meta["feature_names"]
        self.clip: dict[str, tuple[float, float]] = {k: tuple(v) for k, v in meta["clip"].items()}
        self.classifier = mlflow.sklearn.load_model(context.artifacts["classifier"])
        self.regressors: dict[str, XGBRegressor] = {}
        for name in meta["regressors"]:
            reg = XGBRegressor(n_jobs=1)  # one thread: a 300-row batch is faster than thread start-up
            reg.load_model(str(Path(context.artifacts["regressors"]) / f"{name}.json"))
            self.regressors[name] = reg

        self._boosters = {name: reg.get_booster() for name, reg in self.regressors.items()}
        self._sigmoid = _sigmoid_parts(self.classifier)
        if self._sigmoid is not None:  # use the direct formula only where it reproduces sklearn exactly
            probe = np.random.default_rng(0).normal(size=(16, len(self.feature_names)))
            probe[::3, ::2] = np.nan
            if not np.allclose(self._confidence(probe), self.classifier.predict_proba(probe)[:, 1], atol=1e-7):
                self._sigmoid = None

    def _confidence(self, x: np.ndarray) -> np.ndarray:
        if self._sigmoid is None:
            return self.classifier.predict_proba(x)[:, 1]
        # CalibratedClassifierCV (sigmoid, ensemble): mean over folds of 1 / (1 + exp(a * p_fold + b))
        return np.mean([expit(-(a * b.inplace_predict(x) + c)) for b, a, c in self._sigmoid], axis=0)

    def predict_matrix(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Fast path for the scorer: a float matrix in feature_names order -> every output, clipped.

        Calls the boosters directly (sklearn's per-call validation costs more than the trees here)."""
        out = {"confidence": self._confidence(x).astype(np.float64)}
        for name, booster in self._boosters.items():
            lo, hi = self.clip[name]
            out[name] = np.clip(booster.inplace_predict(x).astype(np.float64), lo, hi)
        return out

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        x = model_input[self.feature_names].to_numpy(dtype=np.float64)
        return pd.DataFrame(self.predict_matrix(x))


def _sigmoid_parts(classifier: Any) -> list[tuple[Any, float, float]] | None:
    """(booster, a, b) per calibrated fold when every calibrator is sklearn's sigmoid; else None."""
    parts = []
    for cc in getattr(classifier, "calibrated_classifiers_", []):
        cal = cc.calibrators[0]
        if not (hasattr(cal, "a_") and hasattr(cal, "b_")):
            return None
        booster = cc.estimator.get_booster()
        booster.set_param({"nthread": 1})
        parts.append((booster, float(cal.a_), float(cal.b_)))
    return parts or None


mlflow.models.set_model(StrategyPyfunc())
