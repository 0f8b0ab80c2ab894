"""Import the shipped candle files (data directory setting) into the store, deriving coarser timeframes.

Files are `ohlcv_<timeframe>.parquet` (or `.csv`) with columns symbol, ts, open, high, low, close,
volume (extra columns such as quote/source are ignored). CSV `ts` is ISO-8601 with a UTC offset, or
integer epoch milliseconds. Derived timeframes (settings.data.derived_timeframes, e.g. 4h) are built by
resampling the coarsest shipped finer timeframe; where a timeframe is also shipped, derived bars only
fill keys the shipped file lacks (e.g. daily bars after the 1d file ends but the 1h history goes on).

Every file the import will read is read and validated first (decoding, columns, ts, candle rules and the
plausibility bounds of core/plausibility.py); only then is anything written, in chunks (one transaction
each). A corrupt or truncated parquet, a ragged CSV or one implausible bar therefore leaves the store as
it was, with an error naming the file and the row (CSV line, parquet row group and byte offset).
Upserts are idempotent: importing twice leaves the same rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
from tqdm import tqdm

from core.boundary import is_process_control
from core.domain import CANDLE_SCHEMA, TIMEFRAME_DURATION, timeframe_duration
from core.errors import DataQualityError
from core.plausibility import Bounds, store_bounds
from core.resample import resample
from core.storage.base import CandleStore
from core.storage.common import utc_bound
from core.storage.validation import KEY_COLUMNS, normalise_candles

_FILE_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class ImportResult:
    timeframe: str
    shipped_rows: int
    derived_rows: int  # rows built by resampling that the shipped file did not have
    source: str  # file name, "derived from <tf>", or both


def shipped_file(data_dir: Path, timeframe: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        path = data_dir / f"ohlcv_{timeframe}{suffix}"
        if path.is_file():
            return path
    return None


def shipped_timeframes(data_dir: Path) -> list[str]:
    return [tf for tf in TIMEFRAME_DURATION if shipped_file(data_dir, tf)]


def _parse_ts(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """CSV ts: integer epoch milliseconds, or ISO-8601 strings that must carry their UTC offset (or Z).

    Naive strings are refused, never guessed."""
    if frame.schema["ts"].is_integer():
        return frame.with_columns(ts=pl.from_epoch("ts", "ms").dt.replace_time_zone("UTC"))
    if frame.schema["ts"] != pl.Utf8:
        return frame
    naive = frame.filter(~pl.col("ts").str.contains(r"(Z|[+-]\d\d:?\d\d)$"))
    if not naive.is_empty():
        raise DataQualityError(
            f"{path}: {len(naive)} ts value(s) without a UTC offset, e.g. {naive['ts'][0]!r}; "
            "write them with +00:00 (or Z), or as epoch milliseconds"
        )
    return frame.with_columns(pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"))


def _ragged_line(path: Path) -> str | None:
    """The first CSV line whose field count differs from the header's, described; None when none does."""
    with path.open(newline="", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return None
        for row in reader:
            if row and len(row) != len(header):
                return f"line {reader.line_num} has {len(row)} fields, the header has {len(header)}"
    return None


def _parquet_damage(path: Path) -> str:
    """Where a parquet file cannot be read: its footer, or the first row group that fails to decode."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    size = path.stat().st_size
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - described, not raised: the caller raises DataQualityError
        return f"footer unreadable (file of {size} bytes must end with its footer and PAR1: truncated?): {exc}"
    first = 0
    for i in range(pf.num_row_groups):
        meta = pf.metadata.row_group(i)
        try:
            pf.read_row_group(i)
        except Exception as exc:  # noqa: BLE001 - see above
            offset = meta.column(0).file_offset if meta.num_columns else "?"
            return f"row group {i} (rows {first}..{first + meta.num_rows - 1}, byte offset {offset}) is corrupt: {exc}"
        first += meta.num_rows
    return "unreadable"


def _read(path: Path, timeframe: str, symbols: Iterable[str] | None) -> pl.DataFrame:
    """Decode one file into the file columns plus timeframe; DataQualityError naming file and row."""
    if path.suffix == ".csv" and (ragged := _ragged_line(path)):
        raise DataQualityError(f"{path}: ragged CSV, {ragged}; nothing imported")
    try:
        lf = pl.scan_parquet(path) if path.suffix == ".parquet" else pl.scan_csv(path, schema_overrides={"symbol": pl.Utf8})
        missing = [c for c in _FILE_COLUMNS if c not in lf.collect_schema().names()]
        if missing:
            raise DataQualityError(f"{path} lacks columns {missing}; expected {list(_FILE_COLUMNS)}")
        if symbols is not None:
            lf = lf.filter(pl.col("symbol").is_in([sym.upper() for sym in symbols]))
        frame = lf.select(_FILE_COLUMNS).with_columns(timeframe=pl.lit(timeframe)).collect()
    except DataQualityError:
        raise
    except BaseException as exc:
        if is_process_control(exc):
            raise
        where = _parquet_damage(path) if path.suffix == ".parquet" else f"{type(exc).__name__}: {str(exc)[:300]}"
        raise DataQualityError(f"{path}: cannot be read: {where}; nothing imported") from None
    return frame


def load_shipped(
    data_dir: Path,
    timeframe: str,
    symbols: Iterable[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    bounds: Bounds | None = None,
) -> pl.DataFrame:
    """One shipped file as a validated CANDLE_SCHEMA frame (start <= ts < end); empty when absent."""
    path = shipped_file(data_dir, timeframe)
    if path is None:
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    frame = _read(path, timeframe, symbols)
    try:
        frame = normalise_candles(_parse_ts(frame, path), bounds)
    except DataQualityError as exc:
        raise DataQualityError(f"{path}: {exc}") from None
    if (s := utc_bound(start, "start")) is not None:
        frame = frame.filter(pl.col("ts") >= s)
    if (e := utc_bound(end, "end")) is not None:
        frame = frame.filter(pl.col("ts") < e)
    return frame


def derivation_source(timeframe: str, available: Iterable[str]) -> str | None:
    """The coarsest available timeframe that is finer than `timeframe` and divides it."""
    target = timeframe_duration(timeframe)
    finer = [tf for tf in available if timeframe_duration(tf) < target and not target % timeframe_duration(tf)]
    return max(finer, key=timeframe_duration, default=None)


def build_timeframe(
    data_dir: Path,
    timeframe: str,
    derive: bool,
    symbols: Iterable[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    bounds: Bounds | None = None,
) -> tuple[pl.DataFrame, ImportResult]:
    """Shipped bars of one timeframe plus, when `derive`, resampled bars for keys the file lacks."""
    shipped = load_shipped(data_dir, timeframe, symbols, start, end, bounds)
    path = shipped_file(data_dir, timeframe)
    source = path.name if path else ""
    derived = pl.DataFrame(schema=CANDLE_SCHEMA)
    if derive:
        src_tf = derivation_source(timeframe, shipped_timeframes(data_dir))
        if src_tf is not None:
            built = resample(load_shipped(data_dir, src_tf, symbols, start, end, bounds), timeframe)
            derived = built.join(shipped.select(KEY_COLUMNS), on=list(KEY_COLUMNS), how="anti")
            source = f"{source} + derived from {src_tf}" if source else f"derived from {src_tf}"
    frame = pl.concat([shipped, derived]).sort("symbol", "ts")
    return frame, ImportResult(timeframe, len(shipped), len(derived), source or "none")


def import_candles(
    store: CandleStore,
    data_dir: Path,
    *,
    timeframes: Iterable[str] | None = None,
    derived_timeframes: Iterable[str] = ("15m", "1h", "4h", "1d"),
    symbols: Iterable[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    chunk_rows: int = 100_000,
    progress: bool = True,
) -> list[ImportResult]:
    """Import shipped (and derived) candles into the store; returns what was written per timeframe."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataQualityError(f"data directory {data_dir} does not exist (setting data.data_dir)")
    derived_set = set(derived_timeframes)
    wanted = list(timeframes) if timeframes else sorted(
        set(shipped_timeframes(data_dir)) | derived_set, key=timeframe_duration
    )
    for tf in wanted:
        timeframe_duration(tf)  # unknown timeframe -> ValueError before any work
    symbols = [s.upper() for s in symbols] if symbols else None
    bounds = store_bounds(store)
    # Every file first: a damaged or implausible one stops the import before anything is written.
    available = shipped_timeframes(data_dir)
    to_read = {tf for tf in wanted if tf in available}
    to_read |= {src for tf in wanted if tf in derived_set and (src := derivation_source(tf, available))}
    for tf in sorted(to_read, key=timeframe_duration):
        load_shipped(data_dir, tf, symbols, start, end, bounds)
    results = []
    for tf in wanted:
        frame, result = build_timeframe(data_dir, tf, tf in derived_set, symbols, start, end, bounds)
        frame = frame.sort("ts", "symbol")  # chunks in time order: the store clusters rows by time
        with tqdm(total=len(frame), desc=f"import {tf}", unit="bar", disable=not progress, leave=False) as bar:
            for offset in range(0, len(frame), chunk_rows):
                bar.update(store.upsert_candles(frame.slice(offset, chunk_rows)))
        results.append(result)
    return results
