"""Resample finer candles to a coarser timeframe: open=first, high=max, low=min, close=last, volume=sum.

Buckets are aligned to UTC (epoch multiples: 4h buckets open at 00/04/08/.., daily ones at 00:00 UTC).
A bucket is emitted only when it is COMPLETE, so the bucket still forming at the end of the data is
never emitted and no output bar changes when later bars arrive (no look-ahead).

Missing inner bars (exchange outages): by default (max_missing=0) a bucket lacking any sub-bar is NOT
emitted; it shows up as a gap in coverage() instead of as a bar built from part of the period. Callers
who want the exchange's behaviour (Binance builds the daily bar from whatever traded, outages included)
pass max_missing=k: then a bucket with up to k missing sub-bars is emitted, provided it is closed (its
last slot is present or a later bar exists) and was opened (its first slot is present or an earlier bar
exists) -- so a bucket cut by the start or end of the data is still never emitted.
"""

from __future__ import annotations

import polars as pl

from core.domain import CANDLE_SCHEMA, timeframe_duration
from core.errors import DataQualityError


def resample(frame: pl.DataFrame, to_timeframe: str, *, max_missing: int = 0) -> pl.DataFrame:
    """Aggregate one source timeframe (any number of symbols) into complete `to_timeframe` buckets."""
    target = timeframe_duration(to_timeframe)
    if frame.is_empty():
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    sources = frame["timeframe"].unique().to_list()
    if len(sources) != 1:
        raise DataQualityError(f"resample needs bars of one timeframe, got {sorted(sources)}")
    source = timeframe_duration(sources[0])
    if target <= source or target % source:
        raise DataQualityError(f"cannot resample {sources[0]} to {to_timeframe}: target must be a multiple of the source")
    per_bucket = target // source
    last_slot = target - source

    bars = frame.select(list(CANDLE_SCHEMA)).sort("symbol", "ts").with_columns(
        bucket=pl.col("ts").dt.truncate(to_timeframe),
        data_first=pl.col("ts").min().over("symbol"),
        data_last=pl.col("ts").max().over("symbol"),
    )
    buckets = bars.group_by("symbol", "bucket", maintain_order=True).agg(
        pl.col("open").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").last(),
        pl.col("volume").sum(),
        n=pl.len(),
        first_sub=pl.col("ts").first(),
        last_sub=pl.col("ts").last(),
        data_first=pl.col("data_first").first(),
        data_last=pl.col("data_last").first(),
    )
    closed = (pl.col("last_sub") == pl.col("bucket") + last_slot) | (pl.col("data_last") >= pl.col("bucket") + target)
    opened = (pl.col("first_sub") == pl.col("bucket")) | (pl.col("data_first") < pl.col("bucket"))
    complete = (pl.col("n") >= per_bucket - max_missing) & closed & opened
    return (
        buckets.filter(complete)
        .with_columns(ts=pl.col("bucket"), timeframe=pl.lit(to_timeframe))
        .select(list(CANDLE_SCHEMA))
        .cast(pl.Schema(CANDLE_SCHEMA))
        .sort("symbol", "ts")
    )
