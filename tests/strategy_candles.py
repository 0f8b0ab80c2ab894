"""Candle frames for the strategy-engine tests: small slices of the real 1h history, and hand-built bars."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from core.domain import CANDLE_SCHEMA
from core.settings import load_settings

H = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def real_candles(symbols: Sequence[str], start: datetime, end: datetime, timeframe: str = "1h") -> pl.DataFrame:
    """Real bars of `symbols` with start <= ts <= end, in CANDLE_SCHEMA, sorted by (symbol, ts)."""
    path = load_settings().data.data_dir / f"ohlcv_{timeframe}.parquet"
    return (
        pl.scan_parquet(path)
        .filter(pl.col("symbol").is_in(list(symbols)) & pl.col("ts").is_between(start, end))
        .with_columns(pl.lit(timeframe).alias("timeframe"))
        .select([pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items()])
        .sort("symbol", "ts")
        .collect()
    )


def make_bars(
    rows: Sequence[tuple[float, float, float, float, float]],
    *,
    symbol: str = "TEST",
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    ts: Sequence[datetime] | None = None,
) -> pl.DataFrame:
    """Hand-built bars from (open, high, low, close, volume) rows, hourly from `start` unless ts is given."""
    stamps = list(ts) if ts is not None else [start + i * H for i in range(len(rows))]
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(rows),
            "timeframe": ["1h"] * len(rows),
            "ts": stamps,
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [r[4] for r in rows],
        },
        schema=CANDLE_SCHEMA,
    )


def bars_from_closes(closes: Sequence[float], volume: float = 10.0, **kw: object) -> pl.DataFrame:
    """Bars whose open is the previous close and whose high/low are max/min(open, close)."""
    rows = []
    prev = closes[0]
    for c in closes:
        rows.append((prev, max(prev, c), min(prev, c), c, volume))
        prev = c
    return make_bars(rows, **kw)  # type: ignore[arg-type]
