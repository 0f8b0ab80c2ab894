"""The learning loop (SPEC 5): stored paper/live outcomes -> rows of the training event frame, and the
ML accuracy report (predicted vs realised).

Source: the paper ledger's views in the store (core.portfolio): kind "trade" (ClosedTrade) joined by
signal_id to kind "decision" (Decision: the scores and the strategy's features at entry). Backtest
records ("backtest_trades") are not outcomes: they replay history the labels already cover.

Per closed trade, the row is built with the training code itself, from the stored bars:
- the signal row (plan columns: tp_pct, sl_pct, max_hold_h, expiry_h, ...) is found again by
  core.strategies.registry.detect_all on the stored bars (key: strategy, symbol, timeframe, signal ts);
- own features = the decision's stored features at entry (the detector's value where one is missing);
  context features = models.features.event_features on the stored bars (bars <= signal ts only);
- outcome = the REALISED trade: filled, entry/exit ts and price, exit reason, net_return = net P&L /
  entry cost, gross_return. What a closed trade alone cannot give is the path: max favourable/adverse
  excursion come from core.simulator replaying the trade on the stored bars with the scores it was
  traded with (the same TP/SL/hold; replay_matches says whether the replay's exit equals the realised
  one); the time to the best price comes from the bars after the realised entry (labels.time_to_best_hours);
- labels/targets = models.labels.add_targets, the same function historical events go through
  (success = net_return > 0; tp/sl/size/hold targets; label_end = signal ts + expiry + max hold).
De-duplication: a trade whose (strategy, symbol, ts) is already a historical event is not added to
training (history already labels that event; counting it twice would weight it double).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from core.backtest.session import WARMUP
from core.domain import ClosedTrade, Decision, Scores, Signal, StrategyName
from core.regime import BENCHMARK
from core.settings import Settings
from core.storage.base import CandleStore
from core.strategies.registry import FEATURE_NAMES, detect_all
from models.dataset import STRATEGIES, StrategyEvents, feature_names
from models.features import context_features, event_features
from models.labels import add_targets
from models.train import STRATEGY_OUTPUTS

_log = logging.getLogger(__name__)

TRADE_KIND, DECISION_KIND = "trade", "decision"  # core.portfolio's views
SOURCE_HISTORY, SOURCE_OUTCOME = "history", "outcome"
KEYS = ["symbol", "timeframe", "ts", "strategy"]
DEDUP_KEYS = ["strategy", "symbol", "ts"]
# What the models said at entry (Decision.scores), kept beside the realised targets for the accuracy report.
ENTRY_COLUMNS = ("entry_confidence", "entry_take_profit_pct", "entry_stop_loss_pct", "entry_size_multiplier",
                 "entry_hold_hours", "entry_model_version", "entry_rule_only")  # fmt: skip
REALISED = ("entry_ts", "entry_price", "exit_ts", "exit_price", "exit_reason", "net_return", "gross_return", "fees", "quantity")
# Bars needed after the last signal: entry expiry (24h) + the longest max hold (72h) + slack.
_HORIZON = timedelta(days=7)


def _split_signal_id(signal_id: str) -> tuple[str, str, str, datetime]:
    """core.domain.Signal.signal_id is strategy:symbol:timeframe:<ts isoformat>."""
    strategy, symbol, timeframe, ts = signal_id.split(":", 3)
    return strategy, symbol, timeframe, datetime.fromisoformat(ts)


def ledger_trades(store: CandleStore) -> pl.DataFrame:
    """Closed trades joined to their decision (one row per trade; trades without a decision are dropped,
    with a warning: they carry no scores or features)."""
    return _ledger(store)[0]


def _ledger(store: CandleStore) -> tuple[pl.DataFrame, dict[str, tuple[dict[str, Any], Scores | None]]]:
    """(trades frame, signal_id -> (features at entry, scores at entry))."""
    at_entry: dict[str, tuple[dict[str, Any], Scores | None]] = {}
    decisions = {k: Decision.model_validate(p) for k, p in store.get_records(DECISION_KIND)}
    rows: list[dict[str, Any]] = []
    orphans = 0
    for _, payload in store.get_records(TRADE_KIND):
        t = ClosedTrade.model_validate(payload)
        d = decisions.get(t.signal_id)
        if d is None or not t.signal_id:
            orphans += 1
            continue
        strategy, symbol, timeframe, ts = _split_signal_id(t.signal_id)
        s: Scores | None = d.scores
        cost = t.entry_price * t.quantity
        rows.append({
            "signal_id": t.signal_id, "position_id": t.position_id, "strategy": strategy, "symbol": symbol,
            "timeframe": timeframe, "ts": ts, "decision_ts": d.ts, "regime": d.regime.value,
            "entry_ts": t.entry_ts, "entry_price": t.entry_price, "exit_ts": t.exit_ts, "exit_price": t.exit_price,
            "exit_reason": t.exit_reason.value, "net_return": t.net_pnl / cost if cost else 0.0,
            "gross_return": t.exit_price / t.entry_price - 1 if t.entry_price else 0.0, "fees": t.fees,
            "quantity": t.quantity, "net_pnl": t.net_pnl,
            "entry_confidence": s.confidence if s else d.confidence,
            "entry_take_profit_pct": s.take_profit_pct if s else None,
            "entry_stop_loss_pct": s.stop_loss_pct if s else None,
            "entry_size_multiplier": s.size_multiplier if s else None,
            "entry_hold_hours": s.hold / timedelta(hours=1) if s and s.hold else None,
            "entry_model_version": s.model_version if s else None,
            "entry_rule_only": s.rule_only if s else True,
        })  # fmt: skip
        at_entry[t.signal_id] = (d.features, s)
    if orphans:
        _log.warning("%d stored closed trades have no stored decision (no scores/features at entry): skipped", orphans)
    return pl.DataFrame(rows, infer_schema_length=None), at_entry


def read_outcomes(
    store: CandleStore, settings: Settings, bars: pl.DataFrame | None = None, timeframe: str | None = None
) -> pl.DataFrame:
    """Every stored closed trade (of `timeframe`, default the detection timeframe) as a labelled event row:
    ids, plan, features (own + context), realised outcome, targets, label_end, entry_* scores, source.

    `bars`: the candles to rebuild from (default: read from the store: the traded symbols plus the
    market symbols, from 35 days before the first signal to 7 days after the last)."""
    timeframe = timeframe or settings.data.detection_timeframe
    trades, at_entry = _ledger(store)
    if trades.is_empty():
        return pl.DataFrame()
    trades = trades.filter(pl.col("timeframe") == timeframe)
    if trades.is_empty():
        return pl.DataFrame()
    if bars is None:
        symbols = sorted(set(trades["symbol"].to_list()) | set(settings.data.symbols) | {BENCHMARK})
        first: datetime = trades["ts"].min()  # type: ignore[assignment]  # a Datetime column's min
        last: datetime = trades["ts"].max()  # type: ignore[assignment]
        bars = store.read_many(symbols, timeframe, first - WARMUP, last + _HORIZON)
    bars = bars.filter(pl.col("timeframe") == timeframe).sort("symbol", "ts")
    ts_type = bars.schema["ts"]
    trades = trades.with_columns(pl.col("ts", "entry_ts", "exit_ts").cast(ts_type))
    # The signal rows, found again on the stored bars (plan columns and the detector's features).
    wanted = trades.select(KEYS)
    rows = detect_all(bars, settings).with_columns(pl.col("ts").cast(ts_type)).join(wanted, on=KEYS, how="semi")
    missing = trades.height - rows.height
    if missing:
        _log.warning("%d of %d closed trades: their signal is not detected on the stored bars (bars missing or "
                     "changed since); left out", missing, trades.height)
    if rows.is_empty():
        return pl.DataFrame()
    rows = rows.join(trades.select(KEYS), on=KEYS, how="inner", maintain_order="left")
    parts = []
    for strategy in rows["strategy"].unique().sort().to_list():
        mine = rows.filter(pl.col("strategy") == strategy)
        parts.append(_labelled(mine, trades, at_entry, bars, settings, strategy))
    out = pl.concat(parts, how="diagonal_relaxed")
    return out.sort("ts", "symbol")


def _labelled(
    rows: pl.DataFrame,
    trades: pl.DataFrame,
    at_entry: dict[str, tuple[dict[str, Any], Scores | None]],
    bars: pl.DataFrame,
    settings: Settings,
    strategy: str,
) -> pl.DataFrame:
    from core.simulator import simulate_many

    own_names = tuple(FEATURE_NAMES[StrategyName(strategy)])

    def traded_scores(sig: Signal) -> Scores:
        s = at_entry[sig.signal_id][1]
        return s if s is not None else Scores(confidence=0.5, take_profit_pct=sig.plan.take_profit_pct,
                                              stop_loss_pct=sig.plan.stop_loss_pct, hold=sig.plan.max_hold)

    replay = simulate_many(rows, bars, settings, scores_for=traded_scores)  # signal order kept
    real = replay.select("signal_id", "max_favorable", "max_adverse", replay_exit_ts="exit_ts").join(
        trades.drop("strategy", "symbol", "timeframe", "ts"), on="signal_id", how="left",
        maintain_order="left",
    )
    labelled = pl.concat([rows, real], how="horizontal").with_columns(
        filled=pl.lit(True), replay_matches=pl.col("replay_exit_ts") == pl.col("exit_ts")
    )
    labelled = add_targets(labelled, bars)
    # Own features: what the decision stored at entry; the detector's value where it stored none.
    stored = pl.DataFrame(
        [{"signal_id": sid, **{f: _num(at_entry[sid][0].get(f)) for f in own_names}} for sid in labelled["signal_id"]],
        schema={"signal_id": pl.Utf8, **{f: pl.Float64 for f in own_names}},
    )
    detected = labelled.select("signal_id", "features").unnest("features")
    merged = stored.join(detected.select("signal_id", *own_names), on="signal_id", how="left", suffix="_det").select(
        "signal_id", *(pl.coalesce(pl.col(f), pl.col(f"{f}_det").cast(pl.Float64)).alias(f) for f in own_names)
    )
    with_own = labelled.drop("features").join(
        merged.select("signal_id", features=pl.struct(*own_names)), on="signal_id", how="left", maintain_order="left"
    )
    context = context_features(bars, settings)
    feats = event_features(with_own, bars, own_names, settings, context)
    return with_own.drop("features").join(feats, on=KEYS, how="left", maintain_order="left").with_columns(
        source=pl.lit(SOURCE_OUTCOME)
    )


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class OutcomeRows:
    """Outcome rows of one strategy ready to append to its training events, and what was left out."""

    strategy: str
    rows: pl.DataFrame
    trades: int  # stored closed trades of this strategy (rebuilt)
    duplicates: int  # already historical events (same strategy, symbol, ts)


def outcome_training_rows(outcomes: pl.DataFrame, events: StrategyEvents) -> OutcomeRows:
    """The outcomes of events.strategy not already among its historical events, in the training columns
    (the historical frame's columns that the outcomes have, plus `source`)."""
    strategy = events.strategy
    mine = outcomes.filter(pl.col("strategy") == strategy) if outcomes.height else outcomes
    if mine.is_empty():
        return OutcomeRows(strategy, pl.DataFrame(), 0, 0)
    hist = events.events
    fresh = mine.join(hist.select(DEDUP_KEYS).with_columns(pl.col("ts").cast(mine.schema["ts"])), on=DEDUP_KEYS,
                      how="anti") if hist.height else mine  # fmt: skip
    cols = [c for c in hist.columns if c in fresh.columns] if hist.height else list(fresh.columns)
    for f in feature_names(strategy):
        if f not in cols:
            cols.append(f)
    rows = fresh.select(*cols, *(["source"] if "source" not in cols else []))
    return OutcomeRows(strategy, rows, mine.height, mine.height - fresh.height)


def append_outcomes(events: StrategyEvents, outcomes: pl.DataFrame | None) -> tuple[StrategyEvents, OutcomeRows | None]:
    """events + the strategy's de-duplicated outcome rows (source = history / outcome), sorted by ts."""
    if outcomes is None:
        return events, None
    extra = outcome_training_rows(outcomes, events)
    if extra.rows.is_empty():
        return events, extra
    hist = events.events.with_columns(source=pl.lit(SOURCE_HISTORY)) if events.events.height else events.events
    rows = extra.rows.with_columns(pl.col("ts").cast(hist.schema["ts"])) if hist.height else extra.rows
    merged = pl.concat([hist, rows], how="diagonal_relaxed").sort("ts", "symbol")
    return StrategyEvents(events.strategy, events.feature_names, merged), extra


# -- ML accuracy (predicted vs realised) ------------------------------------------------------------------

CONFIDENCE_BUCKETS: tuple[float, ...] = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0)
# Prediction at entry -> realised target (the same target definitions as training).
ACCURACY_PAIRS = {
    "take_profit_pct": ("entry_take_profit_pct", "tp_target"),
    "stop_loss_pct": ("entry_stop_loss_pct", "sl_target"),
    "hold_hours": ("entry_hold_hours", "hold_target_h"),
}


@dataclass(frozen=True)
class MLAccuracy:
    buckets: pl.DataFrame  # strategy, bucket, lo, hi, trades, mean_confidence, realised_win_rate
    summary: pl.DataFrame  # strategy, trades, mean_confidence, realised_win_rate, brier, mae_<output> per output

    def metrics(self, strategy: str, prefix: str = "acc_") -> dict[str, float]:
        """Flat numbers of one strategy (for MLflow): summary columns and the win rate per bucket."""
        out: dict[str, float] = {}
        for r in self.summary.filter(pl.col("strategy") == strategy).iter_rows(named=True):
            out |= {f"{prefix}{k}": float(v) for k, v in r.items() if k != "strategy" and v is not None}
        for r in self.buckets.filter(pl.col("strategy") == strategy).iter_rows(named=True):
            tag = f"{r['lo']:.2f}_{r['hi']:.2f}".replace(".", "")
            out[f"{prefix}trades_b{tag}"] = float(r["trades"])
            out[f"{prefix}win_rate_b{tag}"] = float(r["realised_win_rate"])
        return out


def ml_accuracy(outcomes: pl.DataFrame, buckets: tuple[float, ...] = CONFIDENCE_BUCKETS) -> MLAccuracy:
    """For the stored trades that had model scores (entry_rule_only false): the realised win rate per
    confidence bucket [lo, hi) (the last one closed), and the MAE of the TP/SL/hold predictions vs the
    realised targets."""
    empty = MLAccuracy(
        pl.DataFrame(schema={"strategy": pl.Utf8, "bucket": pl.Utf8, "lo": pl.Float64, "hi": pl.Float64,
                             "trades": pl.UInt32, "mean_confidence": pl.Float64, "realised_win_rate": pl.Float64}),
        pl.DataFrame(schema={"strategy": pl.Utf8, "trades": pl.UInt32}),
    )  # fmt: skip
    if outcomes.is_empty():
        return empty
    scored = outcomes.filter(~pl.col("entry_rule_only").fill_null(True) & pl.col("entry_confidence").is_not_null())
    if scored.is_empty():
        return empty
    edges = np.asarray(buckets, dtype=float)
    idx = np.clip(np.searchsorted(edges, scored["entry_confidence"].to_numpy(), side="right") - 1, 0, len(edges) - 2)
    scored = scored.with_columns(
        lo=pl.Series(edges[idx]), hi=pl.Series(edges[idx + 1]), win=pl.col("success").cast(pl.Float64)
    )
    per_bucket = (
        scored.group_by("strategy", "lo", "hi")
        .agg(trades=pl.len(), mean_confidence=pl.col("entry_confidence").mean(), realised_win_rate=pl.col("win").mean())
        .with_columns(bucket=pl.format("{}-{}", pl.col("lo").round(2), pl.col("hi").round(2)))
        .select("strategy", "bucket", "lo", "hi", "trades", "mean_confidence", "realised_win_rate")
        .sort("strategy", "lo")
    )
    parts = []
    for (strategy,), part in scored.partition_by("strategy", as_dict=True, maintain_order=True).items():
        # Only the outputs this strategy's model predicts (models.train.STRATEGY_OUTPUTS): the others
        # were the plan's rule defaults, not predictions.
        maes = {
            f"mae_{name}": (pl.col(pred) - pl.col(real)).abs()
            .filter(pl.col(pred).is_not_null() & pl.col(real).is_not_null())
            .mean()
            for name, (pred, real) in ACCURACY_PAIRS.items()
            if name in STRATEGY_OUTPUTS[str(strategy)]
        }
        parts.append(part.select(
            strategy=pl.lit(str(strategy)),
            trades=pl.len(),
            mean_confidence=pl.col("entry_confidence").mean(),
            realised_win_rate=pl.col("win").mean(),
            brier=((pl.col("entry_confidence") - pl.col("win")) ** 2).mean(),
            **maes,
        ))  # fmt: skip
    return MLAccuracy(per_bucket, pl.concat(parts, how="diagonal_relaxed").sort("strategy"))


def ml_accuracy_report(store: CandleStore, settings: Settings, bars: pl.DataFrame | None = None) -> MLAccuracy:
    """ML accuracy of every stored paper/live trade that had model scores (SPEC 5)."""
    return ml_accuracy(read_outcomes(store, settings, bars))


__all__ = [
    "STRATEGIES", "MLAccuracy", "OutcomeRows", "append_outcomes", "ledger_trades", "ml_accuracy", "ml_accuracy_report",
    "outcome_training_rows", "read_outcomes",
]  # fmt: skip
