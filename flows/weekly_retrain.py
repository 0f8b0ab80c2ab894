"""weekly_retrain: labels -> train -> evaluate -> register challenger -> promote if better."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from flows.common import flow_runtime, parse_when
from flows.hooks import ALERT_HOOKS
from tasks.ml import build_labels, evaluate_models, load_training_bars, promote_if_better, register_challenger, train_models
from tasks.runtime import Runtime


@flow(name="weekly-retrain", validate_parameters=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def weekly_retrain(
    end: datetime | str | None = None,
    strategies: list[str] | None = None,
    promote: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Train on the history before `end` (default: all of it); each run is logged to MLflow."""
    with flow_runtime(runtime) as rt:
        bars = load_training_bars(rt, end=parse_when(end))
        events = build_labels(rt, bars, strategies)
        reports = train_models(rt, events, bars)
        metrics = evaluate_models(rt, reports)
        versions = register_challenger(rt, reports, events)
        decisions = promote_if_better(rt, list(versions)) if promote and versions else []
        return {"metrics": metrics, "challengers": versions, "promotions": decisions}
