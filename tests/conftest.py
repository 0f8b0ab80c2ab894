"""Shared fixtures: real candle slices, and stores on both backends (DuckDB file, real Postgres).

Postgres: tests using `pg_dsn` skip with a visible reason when no server answers, unless
MLCRYPTO_REQUIRE_POSTGRES=1 (CI), where a missing server is a failure. Every Postgres store lives in
its own schema named after this session (`t_<pid>_<random>_<n>`), dropped afterwards, so engineers
running tests at the same time never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from core.settings import Settings

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SESSION_TAG = f"t_{os.getpid()}_{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Settings().data.data_dir
    if not (path / "ohlcv_1h.parquet").is_file():
        pytest.fail(f"real candle data not found in {path} (set MLCRYPTO_DATA__DATA_DIR)")
    return path


@cache
def _load(data_dir: Path, timeframe: str, symbols: tuple[str, ...], start: datetime | None, end: datetime | None) -> pl.DataFrame:
    lf = pl.scan_parquet(data_dir / f"ohlcv_{timeframe}.parquet").filter(pl.col("symbol").is_in(list(symbols)))
    if start is not None:
        lf = lf.filter(pl.col("ts") >= start)
    if end is not None:
        lf = lf.filter(pl.col("ts") < end)
    return (
        lf.with_columns(timeframe=pl.lit(timeframe), ts=pl.col("ts").dt.cast_time_unit("us"))
        .select("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        .collect()
    )


@pytest.fixture(scope="session")
def real_candles(data_dir: Path) -> Callable[..., pl.DataFrame]:
    """real_candles('1h', ['BTC'], start, end) -> a CANDLE_SCHEMA slice of the shipped data (cached)."""

    def load(
        timeframe: str, symbols: list[str], start: datetime | None = None, end: datetime | None = None
    ) -> pl.DataFrame:
        return _load(data_dir, timeframe, tuple(symbols), start, end)

    return load


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    import psycopg

    dsn = os.environ.get("MLCRYPTO_TEST_PG_DSN", DEFAULT_PG_DSN)
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL server answers at {dsn}: {exc}"
        if os.environ.get("MLCRYPTO_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"MLCRYPTO_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    yield dsn
    # Drop whatever this session created, even after a crashed test.
    with psycopg.connect(dsn, autocommit=True) as con:
        names = con.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [SESSION_TAG + "%"]
        ).fetchall()
        for (name,) in names:
            con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


_counter = iter(range(1, 10**9))


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name for one test; dropped afterwards."""
    import psycopg

    name = f"{SESSION_TAG}_{next(_counter)}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path, **kwargs):  # noqa: ANN201
    """Open a fresh, empty store of either backend (used by the `store` fixture and by tests)."""
    if kind == "duckdb":
        from core.storage.duckdb_store import DuckDBStore

        return DuckDBStore(tmp_path / f"store_{secrets.token_hex(3)}.duckdb", **kwargs)
    from core.storage.postgres_store import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    return PostgresStore(dsn, schema=schema, **kwargs)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    s = make_store(store_kind, request, tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary Prefect API server (SQLite in a tmp dir) for every flow test of the session."""
    from tests.prefect_support import harness

    with harness(tmp_path_factory.mktemp("prefect_home")) as api_url:
        yield api_url
