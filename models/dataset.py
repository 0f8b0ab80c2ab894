"""From candles to labelled training events: detect -> features -> labels, per strategy.

detect_all (core.strategies.registry) finds every historical detection event; models.features adds the
coin/market context at the signal bar; models.labels simulates each trade with core.simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from core.data_import import load_shipped
from core.domain import StrategyName
from core.errors import DataQualityError
from core.settings import Settings
from core.strategies.registry import FEATURE_NAMES, detect_all
from models.edge_features import OUTCOME_FEATURES, outcome_features
from models.features import CONTEXT_FEATURES, context_feature_names, context_features, event_features
from models.labels import label_events

STRATEGIES: tuple[str, ...] = tuple(s.value for s in StrategyName)


def feature_names(strategy: str, settings: Settings | None = None) -> list[str]:
    """Model inputs of a strategy: its own detector features, then the shared context features (with the
    opt-in edge context and own-outcome features when `settings` turns them on)."""
    names = [*FEATURE_NAMES[StrategyName(strategy)], *CONTEXT_FEATURES]
    if settings is not None:
        names += [f for f in context_feature_names(settings) if f not in CONTEXT_FEATURES]
        names += list(OUTCOME_FEATURES) if settings.ml.outcome_features else []
    return names


@dataclass
class StrategyEvents:
    strategy: str
    feature_names: list[str]
    events: pl.DataFrame  # every detection event: ids, plan, features, outcome, targets, label_end

    @property
    def trainable(self) -> pl.DataFrame:
        """Events with an outcome: the trade filled (unfilled grids have nothing to learn from)."""
        return self.events.filter(pl.col("filled").fill_null(False))


def load_history(
    settings: Settings,
    symbols: list[str] | None = None,
    timeframe: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """Shipped history from the data directory (core.data_import) as a CANDLE_SCHEMA frame sorted by (symbol, ts).

    Without `symbols`: the monitored coins, or every coin in the file when settings.ml.train_all_symbols
    (issue 12 "more events"; per-coin differences stay in the coin features)."""
    timeframe = timeframe or settings.data.detection_timeframe
    syms = list(symbols) if symbols else (None if settings.ml.train_all_symbols else list(settings.data.symbols))
    bars = load_shipped(settings.data.data_dir, timeframe, syms, start, end)
    if bars.is_empty():
        raise DataQualityError(
            f"no {timeframe} history for {syms or 'any symbol'} in {settings.data.data_dir} between {start} and {end}; "
            "set data.data_dir (MLCRYPTO_DATA__DATA_DIR) or widen the window"
        )
    return bars.sort("symbol", "ts")


def build_events(
    bars: pl.DataFrame, settings: Settings, strategies: tuple[str, ...] = STRATEGIES
) -> dict[str, StrategyEvents]:
    """Labelled events per strategy from one candle frame (one timeframe).

    Detection, simulation and the context features each run once over all strategies' events.
    """
    rows = detect_all(bars, settings).filter(pl.col("strategy").is_in(list(strategies)))
    labelled = label_events(rows, bars, settings) if rows.height else rows
    context = context_features(bars, settings)
    keys = ["symbol", "timeframe", "ts", "strategy"]
    out: dict[str, StrategyEvents] = {}
    for strategy in strategies:
        names = feature_names(strategy, settings)
        mine = labelled.filter(pl.col("strategy") == strategy) if labelled.height else labelled
        if mine.is_empty():
            out[strategy] = StrategyEvents(strategy, names, pl.DataFrame())
            continue
        feats = event_features(mine, bars, tuple(FEATURE_NAMES[StrategyName(strategy)]), settings, context)
        if settings.ml.outcome_features:  # the strategy's own results settled before each signal (opt-in)
            feats = feats.join(outcome_features(mine, mine), on=["symbol", "ts", "strategy"], how="left")
        events = mine.drop("features").join(feats, on=keys, how="left")
        out[strategy] = StrategyEvents(strategy, names, events.sort("ts", "symbol"))
    return out
