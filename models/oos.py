"""Out-of-sample backtests: ML-filtered vs rule-only vs buy-and-hold BTC on the walk-forward test window.

`oos_backtest` replays the same bars twice through core.backtest.engine: once with the walk-forward
predictions (each signal scored by the fold model that never saw it; PredictionTableScorer) and once with
the rule-only defaults. Only the strategy under study trades in both runs (the others' signals get
confidence 0, so the manager skips them), so the two equity curves differ by the model alone.
`rebacktest` compares two models on the same unseen events (used by models.promotion).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
import polars as pl

from core.backtest.engine import run_backtest
from core.backtest.metrics import summary
from core.domain import Scores, Signal, timeframe_duration
from core.scoring import RuleOnlyScorer, Scorer
from core.settings import Settings
from models.dataset import load_history
from models.evaluate import PRED_PREFIX, buy_and_hold_btc

BACKTEST_METRICS = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "pnl")
# Bars loaded around a re-backtested window: the 30-day features' warm-up and the last trades' exits.
REBACKTEST_WARMUP = timedelta(days=30)
REBACKTEST_TAIL = timedelta(days=5)


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


class PredictionTableScorer:
    """Scores from a table of precomputed (walk-forward, out-of-sample) predictions keyed by signal_id.

    Used to backtest ML-filtered trading honestly: each signal gets the prediction of the fold model that
    never saw it. Signals not in the table (outside the evaluated window) get the rule-only defaults.
    """

    def __init__(self, predictions: pl.DataFrame, settings: Settings, version: str = "walk-forward-oos") -> None:
        cols = [c for c in predictions.columns if c.startswith(PRED_PREFIX)]
        self._table = {r["signal_id"]: r for r in predictions.select("signal_id", *cols).iter_rows(named=True)}
        self._rule = RuleOnlyScorer(settings)
        self._version = version

    def score(self, signals: list[Signal]) -> list[Scores]:
        out = []
        rule = self._rule.score(signals)
        for s, default in zip(signals, rule, strict=True):
            r = self._table.get(s.signal_id)
            if r is None:
                out.append(default)
                continue
            hold = r.get("pred_hold_hours")
            out.append(
                Scores(
                    confidence=float(r["pred_confidence"]),
                    take_profit_pct=float(r.get("pred_take_profit_pct") or s.plan.take_profit_pct),
                    stop_loss_pct=float(r.get("pred_stop_loss_pct") or s.plan.stop_loss_pct),
                    size_multiplier=float(r.get("pred_size_multiplier") or 1.0),
                    hold=timedelta(hours=float(hold)) if hold is not None else s.plan.max_hold,
                    model_version=self._version,
                    rule_only=False,
                )
            )
        return out


def oos_backtest(bars: pl.DataFrame, settings: Settings, strategy: str, predictions: pl.DataFrame) -> dict[str, Any]:
    """ML-filtered vs rule-only vs buy-and-hold BTC on the walk-forward test window of `predictions`
    (same bars, same window, same capital). Keys: window, ml, rule, bh (absent without BTC bars), and
    <key>_equity frames (ts, equity)."""
    if predictions.is_empty():
        return {}
    step = timeframe_duration(bars["timeframe"][0])
    start: datetime = predictions["ts"].min()  # type: ignore[assignment]
    end: datetime = predictions["ts"].max() + step  # type: ignore[assignment,operator]
    out: dict[str, Any] = {"window": (start.isoformat(), end.isoformat())}
    scorers: dict[str, Scorer] = {"ml": PredictionTableScorer(predictions, settings), "rule": RuleOnlyScorer(settings)}
    for key, inner in scorers.items():
        res = run_backtest(bars, settings, start=start, end=end, scorer=OneStrategyScorer(inner, strategy))
        stats = summary(res.trades, res.equity, settings.risk.capital, start, end)
        out[key] = {k: float(stats[k]) for k in BACKTEST_METRICS if stats.get(k) is not None}
        out[f"{key}_equity"] = res.equity.select("ts", "equity")
    bh = buy_and_hold_btc(bars, settings, start, end)
    if bh is not None:
        out["bh"], out["bh_equity"] = bh
    return out


class Predictor(Protocol):
    """A loaded model package (models.pyfunc_model.StrategyPyfunc)."""

    feature_names: list[str]

    def predict_matrix(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Rebacktest:
    """Two OOS backtests of the same events and window: the challenger's predictions vs the champion's."""

    window: tuple[str, str]
    challenger: dict[str, float]
    champion: dict[str, float]


def rebacktest(predictions: pl.DataFrame, champion: Predictor, settings: Settings, strategy: str) -> Rebacktest:
    """Backtest the challenger's walk-forward `predictions` and `champion`'s own predictions on the same
    events (which neither model trained on; the caller selects them), on the shipped history around them."""
    champ_preds = predictions.drop(pl.col(f"^{PRED_PREFIX}.*$")).with_columns(  # type: ignore[arg-type]
        pl.Series(f"{PRED_PREFIX}{k}", v)
        for k, v in champion.predict_matrix(
            predictions.select(pl.col(f).cast(pl.Float64) for f in champion.feature_names).to_numpy()
        ).items()
    )
    start: datetime = predictions["ts"].min()  # type: ignore[assignment]
    end: datetime = predictions["ts"].max()  # type: ignore[assignment]
    symbols = predictions["symbol"].unique().sort().to_list()
    timeframe = str(predictions["timeframe"][0])
    bars = load_history(settings, symbols, timeframe, start - REBACKTEST_WARMUP, end + REBACKTEST_TAIL)
    a = oos_backtest(bars, settings, strategy, predictions)
    b = oos_backtest(bars, settings, strategy, champ_preds)
    return Rebacktest(a["window"], a["ml"], b["ml"])
