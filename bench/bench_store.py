"""Store benchmarks: upsert throughput of 1,000,000 one-minute candles (DuckDB, Postgres) and the latency
of "last 200 bars of 99 symbols".

The million rows are REAL 1m bars: the shipped ohlcv_1m.parquet (BTC ETH SOL BNB XRP, 215,996 bars)
cycled in file order, cut into 98 blocks of 10,102 bars and one of 10,004, each block re-keyed
to one of the 99 universe symbols with consecutive minute timestamps from 2026-01-01 00:00 UTC. OHLCV
values are untouched, so validation sees real bars; only the keys are synthetic.
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from bench.common import BenchResult
from core.settings import SUPPORTED_SYMBOLS, load_settings

ROWS = 1_000_000
LAST_N, QUERIES = 200, 50
PG_DSN = os.environ.get("MLCRYPTO_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def million_candles() -> pl.DataFrame:
    real = pl.read_parquet(load_settings().data.data_dir / "ohlcv_1m.parquet", columns=["open", "high", "low", "close", "volume"])
    reps = -(-ROWS // len(real))
    values = pl.concat([real] * reps).head(ROWS)
    per = -(-ROWS // len(SUPPORTED_SYMBOLS))
    idx = pl.int_range(ROWS, eager=True)
    symbols = pl.Series(SUPPORTED_SYMBOLS)
    return values.with_columns(
        symbol=symbols.gather(idx // per),
        timeframe=pl.lit("1m"),
        ts=pl.lit(datetime(2026, 1, 1, tzinfo=UTC)) + pl.duration(minutes=idx % per),
    ).select("symbol", "timeframe", pl.col("ts").dt.cast_time_unit("us"), "open", "high", "low", "close", "volume")


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def _time_last_bars(store, symbols: list[str]) -> list[float]:  # noqa: ANN001
    store.last_bars(symbols, "1m", LAST_N)  # warm-up
    samples = []
    for _ in range(QUERIES):
        t = time.perf_counter()
        frame = store.last_bars(symbols, "1m", LAST_N)
        samples.append((time.perf_counter() - t) * 1000)
    assert len(frame) == LAST_N * len(symbols), len(frame)
    return samples


def run() -> list[BenchResult]:
    from core.storage.duckdb_store import DuckDBStore

    frame = million_candles()
    symbols = list(SUPPORTED_SYMBOLS)
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "bench.duckdb", batch_rows=ROWS)
        store.init_schema()
        t = time.perf_counter()
        store.upsert_candles(frame)
        insert_s = time.perf_counter() - t
        t = time.perf_counter()
        store.upsert_candles(frame)  # every row conflicts: the update path
        update_s = time.perf_counter() - t
        samples = _time_last_bars(store, symbols)
        store.close()
    results += [
        BenchResult("store.duckdb.upsert_1m_candles_new", ROWS / insert_s, "rows/s", ">= 100000"),
        BenchResult("store.duckdb.upsert_1m_candles_existing", ROWS / update_s, "rows/s", ">= 100000"),
        BenchResult("store.duckdb.last_200_bars_99_symbols_p95", _p95(samples), "ms", "<= 50"),
        BenchResult("store.duckdb.last_200_bars_99_symbols_median", statistics.median(samples), "ms", "<= 50"),
    ]
    results += _postgres(frame, symbols)
    return results


def _postgres(frame: pl.DataFrame, symbols: list[str]) -> list[BenchResult]:
    import psycopg

    from core.storage.postgres_store import PostgresStore

    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        print(f"   postgres skipped: {exc}")
        return []
    schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
    store = PostgresStore(PG_DSN, schema=schema, batch_rows=250_000)
    try:
        store.init_schema()
        t = time.perf_counter()
        store.upsert_candles(frame)
        insert_s = time.perf_counter() - t
        t = time.perf_counter()
        store.upsert_candles(frame)
        update_s = time.perf_counter() - t
        samples = _time_last_bars(store, symbols)
    finally:
        store.close()
        with psycopg.connect(PG_DSN, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return [
        BenchResult("store.postgres.upsert_1m_candles_new", ROWS / insert_s, "rows/s", ">= 50000"),
        BenchResult("store.postgres.upsert_1m_candles_unchanged", ROWS / update_s, "rows/s", ">= 50000"),
        BenchResult("store.postgres.last_200_bars_99_symbols_p95", _p95(samples), "ms", "<= 50"),
        BenchResult("store.postgres.last_200_bars_99_symbols_median", statistics.median(samples), "ms", "<= 50"),
    ]
