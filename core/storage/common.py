"""Pieces both store backends share, so they behave the same: frame shapes, bounds, JSON payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from core.domain import CANDLE_SCHEMA, TIMEFRAME_DURATION, timeframe_duration
from core.errors import StoreError

CANDLE_COLUMNS = list(CANDLE_SCHEMA)
VALUE_COLUMNS = ("open", "high", "low", "close", "volume")

COVERAGE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.Utf8(),
    "timeframe": pl.Utf8(),
    "first": pl.Datetime("us", "UTC"),
    "last": pl.Datetime("us", "UTC"),
    "rows": pl.Int64(),
    "expected": pl.Int64(),
    "missing": pl.Int64(),
}

GAPS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.Utf8(),
    "timeframe": pl.Utf8(),
    "gap_start": pl.Datetime("us", "UTC"),  # first missing bar's open time
    "gap_end": pl.Datetime("us", "UTC"),  # open time of the bar that ends the gap (exclusive)
    "missing": pl.Int64(),
}


def candle_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Any backend's raw result -> CANDLE_SCHEMA, sorted by (symbol, ts)."""
    if frame.is_empty():
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    return (
        frame.select(CANDLE_COLUMNS)
        .with_columns(pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        .cast(pl.Schema(CANDLE_SCHEMA))
        .sort("symbol", "ts")
    )


def utc_bound(value: datetime | None, name: str) -> datetime | None:
    """Query bounds must be aware; other zones are converted (same instant)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"{name}={value!r} is naive; pass a timezone-aware UTC datetime")
    return value.astimezone(UTC)


def ts_bounds_sql(start: datetime | None, end: datetime | None, placeholder: str) -> tuple[str, list[datetime]]:
    """The time filter of a candle read, the same in every backend: start inclusive, end exclusive.

    Returns the SQL to append (`placeholder` is the driver's parameter marker) and its parameters."""
    sql = ""
    params: list[datetime] = []
    if (s := utc_bound(start, "start")) is not None:
        sql += f" AND ts >= {placeholder}"
        params.append(s)
    if (e := utc_bound(end, "end")) is not None:
        sql += f" AND ts < {placeholder}"
        params.append(e)
    return sql, params


def check_timeframe(timeframe: str) -> timedelta:
    return timeframe_duration(timeframe)


def coverage_frame(raw: pl.DataFrame) -> pl.DataFrame:
    """Add expected/missing bar counts to (symbol, timeframe, first, last, rows)."""
    if raw.is_empty():
        return pl.DataFrame(schema=COVERAGE_SCHEMA)
    step_us = pl.col("timeframe").replace_strict(
        {tf: int(d.total_seconds() * 1_000_000) for tf, d in TIMEFRAME_DURATION.items()}, return_dtype=pl.Int64
    )
    span_us = pl.col("last").dt.epoch("us") - pl.col("first").dt.epoch("us")
    return (
        raw.with_columns(
            pl.col("first", "last").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
            pl.col("rows").cast(pl.Int64),
        )
        .with_columns(expected=(span_us // step_us + 1).cast(pl.Int64))
        .with_columns(missing=pl.col("expected") - pl.col("rows"))
        .select(list(COVERAGE_SCHEMA))
        .cast(pl.Schema(COVERAGE_SCHEMA))
        .sort("symbol", "timeframe")
    )


def gaps_frame(raw: pl.DataFrame, symbol: str, timeframe: str) -> pl.DataFrame:
    """(prev_ts, ts) pairs further apart than one bar -> gap intervals."""
    if raw.is_empty():
        return pl.DataFrame(schema=GAPS_SCHEMA)
    step = timeframe_duration(timeframe)
    step_us = int(step.total_seconds() * 1_000_000)
    frame = raw.with_columns(pl.col("prev_ts", "ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    return (
        frame.select(
            symbol=pl.lit(symbol),
            timeframe=pl.lit(timeframe),
            gap_start=pl.col("prev_ts") + step,
            gap_end=pl.col("ts"),
            missing=(pl.col("ts").dt.epoch("us") - pl.col("prev_ts").dt.epoch("us")) // step_us - 1,
        )
        .cast(pl.Schema(GAPS_SCHEMA))
        .sort("gap_start")
    )


def encode_payload(kind: str, key: str, payload: dict[str, Any]) -> str:
    if not isinstance(payload, dict):
        raise StoreError(f"record {kind}/{key}: payload must be a dict, got {type(payload).__name__}")
    try:
        return json.dumps(payload, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"record {kind}/{key}: payload is not JSON-able ({exc}); "
            "convert it first, e.g. model.model_dump(mode='json')"
        ) from None


def decode_payload(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)
