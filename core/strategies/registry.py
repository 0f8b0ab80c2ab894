"""Build the three detectors from settings; run them all; turn signal rows into domain Signals.

`detect_all` is what backtests and label generation use (whole history; `window_signals` is the same
as Signals of a window, for the backtest engine); `scan_latest` is what a live scan uses (a window,
keeping only each symbol's last bar).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import polars as pl

from core.domain import OrderType, Signal, StrategyName, TradePlan, bars_in
from core.settings import Settings
from core.strategies.base import (
    PLAN_COLUMNS,
    OnDetectionFrame,
    Strategy,
    bars_timeframe,
    checked_detect,
    shared_detection_frame,
    validate_bars,
)
from core.strategies.channel import ChannelStrategy
from core.strategies.dca import DcaStrategy
from core.strategies.swing import SwingStrategy

# Feature names per strategy are class constants, so signal rows can be read back without settings.
FEATURE_NAMES: dict[StrategyName, tuple[str, ...]] = {
    StrategyName.DCA: DcaStrategy.feature_names,
    StrategyName.SWING: SwingStrategy.feature_names,
    StrategyName.CHANNEL: ChannelStrategy.feature_names,
}
# One struct layout for `features` across strategies (concat needs one dtype); a strategy's own fields
# are the ones in FEATURE_NAMES, the others are null on its rows.
ALL_FEATURES: tuple[str, ...] = tuple(dict.fromkeys(f for names in FEATURE_NAMES.values() for f in names))

SIGNAL_COLUMNS: tuple[str, ...] = ("symbol", "timeframe", "ts", "strategy", "price", *PLAN_COLUMNS[1:], "features")


# signals_from_frame reads these columns, in this order (the plan columns in PLAN_SCHEMA's order).
_SIGNAL_FIELDS: tuple[str, ...] = tuple(c for c in SIGNAL_COLUMNS if c != "features")


def build_strategies(settings: Settings) -> dict[StrategyName, Strategy]:
    s = settings.strategy
    return {
        StrategyName.DCA: DcaStrategy.from_settings(s),
        StrategyName.SWING: SwingStrategy.from_settings(s),
        StrategyName.CHANNEL: ChannelStrategy.from_settings(s),
    }


def warmup_bars(settings: Settings) -> int:
    """Bars a scan window should hold so its values match a full-history run: the recursive indicators
    (EMA, Wilder RSI/ATR) forget their seed geometrically, (1 - 2/51)^500 ~ 2e-9 for EMA(50) after 10
    periods, and the longest plain window (channel, 24h features) must be full on top of that."""
    s = settings.strategy
    recursive = 10 * max(s.swing.ema_period, s.rsi_period, s.atr_period)
    windows = max(s.channel.window_bars, s.volume_avg_bars + 1, s.swing.resistance_bars + 1,
                  bars_in(timedelta(hours=24), settings.data.detection_timeframe) + 1,
                  bars_in(s.dca.lookback, settings.data.detection_timeframe))
    return recursive + windows


def _signal_rows(strategy: Strategy, detected: pl.DataFrame) -> pl.DataFrame:
    own = set(strategy.feature_names)
    fields = [
        (pl.col(f) if f in own else pl.lit(None)).cast(pl.Float64).alias(f) for f in ALL_FEATURES
    ]
    # Lazy: the filter then gathers only the columns selected, not every feature and helper of `detected`.
    return detected.lazy().filter(pl.col("signal")).select(
        "symbol",
        "timeframe",
        "ts",
        pl.lit(strategy.name.value).alias("strategy"),
        pl.col("close").alias("price"),
        *PLAN_COLUMNS[1:],
        pl.struct(fields).alias("features"),
    ).collect()


def _detectors(bars: pl.DataFrame, settings: Settings, validated: bool) -> list[Callable[[], pl.DataFrame]]:
    """One call per strategy returning its signal rows, to be called in order (the first one sharing a
    detection frame builds it)."""
    tf = bars_timeframe(bars) if validated else validate_bars(bars)
    shared: dict[tuple[timedelta, int, int], pl.LazyFrame] = {}  # the common features, once per parameters

    def rows(st: Strategy) -> pl.DataFrame:
        if isinstance(st, OnDetectionFrame):
            key = st.frame_key
            if key not in shared:
                shared[key] = shared_detection_frame(bars, tf, key)
            out = checked_detect(st, bars, partial(st.detect_on, tf, shared[key]), validated=True)
        else:
            out = checked_detect(st, bars, validated=True)
        return _signal_rows(st, out)

    return [partial(rows, st) for st in build_strategies(settings).values()]


def detect_all(bars: pl.DataFrame, settings: Settings, *, validated: bool = False) -> pl.DataFrame:
    """Signal rows of every strategy, sorted by (ts, symbol, strategy). `validated`: the caller already ran
    validate_bars on these bars (the backtest engine does, first thing), so only the timeframe is read."""
    return pl.concat([run() for run in _detectors(bars, settings, validated)]).sort("ts", "symbol", "strategy")


def window_signals(
    bars: pl.DataFrame, settings: Settings, start: datetime, end: datetime, *, validated: bool = False
) -> list[Signal]:
    """Signals of detect_all's rows with start <= ts < end (warm-up bars before `start` still feed the
    indicators), in detect_all's order. Detection and building the Signals run one after the other:
    building them in a thread beside the next strategy's detection measured no faster, because polars
    already keeps both cores busy."""
    rows = detect_all(bars, settings, validated=validated)
    return signals_from_frame(rows.filter((pl.col("ts") >= start) & (pl.col("ts") < end)))


def _opt(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


_STRATEGY_BY_VALUE: dict[str, StrategyName] = {m.value: m for m in StrategyName}
_ORDER_TYPE_BY_VALUE: dict[str, OrderType] = {m.value: m for m in OrderType}


def signals_from_frame(signal_rows: pl.DataFrame) -> list[Signal]:
    """Signal rows (detect_all's layout) to domain Signals with their TradePlan."""
    missing = [c for c in SIGNAL_COLUMNS if c not in signal_rows.columns]
    if missing:
        raise ValueError(f"signal frame lacks columns {missing}; pass detect_all's output")
    # Read column-wise (one list per column, the features struct unnested, missing values as NaN) rather
    # than as row dicts: this runs for every signal of a backtest's history (18k in a 6-month 134-coin run).
    cols = [signal_rows.get_column(c).to_list() for c in _SIGNAL_FIELDS]
    feats = signal_rows.get_column("features").struct.unnest().select(pl.all().cast(pl.Float64).fill_null(math.nan))
    feat_cols = {f: feats.get_column(f).to_list() for f in feats.columns}
    nan_col = [math.nan] * signal_rows.height
    # Each strategy's feature values as one tuple per row (zip runs in C); a row reads its strategy's.
    feat_rows = {
        name: list(zip(*(feat_cols.get(f, nan_col) for f in names), strict=True)) for name, names in FEATURE_NAMES.items()
    }
    # The few distinct enum members and hold/expiry durations, looked up instead of rebuilt per row.
    hours: dict[float, timedelta] = {}
    out: list[Signal] = []
    for i, (symbol, timeframe, ts, strategy, price, entry_type, tp, sl, trailing, hold_h, expiry_h, spacing, levels,
            support, resistance) in enumerate(zip(*cols, strict=True)):
        name = _STRATEGY_BY_VALUE.get(strategy) or StrategyName(strategy)  # unknown: StrategyName's ValueError
        price = float(price)
        spacing = spacing or 0.0
        # Grid levels step down by `spacing` relative to the signal price (not compounding).
        entries = tuple([price * (1 - k * spacing) for k in range(int(levels))])
        hold = hours.get(hold_h) or hours.setdefault(hold_h, timedelta(hours=float(hold_h)))
        expiry = None if expiry_h is None else hours.get(expiry_h) or hours.setdefault(expiry_h, timedelta(hours=float(expiry_h)))
        out.append(
            Signal(
                symbol=symbol,
                strategy=name,
                timeframe=timeframe,
                ts=ts,
                price=price,
                plan=TradePlan(
                    entry_type=_ORDER_TYPE_BY_VALUE.get(entry_type) or OrderType(entry_type),
                    entry_prices=entries,
                    take_profit_pct=float(tp),
                    stop_loss_pct=float(sl),
                    trailing_stop_pct=_opt(trailing),
                    max_hold=hold,
                    entry_expiry=expiry,
                    range_support=_opt(support),
                    range_resistance=_opt(resistance),
                ),
                features=dict(zip(FEATURE_NAMES[name], feat_rows[name][i], strict=True)),
            )
        )
    return out


def scan_latest(bars: pl.DataFrame, settings: Settings) -> list[Signal]:
    """Detect on the window given and keep only signals on each symbol's last bar."""
    last = bars.group_by("symbol").agg(pl.col("ts").max())
    rows = detect_all(bars, settings).join(last, on=["symbol", "ts"], how="semi")
    return signals_from_frame(rows)
