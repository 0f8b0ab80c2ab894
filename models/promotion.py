"""The champion/challenger policy: move `champion` to the challenger only when it trades better out of sample.

Promotion moves `champion` to the challenger only when the challenger's out-of-sample backtest beats the
champion's on the same window by `ml.promotion_min_improvement` in `ml.promotion_metric`; with no
champion yet, the first challenger becomes champion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl
from mlflow import MlflowClient
from mlflow.entities import Run

from core.settings import Settings
from models.oos import rebacktest
from models.packaging import load_version
from models.tracking import CHALLENGER, CHAMPION, MlflowTarget, alias_version, model_name

WINDOW_TAGS = ("oos_window_start", "oos_window_end")


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
    c = MlflowTarget.from_settings(settings).client()
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
    run_chal = _version_run(c, name, chal)
    run_champ = _version_run(c, name, champ)
    if all(run_chal.data.tags.get(k) == run_champ.data.tags.get(k) for k in WINDOW_TAGS):
        window = (run_chal.data.tags.get(WINDOW_TAGS[0], ""), run_chal.data.tags.get(WINDOW_TAGS[1], ""))
        a, b = run_chal.data.metrics.get(f"bt_ml_{metric}"), run_champ.data.metrics.get(f"bt_ml_{metric}")
        how = "logged OOS backtests, same window"
    else:
        compared = _reevaluate(c, name, strategy, champ, run_champ, run_chal, settings)
        if isinstance(compared, str):
            return PromotionDecision(strategy, False, compared, champ, chal)
        a, b, window = compared
        how = "both re-backtested on the challenger's OOS events after the champion's training data"
    if a is None or b is None:
        missing = f"metric {metric} missing (challenger {a}, champion {b})"
        return PromotionDecision(strategy, False, missing, champ, chal)
    margin = settings.ml.promotion_min_improvement
    verdict = "beats" if a > b + margin else "does not beat"
    reason = f"{metric} {a:.4f} {verdict} champion v{champ} {b:.4f} + {margin} ({how}, {window[0]} .. {window[1]})"
    if a > b + margin:
        c.set_registered_model_alias(name, CHAMPION, chal)
        return PromotionDecision(strategy, True, reason, chal, chal, a, b, window)
    return PromotionDecision(strategy, False, reason, champ, chal, a, b, window)


def _version_run(c: MlflowClient, name: str, version: str) -> Run:
    run_id = c.get_model_version(name, version).run_id
    if not run_id:
        raise ValueError(f"{name} version {version} has no training run; register versions with models.run_log")
    return c.get_run(run_id)


def _reevaluate(
    c: MlflowClient, name: str, strategy: str, champ: str, run_champ: Run, run_chal: Run, settings: Settings
) -> tuple[float | None, float | None, tuple[str, str]] | str:
    """(challenger metric, champion metric, window) on the common unseen window, or why there is none."""
    until = run_champ.data.tags.get("trained_until")
    if not until:
        return f"champion v{champ} has no trained_until tag; retrain it to compare on a common window"
    path = c.download_artifacts(run_chal.info.run_id, "evaluation/oos_predictions.parquet")
    preds = pl.read_parquet(path).filter(pl.col("ts") > datetime.fromisoformat(until))
    if preds.is_empty():
        return f"the challenger has no out-of-sample events after champion v{champ}'s training data (until {until})"
    result = rebacktest(preds, load_version(c, name, champ), settings, strategy)
    metric = settings.ml.promotion_metric
    return result.challenger.get(metric), result.champion.get(metric), result.window
