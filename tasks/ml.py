"""ML tasks of the weekly retrain: labels -> train (walk-forward evaluated) -> metrics artifacts ->
register the challenger in MLflow -> promote it if its out-of-sample backtest beats the champion's.

Each task wraps one models/ call; models/ is the only package that imports MLflow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.retries import COMPUTE_RETRIES, IO_RETRIES
from tasks.runtime import Runtime

COMPUTE = COMPUTE_RETRIES
REGISTRY = IO_RETRIES | dict(retry_delay_seconds=[2, 10, 30])  # MLflow store may be remote


@task(name="load_training_bars", **REGISTRY)
def load_training_bars(rt: Runtime, end: datetime | None = None, symbols: list[str] | None = None) -> pl.DataFrame:
    """History for training before `end`: the shipped data merged with the store's streamed and
    backfilled bars, de-duplicated (core.training_history; the main job trains on the earlier part)."""
    from core.training_history import training_history

    return training_history(rt.settings, rt.store, symbols, end)


@task(name="build_labels", **COMPUTE)
def build_labels(rt: Runtime, bars: pl.DataFrame, strategies: list[str] | None = None) -> dict[str, Any]:
    """Every historical detection event labelled by the one trade simulator (models.dataset)."""
    from models.dataset import STRATEGIES, build_events

    events = build_events(bars, rt.settings, tuple(strategies or STRATEGIES))
    get_run_logger().info("labelled events: %s", {k: v.events.height for k, v in events.items()})
    return events


@task(name="train_models", **COMPUTE)
def train_models(rt: Runtime, events: dict[str, Any], bars: pl.DataFrame) -> list[Any]:
    """Walk-forward evaluation, the OOS backtest and the final fit per strategy (not yet logged).

    The learning loop (SPEC 5): the store's closed paper/live trades, with the features and predictions
    stored at entry, join the historical labels (models.outcomes)."""
    from models.outcomes import read_outcomes
    from models.pipeline import train_strategy

    outcomes = read_outcomes(rt.store, rt.settings)
    get_run_logger().info("stored trade outcomes for the learning loop: %d", outcomes.height)
    return [
        train_strategy(ev, bars, rt.settings, log=False, backtest=True, outcomes=outcomes if outcomes.height else None)
        for ev in events.values()
    ]


@task(name="evaluate_models", **COMPUTE)
def evaluate_models(rt: Runtime, reports: list[Any]) -> list[dict[str, Any]]:
    """Pooled walk-forward metrics and the OOS ML-vs-rule backtest per strategy, as a table artifact."""
    rows = []
    for r in reports:
        row: dict[str, Any] = {"strategy": r.strategy, "events": r.n_events, "skipped": r.skipped or ""}
        if r.walk_forward is not None:
            row.update({k: round(float(v), 4) for k, v in r.walk_forward.pooled.items() if isinstance(v, int | float)})
        for key in ("ml", "rule"):
            stats = r.backtest.get(key) if isinstance(r.backtest.get(key), dict) else None
            if stats:
                row.update({f"bt_{key}_{k}": round(float(v), 4) for k, v in stats.items()})
        rows.append(row)
    if rows:
        create_table_artifact(key="retrain-metrics", table=rows, description="Walk-forward metrics and OOS backtests")
    return rows


@task(name="register_challenger", **REGISTRY)
def register_challenger(rt: Runtime, reports: list[Any], events: dict[str, Any]) -> dict[str, str]:
    """Log each trained model to MLflow (params incl. the settings fingerprint, metrics, plots, model
    with signature) and register it as the `challenger` version."""
    from models.run_log import log_training_run

    versions = {}
    for r in reports:
        if r.model is None or r.walk_forward is None:
            continue
        example = events[r.strategy].trainable  # the training events: input example and signature
        rec = log_training_run(r.model, r.walk_forward, r.backtest, rt.settings, example, r.n_events,
                               learning=r.learning or None)
        r.version, r.run_id = rec.version, rec.run_id
        versions[r.strategy] = rec.version
    get_run_logger().info("registered challengers: %s", versions)
    return versions


@task(name="promote_if_better", **REGISTRY)
def promote_if_better(rt: Runtime, strategies: list[str]) -> list[dict[str, Any]]:
    """Promote each challenger whose OOS backtest beats the champion's on the same window."""
    from models.promotion import promote

    columns = ("strategy", "promoted", "champion", "challenger", "reason")
    out = []
    for s in strategies:
        d = promote(s, rt.settings)
        out.append({"strategy": s, "promoted": d.promoted, "reason": d.reason, "champion": d.champion,
                    "challenger": d.challenger})  # fmt: skip
    rows = ["| " + " | ".join(str(o[k]) for k in columns) + " |" for o in out]
    create_markdown_artifact(
        key="model-promotion",
        markdown="\n".join(["| " + " | ".join(columns) + " |", "|---|---|---|---|---|", *rows]),
        description="Champion/challenger decisions of this retrain",
    )
    return out


@task(name="model_versions", **REGISTRY)
def model_versions(rt: Runtime, strategies: list[str]) -> dict[str, str | None]:
    """The champion version per strategy (None: rule-only defaults apply)."""
    from models.tracking import CHAMPION, alias_version, client, model_name

    c = client(rt.settings)
    return {s: alias_version(c, model_name(s, rt.settings), CHAMPION) for s in strategies}
