"""The training pipeline of one or all strategies: events -> walk-forward -> OOS backtest -> fit -> MLflow.

The out-of-sample backtest replays the same bars twice through core.backtest.engine: once with the
walk-forward predictions (each signal scored by the fold model that never saw it; PredictionTableScorer)
and once with the rule-only defaults. Only the strategy under study trades in both runs (the others'
signals get confidence 0, so the manager skips them), so the two equity curves differ by the model alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from core.backtest.engine import run_backtest
from core.backtest.metrics import summary
from core.domain import Scores, Signal, timeframe_duration
from core.scoring import RuleOnlyScorer, Scorer
from core.settings import Settings
from core.storage.base import CandleStore
from models.dataset import STRATEGIES, StrategyEvents, build_events, load_history
from models.evaluate import WalkForwardResult, buy_and_hold_btc, walk_forward
from models.scorer import PredictionTableScorer
from models.train import StrategyModel, fit_strategy_model

BACKTEST_METRICS = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "pnl")


class OneStrategyScorer:
    """Delegates one strategy's signals to `inner`; every other signal gets confidence 0 (never taken)."""

    def __init__(self, inner: Scorer, strategy: str) -> None:
        self._inner = inner
        self._strategy = strategy

    def score(self, signals: list[Signal]) -> list[Scores]:
        mine = [i for i, s in enumerate(signals) if s.strategy.value == self._strategy]
        inner = dict(zip(mine, self._inner.score([signals[i] for i in mine]), strict=True))
        return [
            inner.get(i)
            or Scores(confidence=0.0, take_profit_pct=s.plan.take_profit_pct, stop_loss_pct=s.plan.stop_loss_pct)
            for i, s in enumerate(signals)
        ]


def oos_backtest(bars: pl.DataFrame, settings: Settings, strategy: str, predictions: pl.DataFrame) -> dict[str, Any]:
    """ML-filtered vs rule-only vs buy-and-hold BTC on the walk-forward test window of `predictions`
    (same bars, same window, same capital). Keys: window, ml, rule, bh (absent without BTC bars), and
    <key>_equity frames (ts, equity)."""
    if predictions.is_empty():
        return {}
    step = timeframe_duration(bars["timeframe"][0])
    start: datetime = predictions["ts"].min()  # type: ignore[assignment]
    end: datetime = predictions["ts"].max() + step  # type: ignore[operator]
    out: dict[str, Any] = {"window": (start.isoformat(), end.isoformat())}
    scorers = {"ml": PredictionTableScorer(predictions, settings), "rule": RuleOnlyScorer(settings)}
    for key, inner in scorers.items():
        res = run_backtest(bars, settings, start=start, end=end, scorer=OneStrategyScorer(inner, strategy))
        stats = summary(res.trades, res.equity, settings.risk.capital, start, end)
        out[key] = {k: float(stats[k]) for k in BACKTEST_METRICS if stats.get(k) is not None}
        out[f"{key}_equity"] = res.equity.select("ts", "equity")
    bh = buy_and_hold_btc(bars, settings, start, end)
    if bh is not None:
        out["bh"], out["bh_equity"] = bh
    return out


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
    from models.outcomes import append_outcomes, ml_accuracy

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

    `outcomes` (models.outcomes.read_outcomes of a store): the stored paper/live closed trades; those of
    this strategy that are not historical events are appended to the training events (walk-forward and
    final fit), and the counts and the ML accuracy of the model-scored ones are logged with the run."""
    t0 = time.perf_counter()
    learning: dict[str, Any] = {}
    if outcomes is not None:
        ev, learning = learning_summary(ev, outcomes)
    data = ev.trainable
    if data.height < 2 * (settings.ml.walk_forward_folds + 1) or data["success"].n_unique() < 2:
        return TrainingReport(ev.strategy, data.height, None, skipped=f"too few labelled events ({data.height}) or one outcome only",
                              learning=learning)
    wf = walk_forward(data, ev.strategy, ev.feature_names, settings)
    bt = oos_backtest(bars, settings, ev.strategy, wf.predictions) if backtest else {}
    model = fit_strategy_model(data, ev.strategy, ev.feature_names, settings)
    report = TrainingReport(ev.strategy, data.height, wf, bt, model, learning=learning)
    if log:
        from models.registry import log_training_run

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
    outcomes_store: CandleStore | None = None,
) -> list[TrainingReport]:
    """Train every strategy on `bars` (default: the shipped history of settings.data.symbols); with
    `outcomes_store`, plus the stored paper/live outcomes (SPEC 5's learning loop, models.outcomes)."""
    bars = bars if bars is not None else load_history(settings)
    events = build_events(bars, settings, strategies)
    outcomes = None
    if outcomes_store is not None:
        from models.outcomes import read_outcomes

        outcomes = read_outcomes(outcomes_store, settings, timeframe=str(bars["timeframe"][0]))
    return [train_strategy(events[s], bars, settings, log=log, backtest=backtest, outcomes=outcomes) for s in strategies]
