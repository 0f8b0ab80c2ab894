"""The history the weekly retrain learns from: the shipped files merged with what the deployment's own
store holds (streamed and backfilled bars), one bar per (symbol, timeframe, ts).

The store holds detection-timeframe bars (imported, derived by the scans) and the stream's 1m bars;
1m bars are resampled into complete detection-timeframe buckets (core.resample emits only complete
ones, so a half-streamed hour never becomes a bar). Where sources overlap the store wins: it is what
the deployment traded on, including repairs. No look-ahead: everything is cut at `end`.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from core.data_import import load_shipped
from core.domain import CANDLE_SCHEMA, timeframe_duration
from core.errors import DataQualityError
from core.resample import resample
from core.settings import Settings
from core.storage.base import CandleStore

KEY = ["symbol", "timeframe", "ts"]


def merge_bars(*frames: pl.DataFrame) -> pl.DataFrame:
    """Union of candle frames, later frames winning on the same key; sorted by (symbol, ts)."""
    parts = [f.select(list(CANDLE_SCHEMA)).cast(CANDLE_SCHEMA) for f in frames if f.height]  # type: ignore[arg-type]
    if not parts:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    return pl.concat(parts).unique(KEY, keep="last", maintain_order=True).sort("symbol", "ts")


def training_history(
    settings: Settings, store: CandleStore, symbols: list[str] | None = None, end: datetime | None = None
) -> pl.DataFrame:
    """Shipped history + the store's bars (detection timeframe, plus complete buckets of streamed 1m),
    de-duplicated, with ts < end."""
    tf = settings.data.detection_timeframe
    syms = [s.upper() for s in (symbols or settings.data.symbols)]
    shipped = load_shipped(settings.data.data_dir, tf, syms, None, end)
    stored = store.read_many(syms, tf, None, end)
    src = settings.data.stream_timeframe
    derived = pl.DataFrame(schema=CANDLE_SCHEMA)
    if timeframe_duration(src) < timeframe_duration(tf):
        fine = store.read_many(syms, src, None, end)
        if fine.height:
            derived = resample(fine, tf)
            if end is not None:  # a bucket is only known once it has closed before `end`
                derived = derived.filter(pl.col("ts") + timeframe_duration(tf) <= end)
    bars = merge_bars(shipped, derived, stored)
    if bars.is_empty():
        raise DataQualityError(
            f"no {tf} history for {syms} before {end} in {settings.data.data_dir} or the store; "
            "set data.data_dir (MLCRYPTO_DATA__DATA_DIR), run `mlcrypto import`, or widen the window"
        )
    return bars
