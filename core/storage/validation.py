"""Candle frame validation and normalising, run by every store before it writes anything.

normalise_candles() returns a frame with exactly CANDLE_SCHEMA (extra columns such as `quote` or
`source` are dropped) or raises DataQualityError naming the offending rows. Timestamp policy:
naive timestamps are refused (we cannot guess their zone); timezone-aware timestamps in another zone
are converted to UTC (a lossless, documented repair: the instant is the same).

It is also the store's last line of defence against implausible bars (core/plausibility.py: open time
in [earliest, now + one bar], finite prices in the sanity range, finite volume in range), whatever
entry they came through. Anything polars raises on absurd input (even a PanicException, which is a
BaseException) becomes a DataQualityError: nothing is written.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from core.boundary import is_process_control
from core.domain import CANDLE_SCHEMA, TIMEFRAME_DURATION
from core.errors import DataQualityError
from core.plausibility import (
    PRICE_OUT_OF_RANGE,
    TS_OUT_OF_RANGE,
    VOLUME_OUT_OF_RANGE,
    Bounds,
)

KEY_COLUMNS = ("symbol", "timeframe", "ts")
PRICE_COLUMNS = ("open", "high", "low", "close")
MAX_ROWS_SHOWN = 5


def _show(bad: pl.DataFrame, total: int) -> str:
    """Name the first offending rows (key columns) and how many there are in all."""
    rows = [f"{r['symbol']} {r['timeframe']} {r['ts']}" for r in bad.head(MAX_ROWS_SHOWN).iter_rows(named=True)]
    more = f" (+{total - len(rows)} more)" if total > len(rows) else ""
    return "; ".join(rows) + more


def _normalise_ts(frame: pl.DataFrame) -> pl.DataFrame:
    dtype = frame.schema["ts"]
    if not isinstance(dtype, pl.Datetime):
        raise DataQualityError(f"column ts must be a timezone-aware datetime (UTC), got {dtype}")
    if dtype.time_zone is None:
        raise DataQualityError(
            "column ts holds naive timestamps; localise them to UTC first, "
            "e.g. pl.col('ts').dt.replace_time_zone('UTC') if they are UTC open times"
        )
    # Aware but another zone: same instant, expressed in UTC (documented repair).
    return frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))


def _step_ms() -> pl.Expr:
    return pl.col("timeframe").replace_strict(
        {tf: int(d.total_seconds() * 1000) for tf, d in TIMEFRAME_DURATION.items()}, return_dtype=pl.Int64
    )


def plausibility_checks(bounds: Bounds, now: datetime) -> list[tuple[str, pl.Expr]]:
    """The plausibility bounds as (label, bad-row expression) on a CANDLE_SCHEMA frame that also
    carries `ts_ms` (the open time in epoch milliseconds)."""
    labels = {
        TS_OUT_OF_RANGE: f"ts must lie in [{bounds.earliest:%Y-%m-%d}, now + 1 bar]",
        PRICE_OUT_OF_RANGE: f"prices must be finite and > 0, within [{bounds.min_price:g}, {bounds.max_price:g}]",
        VOLUME_OUT_OF_RANGE: f"volume must be finite and >= 0 and <= {bounds.max_volume:g}",
    }
    return [(f"{labels[kind]} ({kind})", expr.fill_null(True)) for kind, expr in bounds.checks(now, _step_ms())]


def normalise_candles(
    frame: pl.DataFrame, bounds: Bounds | None = None, now: datetime | None = None
) -> pl.DataFrame:
    """Check a candle batch and return it in CANDLE_SCHEMA; raise DataQualityError otherwise."""
    try:
        return _normalise(frame, bounds or Bounds(), now or datetime.now(UTC))
    except DataQualityError:
        raise
    except BaseException as exc:
        if is_process_control(exc):
            raise
        raise DataQualityError(f"candle batch refused, it cannot be checked: {type(exc).__name__}: {exc}") from None


def _normalise(frame: pl.DataFrame, bounds: Bounds, now: datetime) -> pl.DataFrame:
    missing = [c for c in CANDLE_SCHEMA if c not in frame.columns]
    if missing:
        raise DataQualityError(f"candle frame lacks required columns {missing}; it has {frame.columns}")
    frame = _normalise_ts(frame.select(list(CANDLE_SCHEMA)))
    try:
        frame = frame.cast({c: t for c, t in CANDLE_SCHEMA.items() if c != "ts"}, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise DataQualityError(f"candle columns cannot be cast to {CANDLE_SCHEMA}: {exc}") from None
    if frame.is_empty():
        return frame

    nulls = {c: n for c, n in frame.null_count().row(0, named=True).items() if n}
    if nulls:
        raise DataQualityError(f"candle frame has null values (column: count) {nulls}; drop or repair those rows")

    unknown_tf = frame.filter(~pl.col("timeframe").is_in(list(TIMEFRAME_DURATION)))
    if not unknown_tf.is_empty():
        raise DataQualityError(
            f"unknown timeframe in rows {_show(unknown_tf, len(unknown_tf))}; use one of {list(TIMEFRAME_DURATION)}"
        )

    dup = frame.filter(pl.struct(KEY_COLUMNS).is_duplicated()).unique(KEY_COLUMNS, maintain_order=True)
    if not dup.is_empty():
        raise DataQualityError(f"duplicate (symbol, timeframe, ts) keys inside one batch: {_show(dup, len(dup))}")

    step_us = pl.col("timeframe").replace_strict(
        {tf: int(d.total_seconds() * 1_000_000) for tf, d in TIMEFRAME_DURATION.items()}, return_dtype=pl.Int64
    )
    o, h, lo, c, v = (pl.col(x) for x in ("open", "high", "low", "close", "volume"))
    prices = [pl.col(x) for x in PRICE_COLUMNS]
    checks: list[tuple[str, pl.Expr]] = [
        ("prices must be finite and > 0 (NaN/inf/<=0 found)", pl.any_horizontal([~p.is_finite() | (p <= 0) for p in prices])),
        ("high < low", h < lo),
        ("high < max(open, close)", h < pl.max_horizontal(o, c)),
        ("low > min(open, close)", lo > pl.min_horizontal(o, c)),
        ("volume must be finite and >= 0", ~v.is_finite() | (v < 0)),
        ("ts is not on the timeframe grid (UTC-aligned open time)", pl.col("ts").dt.epoch("us") % step_us != 0),
    ]
    # Plausibility first: an absurd open time must not reach the datetime arithmetic of the grid check.
    with_ms = frame.with_columns(ts_ms=pl.col("ts").dt.epoch("ms"))
    problems = []
    for label, expr in plausibility_checks(bounds, now):
        bad = with_ms.filter(expr)
        if not bad.is_empty():
            problems.append(f"{label}: {len(bad)} row(s): {_show(bad, len(bad))}")
    if problems:
        raise DataQualityError("implausible candles, nothing written:\n  " + "\n  ".join(problems))
    for label, expr in checks:
        bad = frame.filter(expr)
        if not bad.is_empty():
            problems.append(f"{label}: {len(bad)} row(s): {_show(bad, len(bad))}")
    if problems:
        raise DataQualityError("bad candles, nothing written:\n  " + "\n  ".join(problems))
    return frame


def split_plausible(
    frame: pl.DataFrame, bounds: Bounds | None = None, now: datetime | None = None
) -> tuple[pl.DataFrame, int]:
    """The rows of a batch the store would accept one by one, and how many were dropped: lets a
    streaming writer keep the good rows of a batch the store refused instead of retrying it forever."""
    good = [row for row in frame.iter_slices(1) if _accepted(row, bounds, now)]
    kept = pl.concat(good) if good else frame.clear()
    return kept, len(frame) - len(kept)


def _accepted(row: pl.DataFrame, bounds: Bounds | None, now: datetime | None) -> bool:
    try:
        normalise_candles(row, bounds, now)
    except DataQualityError:
        return False
    return True
