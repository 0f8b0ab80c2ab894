"""Both decision rules applied to walk-forward out-of-sample predictions: what each would have traded.

Input: models.evaluate.WalkForwardResult.predictions (test events with pred_* columns, each predicted by
a model that never saw it). Per rule: trades taken, win rate and mean net return of the taken trades
(the label simulation's net return, after fees), and the share of calendar quarters of the test span
in which the rule took at least one trade. "all" is every event (rule-only trading, no filter).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from core.decision_rule import DecisionRule, takes
from core.scoring import round_trip_fee
from core.settings import Settings

PRED = "pred_"


def rule_mask(predictions: pl.DataFrame, strategy: str, rule: DecisionRule, settings: Settings) -> np.ndarray:
    """Which OOS events the rule takes: the model's p and its own TP/SL (plan values where it has none)."""
    frame = predictions.select(
        p=pl.col(PRED + "confidence"),
        tp=_pred_or_plan(predictions, "take_profit_pct", "tp_pct"),
        sl=_pred_or_plan(predictions, "stop_loss_pct", "sl_pct"),
        entry_type=pl.col("entry_type"),
    )
    fee_by_type = {t: round_trip_fee(t, settings) for t in frame["entry_type"].unique().to_list()}
    fees = frame["entry_type"].replace_strict(fee_by_type, return_dtype=pl.Float64).to_numpy()
    threshold = float(getattr(settings.strategy, strategy).min_confidence)
    return takes(rule, frame["p"].to_numpy(), frame["tp"].to_numpy(), frame["sl"].to_numpy(), fees, threshold, settings.ml.min_ev)


def _pred_or_plan(frame: pl.DataFrame, output: str, plan_column: str) -> pl.Expr:
    return pl.col(PRED + output) if PRED + output in frame.columns else pl.col(plan_column)


def rule_outcomes(predictions: pl.DataFrame, mask: np.ndarray) -> dict[str, float]:
    """trades, win_rate, mean_net_return, quarters_with_trades_share for the events `mask` selects."""
    quarters = predictions.select(q=pl.col("ts").dt.truncate("1q"))["q"]
    span = _quarters_between(quarters.min(), quarters.max()) if predictions.height else 0
    taken = predictions.filter(pl.Series(mask))
    n = taken.height
    net = taken["net_return"].cast(pl.Float64).to_numpy()
    return {
        "trades": float(n),
        "win_rate": float((net > 0).mean()) if n else math.nan,
        "mean_net_return": float(net.mean()) if n else math.nan,
        "quarters_with_trades_share": (quarters.filter(pl.Series(mask)).n_unique() / span) if span else math.nan,
    }


def _quarters_between(first: object, last: object) -> int:
    f, last_q = first, last
    return (last_q.year - f.year) * 4 + (last_q.month - f.month) // 3 + 1  # type: ignore[attr-defined]


def compare_rules(predictions: pl.DataFrame, strategy: str, settings: Settings) -> dict[str, dict[str, float]]:
    """{"all" | "threshold" | "ev": rule_outcomes} on one strategy's pooled OOS predictions."""
    out = {"all": rule_outcomes(predictions, np.ones(predictions.height, dtype=bool))}
    for rule in DecisionRule:
        out[rule.value] = rule_outcomes(predictions, rule_mask(predictions, strategy, rule, settings))
    return out
