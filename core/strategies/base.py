"""The strategy contract, the checks around it, and the look-ahead probe.

A strategy is a pure function from candles (many symbols, one timeframe) to the same rows plus feature
columns, a `signal` flag and the plan columns below. Everything is a polars expression evaluated per
contiguous stretch of one symbol, so a value at bar t depends only on bars <= t of that symbol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import polars as pl
from polars.testing import assert_frame_equal

from core import indicators as ind
from core.domain import StrategyName, bars_in, timeframe_duration
from core.errors import DataQualityError, StrategyError
from core.settings import StrategySettings

# Plan columns every detector adds (besides its features), with their dtypes.
PLAN_SCHEMA: dict[str, pl.DataType] = {
    "signal": pl.Boolean(),
    "entry_type": pl.Utf8(),  # 'limit' | 'market'
    "tp_pct": pl.Float64(),
    "sl_pct": pl.Float64(),
    "trailing_pct": pl.Float64(),  # null: no trailing stop
    "max_hold_h": pl.Float64(),
    "expiry_h": pl.Float64(),  # null: entry does not expire (market)
    "grid_spacing": pl.Float64(),  # null unless a limit grid
    "grid_levels": pl.Int64(),  # 1 for a single (market) entry
    "support": pl.Float64(),  # channel only
    "resistance": pl.Float64(),  # channel only
}
PLAN_COLUMNS: tuple[str, ...] = tuple(PLAN_SCHEMA)

REQUIRED_BAR_COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")

# A hole longer than this starts a new stretch: every window (and the EMA/RSI recursions) restarts after
# it, so no signal's lookback spans it. Shorter holes (exchange maintenance, <= a few hours) are bridged.
# The value is the setting's default (strategy.max_bridged_gap); strategies built from settings use the setting.
MAX_BRIDGED_GAP: timedelta = StrategySettings().max_bridged_gap
SEGMENT = "_segment"
PARTITION = SEGMENT  # windows run per stretch; segment ids are unique across symbols
COMMON_FEATURES: tuple[str, ...] = ("rsi", "atr_pct", "rvol_24h", "ret_24h", "liquidity_24h")


@runtime_checkable
class Strategy(Protocol):
    # Read-only members, so frozen dataclasses satisfy the protocol.
    @property
    def name(self) -> StrategyName: ...

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature columns this strategy adds (the ML inputs)."""
        ...

    def detect(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Same rows, same order, plus feature columns, `signal` and the plan columns."""
        ...


def bars_timeframe(bars: pl.DataFrame) -> str:
    """The one timeframe of a candle frame, or a DataQualityError saying what to do."""
    tfs = bars.get_column("timeframe").unique().to_list()
    if len(tfs) != 1:
        raise DataQualityError(f"detection needs bars of exactly one timeframe, got {sorted(map(str, tfs))}; "
                               "filter the frame by timeframe first")
    timeframe_duration(tfs[0])  # raises on an unknown timeframe
    return str(tfs[0])


def validate_bars(bars: pl.DataFrame) -> str:
    """Check the columns and the (symbol, ts) order detection relies on; return the timeframe."""
    missing = [c for c in REQUIRED_BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise DataQualityError(f"candle frame lacks columns {missing}; it needs {list(REQUIRED_BAR_COLUMNS)}")
    if bars.height == 0:
        raise DataQualityError("candle frame is empty: nothing to detect on")
    tf = bars_timeframe(bars)
    new_symbol = (pl.col("symbol") != pl.col("symbol").shift(1)).fill_null(True)
    checks = bars.lazy().select(
        contiguous=new_symbol.sum() == pl.col("symbol").n_unique(),
        increasing=(new_symbol | (pl.col("ts").diff() > timedelta(0))).all(),
        nulls=pl.sum_horizontal(pl.col(c).null_count() for c in REQUIRED_BAR_COLUMNS),
    ).collect().row(0, named=True)
    if not (checks["contiguous"] and checks["increasing"]):
        raise DataQualityError("candle frame must be sorted by (symbol, ts) without duplicates; "
                               "use bars.unique(['symbol', 'ts']).sort(['symbol', 'ts'])")
    if checks["nulls"]:
        raise DataQualityError(f"candle frame has {checks['nulls']} null values in {list(REQUIRED_BAR_COLUMNS)}; "
                               "repair or drop those bars before detection")
    return tf


def with_segments(bars: pl.DataFrame, max_gap: timedelta = MAX_BRIDGED_GAP) -> pl.DataFrame:
    """Add SEGMENT: one integer id per contiguous stretch of one symbol; a new stretch starts at a new
    symbol or after a hole longer than max_gap. (One integer key makes `.over()` cheap.)"""
    new_symbol = (pl.col("symbol") != pl.col("symbol").shift(1)).fill_null(True)
    return bars.with_columns((new_symbol | (pl.col("ts").diff() > max_gap)).cum_sum().alias(SEGMENT))


def plan_exprs(
    *,
    entry_type: str,
    tp_pct: pl.Expr | float,
    sl_pct: pl.Expr | float,
    max_hold: timedelta,
    trailing_pct: float | None = None,
    expiry: timedelta | None = None,
    grid_spacing: float | None = None,
    grid_levels: int = 1,
    support: pl.Expr | None = None,
    resistance: pl.Expr | None = None,
) -> list[pl.Expr]:
    """The plan columns (except `signal`) with their contract dtypes."""
    hours = timedelta(hours=1)
    values: dict[str, pl.Expr | object] = {
        "entry_type": entry_type,
        "tp_pct": tp_pct,
        "sl_pct": sl_pct,
        "trailing_pct": trailing_pct,
        "max_hold_h": max_hold / hours,
        "expiry_h": None if expiry is None else expiry / hours,
        "grid_spacing": grid_spacing,
        "grid_levels": grid_levels,
        "support": support,
        "resistance": resistance,
    }
    return [
        (v if isinstance(v, pl.Expr) else pl.lit(v)).cast(PLAN_SCHEMA[k]).alias(k) for k, v in values.items()
    ]


@runtime_checkable
class OnDetectionFrame(Protocol):
    """A strategy that can start from a prepared detection_frame (the three built-in ones): detect_all
    builds that frame once for all strategies sharing its parameters instead of once per strategy."""

    @property
    def frame_key(self) -> tuple[timedelta, int, int]:
        """(max_gap, rsi_period, atr_period): the detection_frame arguments."""
        ...

    def detect_on(self, timeframe: str, frame: pl.LazyFrame) -> pl.DataFrame:
        """detect() on detection_frame(bars, *frame_key)'s result."""
        ...


def checked_detect(
    strategy: Strategy, bars: pl.DataFrame, run: Callable[[], pl.DataFrame] | None = None, *, validated: bool = False
) -> pl.DataFrame:
    """Run a detector and check it kept the rows (freqtrade's assert_df): same count, same last ts per
    symbol, and every promised column present. A broken strategy raises StrategyError. `run` replaces
    `strategy.detect(bars)` (detect_all passes detect_on over a shared frame); `validated`: the caller
    already ran validate_bars on these bars."""
    if not validated:
        validate_bars(bars)
    try:
        out = strategy.detect(bars) if run is None else run()
    except (DataQualityError, StrategyError):
        raise
    except Exception as exc:
        raise StrategyError(f"strategy {strategy.name} failed in detect: {exc}") from exc
    if out.height != bars.height:
        raise StrategyError(f"strategy {strategy.name} returned {out.height} rows for {bars.height} bars")
    if not out.get_column("ts").equals(bars.get_column("ts")) or not out.get_column("symbol").equals(
        bars.get_column("symbol")
    ):
        raise StrategyError(f"strategy {strategy.name} changed the row order or the last timestamps")
    missing = [c for c in (*PLAN_COLUMNS, *strategy.feature_names) if c not in out.columns]
    if missing:
        raise StrategyError(f"strategy {strategy.name} did not add columns {missing}")
    if out.get_column("signal").null_count():
        raise StrategyError(f"strategy {strategy.name} produced null signals; a signal must be true or false")
    return out


def assert_no_lookahead(
    fn: Callable[[pl.DataFrame], pl.DataFrame],
    bars: pl.DataFrame,
    cut_points: Iterable[datetime],
    *,
    ts_col: str = "ts",
) -> None:
    """Prove fn uses no future bar: for each cut t, fn(bars up to t) must equal fn(all bars) on the rows
    up to t. Raises StrategyError naming the cut and the differing column."""
    full = fn(bars)
    for cut in cut_points:
        head = fn(bars.filter(pl.col("ts") <= cut))
        expected = full.filter(pl.col(ts_col) <= cut)
        try:
            # exact: a causal computation on a prefix gives the same bits
            assert_frame_equal(head, expected, check_exact=True)
        except AssertionError as exc:
            msg = f"look-ahead detected: output up to {cut} changes when later bars are added: {exc}"
            raise StrategyError(msg) from None


def cut_points_every(bars: pl.DataFrame, n: int) -> Sequence[datetime]:
    """n evenly spaced timestamps of a frame, for assert_no_lookahead."""
    ts = bars.get_column("ts").unique().sort()
    step = max(1, ts.len() // (n + 1))
    return [ts[i] for i in range(step, ts.len() - 1, step)][:n]


def add_common_features(
    frame: pl.DataFrame | pl.LazyFrame, timeframe: str, rsi_period: int, atr_period: int
) -> pl.LazyFrame:
    """Add the features every strategy reports, so the models see each coin's state (momentum,
    volatility, liquidity) rather than needing one model per coin. Per stretch of one symbol
    (`frame` must carry SEGMENT). RSI is built from its two averages computed once as columns."""
    bar = timeframe_duration(timeframe)
    day = bars_in(timedelta(hours=24), timeframe)
    avg_gain, avg_loss = ind.wilder_averages("close", rsi_period)
    return (
        frame.lazy()
        .with_columns(
            avg_gain.over(PARTITION).alias("_avg_gain"),
            avg_loss.over(PARTITION).alias("_avg_loss"),
            (ind.atr(atr_period) / pl.col("close")).over(PARTITION).alias("atr_pct"),
            ind.realised_volatility(day, bar).over(PARTITION).alias("rvol_24h"),
            (pl.col("close") / pl.col("close").shift(day) - 1).over(PARTITION).alias("ret_24h"),
            # log10 of the quote (USDT) volume traded over the last 24h: a liquidity proxy.
            (pl.col("close") * pl.col("volume")).rolling_sum(day, min_samples=day).over(PARTITION)
            .clip(lower_bound=1.0).log10().alias("liquidity_24h"),
        )
        .with_columns(ind.rsi_from_averages(pl.col("_avg_gain"), pl.col("_avg_loss")).alias("rsi"))
        .drop("_avg_gain", "_avg_loss")
    )


def detection_frame(
    bars: pl.DataFrame, max_gap: timedelta, rsi_period: int, atr_period: int
) -> tuple[str, pl.LazyFrame]:
    """What every detector starts from: the checked timeframe, and the bars cut into stretches
    (SEGMENT, see with_segments) with the common features added."""
    tf = validate_bars(bars)
    return tf, add_common_features(with_segments(bars, max_gap), tf, rsi_period, atr_period)


def shared_detection_frame(bars: pl.DataFrame, timeframe: str, key: tuple[timedelta, int, int]) -> pl.LazyFrame:
    """detection_frame for already validated bars, computed now (collected), so several strategies
    start from it without each recomputing the common features."""
    max_gap, rsi_period, atr_period = key
    return add_common_features(with_segments(bars, max_gap), timeframe, rsi_period, atr_period).collect().lazy()
