"""MLScorer: core.scoring.Scorer backed by each strategy's champion model in the MLflow registry.

The champion of each strategy is loaded once per process (`<name>@champion`, through this scorer's own
MLflow client: models.packaging.load_version) and reloaded when the alias moves: the alias's version is
looked up at most every `alias_check_seconds` (one cheap registry call), and the model is only reloaded
when that version changed. A batch of signals is scored in one
model call per strategy. Strategies without a champion get the rule-only defaults (rule_only=True), so
the decision log says "rule-only defaults (no champion model)".

Model inputs are the signal's own features plus the coin/market context (models.features). The context
is taken from `signal.features` when the caller already put it there, else from the last bars seen by
`observe_bars` (call it with the scan's candle window), else it is missing (xgboost's missing value).
A champion trained with the opt-in edge features (models.edge_features; issue 12) gets them whatever
this process's settings say, since the model's own feature names decide: the edge context is computed by
`observe_bars` from the same bars and code as in training, and the own-outcome features by `OwnOutcomes`
from the strategy's detection events on those bars, simulated as in training and settled before the signal.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from core.domain import Scores, Signal
from core.scoring import RuleOnlyScorer
from core.settings import Settings
from core.strategies.registry import detect_all
from models.edge_features import EDGE_CONTEXT_FEATURES, OUTCOME_FEATURES, edge_context_features, outcome_features
from models.features import COIN_FEATURES, MARKET_FEATURES, coin_features, market_features
from models.labels import label_events
from models.packaging import load_version
from models.tracking import CHAMPION, MlflowTarget, alias_version, model_name

_log = logging.getLogger(__name__)


class OwnOutcomes:
    """models.edge_features.outcome_features for signals, from one candle frame: the strategy's detection
    events on `bars` simulated by the label simulator (models.labels), the path models.dataset.build_events
    trains on. An outcome counts only once settled strictly before the signal's bar, so bars after a
    signal never change its values. Detection and labelling run once, on first use."""

    def __init__(self, bars: pl.DataFrame, settings: Settings) -> None:
        self._bars, self._settings = bars, settings
        self._detected: pl.DataFrame | None = None
        self._labelled: dict[str, pl.DataFrame] = {}

    def _outcomes(self, strategy: str) -> pl.DataFrame:
        if strategy not in self._labelled:
            if self._detected is None:
                self._detected = detect_all(self._bars, self._settings)
            rows = self._detected.filter(pl.col("strategy") == strategy)
            self._labelled[strategy] = label_events(rows, self._bars, self._settings) if rows.height else rows
        return self._labelled[strategy]

    def features(self, signals: list[Signal]) -> list[dict[str, float]]:
        """OUTCOME_FEATURES per signal (same order); NaN where fewer than MIN_SETTLED trades had settled."""
        nan = dict.fromkeys(OUTCOME_FEATURES, math.nan)
        out = [dict(nan) for _ in signals]
        if self._bars.is_empty():
            return out
        for strategy in {s.strategy.value for s in signals}:
            idx = [i for i, s in enumerate(signals) if s.strategy.value == strategy]
            outcomes = self._outcomes(strategy)
            if outcomes.is_empty():
                continue
            frame = pl.DataFrame(
                {"symbol": [signals[i].symbol for i in idx], "ts": [signals[i].ts for i in idx],
                 "strategy": [strategy] * len(idx)},
                schema_overrides={"ts": self._bars.schema["ts"]},
            )
            for i, row in zip(idx, outcome_features(frame, outcomes).iter_rows(named=True), strict=True):
                out[i] = {f: math.nan if row[f] is None else float(row[f]) for f in OUTCOME_FEATURES}
        return out


@dataclass
class _Loaded:
    version: str
    model: Any  # models.pyfunc_model.StrategyPyfunc


class MLScorer:
    def __init__(self, settings: Settings, alias: str = CHAMPION, alias_check_seconds: float = 60.0) -> None:
        self._settings = settings
        self._alias = alias
        self._check_every = alias_check_seconds
        self._client = MlflowTarget.from_settings(settings).client()
        self._rule = RuleOnlyScorer(settings)
        self._loaded: dict[str, _Loaded | None] = {}
        self._checked_at: dict[str, float] = {}
        self._coin_ctx: dict[str, dict[str, float]] = {}
        self._mkt_ctx: dict[str, float] = {}
        self._own: OwnOutcomes | None = None

    # -- context -------------------------------------------------------------------------------------
    def observe_bars(self, bars: pl.DataFrame) -> None:
        """Remember the coin/market context at each symbol's last bar.

        bars: one timeframe, at least models.features.CONTEXT_LOOKBACK (31 days) of history, or the 30-day
        features are computed on a shorter window than in training."""
        if bars.is_empty():
            return
        tf = bars["timeframe"][0]
        # The edge context always: a champion trained with ml.edge_features needs it whatever our settings say.
        coins = coin_features(bars, tf).join(edge_context_features(bars, tf), on=["symbol", "ts"], how="left")
        coins = coins.sort("ts").group_by("symbol").last()
        names = (*COIN_FEATURES, *EDGE_CONTEXT_FEATURES)
        self._coin_ctx = {r["symbol"]: {f: r[f] for f in names} for r in coins.iter_rows(named=True)}
        self._own = OwnOutcomes(bars, self._settings)  # computed only if a model needs OUTCOME_FEATURES
        mkt = market_features(bars, self._settings).sort("ts").tail(1)
        self._mkt_ctx = {f: mkt[f][0] for f in MARKET_FEATURES} if mkt.height else {}

    # -- models --------------------------------------------------------------------------------------
    def _model(self, strategy: str) -> _Loaded | None:
        now = time.monotonic()
        if strategy in self._loaded and now - self._checked_at.get(strategy, -math.inf) < self._check_every:
            return self._loaded[strategy]
        self._checked_at[strategy] = now
        name = model_name(strategy, self._settings)
        current = self._loaded.get(strategy)
        try:
            version = alias_version(self._client, name, self._alias)
        except Exception as exc:  # noqa: BLE001 - registry unreachable: keep what is loaded (or rule-only) and retry later
            _log.warning("cannot read %s@%s (%s); keeping %s", name, self._alias, exc,
                         f"version {current.version}" if current else "rule-only defaults")
            self._loaded.setdefault(strategy, None)
            return self._loaded[strategy]
        if version is None:
            self._loaded[strategy] = None
        elif current is None or current.version != version:
            # Resolved through this scorer's own client: the process-wide registry URI may point elsewhere.
            self._loaded[strategy] = _Loaded(version, load_version(self._client, name, version))
        return self._loaded[strategy]

    def input_names(self, strategy: str) -> list[str]:
        """The strategy's champion's inputs ([] without one)."""
        loaded = self._model(strategy)
        return [] if loaded is None else list(loaded.model.feature_names)

    def model_version(self, strategy: str) -> str | None:
        loaded = self._model(strategy)
        return None if loaded is None else f"{model_name(strategy, self._settings)}/{loaded.version}"

    # -- scoring -------------------------------------------------------------------------------------
    def _row(self, s: Signal, names: list[str], own: dict[str, float]) -> list[float]:
        coin = self._coin_ctx.get(s.symbol, {})
        out = []
        for f in names:
            v = s.features.get(f, coin.get(f, self._mkt_ctx.get(f, own.get(f))))
            out.append(math.nan if v is None else float(v))
        return out

    def score(self, signals: list[Signal]) -> list[Scores]:
        result: list[Scores | None] = [None] * len(signals)
        by_strategy: dict[str, list[int]] = {}
        for i, s in enumerate(signals):
            by_strategy.setdefault(s.strategy.value, []).append(i)
        for strategy, idx in by_strategy.items():
            loaded = self._model(strategy)
            batch = [signals[i] for i in idx]
            if loaded is None:
                scores = self._rule.score(batch)
            else:
                model = loaded.model
                own = self._own_outcomes(batch, model.feature_names)
                x = np.array([self._row(s, model.feature_names, o) for s, o in zip(batch, own, strict=True)],
                             dtype=np.float64)  # fmt: skip
                version = f"{model_name(strategy, self._settings)}/{loaded.version}"
                scores = self._to_scores(batch, model.predict_matrix(x), version)
            for i, sc in zip(idx, scores, strict=True):
                result[i] = sc
        return [r for r in result if r is not None]

    def _own_outcomes(self, batch: list[Signal], names: list[str]) -> list[dict[str, float]]:
        """OUTCOME_FEATURES from the observed bars when the model takes them and the signals lack them."""
        wanted = [f for f in OUTCOME_FEATURES if f in names]
        if not wanted or self._own is None or all(f in s.features for s in batch for f in wanted):
            return [{} for _ in batch]
        return self._own.features(batch)

    @staticmethod
    def _to_scores(batch: list[Signal], preds: dict[str, np.ndarray], version: str) -> list[Scores]:
        """Outputs the model lacks (e.g. Swing's size or hold) keep the plan's rule defaults."""
        out = []
        for k, s in enumerate(batch):
            hold = preds.get("hold_hours")
            out.append(
                Scores(
                    confidence=float(np.clip(preds["confidence"][k], 0.0, 1.0)),
                    take_profit_pct=_output(preds, "take_profit_pct", k, s.plan.take_profit_pct),
                    stop_loss_pct=_output(preds, "stop_loss_pct", k, s.plan.stop_loss_pct),
                    size_multiplier=_output(preds, "size_multiplier", k, 1.0),
                    hold=timedelta(hours=float(hold[k])) if hold is not None else s.plan.max_hold,
                    model_version=version,
                    rule_only=False,
                )
            )
        return out


def _output(preds: dict[str, np.ndarray], name: str, k: int, default: float) -> float:
    return float(preds[name][k]) if name in preds else default
