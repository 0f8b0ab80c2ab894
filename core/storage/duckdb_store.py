"""DuckDB backend of the CandleStore contract: the embedded default (one file under var_dir).

Concurrency: a DuckDB file has ONE writer process; a second process opening it fails with a clear
StoreError (use the Postgres backend when several processes must write). Inside the process, one
connection is shared behind a lock, so the store is safe to use from several threads.

Upserts register the polars frame as an Arrow view and run one INSERT ... ON CONFLICT DO UPDATE per
chunk of `batch_rows`; all chunks of one call share one transaction (all or nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from core.domain import CANDLE_SCHEMA
from core.errors import StoreError
from core.plausibility import Bounds
from core.storage.common import (
    CANDLE_COLUMNS,
    VALUE_COLUMNS,
    candle_frame,
    check_timeframe,
    coverage_frame,
    decode_payload,
    encode_payload,
    gaps_frame,
    ts_bounds_sql,
    utc_bound,
)
from core.storage.validation import normalise_candles

SCHEMA_VERSION = 1
# Migration n brings the schema from version n-1 to n. Append, never edit.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS candles (
            symbol VARCHAR NOT NULL, timeframe VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL,
            open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
            volume DOUBLE NOT NULL, PRIMARY KEY (symbol, timeframe, ts))""",
        "CREATE SEQUENCE IF NOT EXISTS records_seq",
        """CREATE TABLE IF NOT EXISTS records (
            kind VARCHAR NOT NULL, key VARCHAR NOT NULL, payload JSON NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            seq BIGINT NOT NULL DEFAULT nextval('records_seq'), PRIMARY KEY (kind, key))""",
    ],
}

_UPSERT = (
    f"INSERT INTO candles ({', '.join(CANDLE_COLUMNS)}) SELECT {', '.join(CANDLE_COLUMNS)} FROM _incoming "
    "ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in VALUE_COLUMNS)
)
_SELECT = f"SELECT {', '.join(CANDLE_COLUMNS)} FROM candles"


def _tail(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    """The last n rows (by ts) of each symbol."""
    return frame.sort("symbol", "ts").group_by("symbol", maintain_order=True).tail(n)


class DuckDBStore:
    """CandleStore on a DuckDB file (or ':memory:')."""

    def __init__(
        self, path: str | Path, *, batch_rows: int = 100_000, read_only: bool = False, bounds: Bounds | None = None
    ) -> None:
        self.path = str(path)
        self.batch_rows = batch_rows
        self.bounds = bounds or Bounds()  # plausibility: the last line of defence (core/plausibility.py)
        self._lock = threading.RLock()
        self._ready = False
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreError(
                f"cannot open DuckDB file {self.path}: {exc}. A DuckDB file has one writer process; "
                "stop the other process or use the Postgres backend (store.backend=postgres)"
            ) from None
        self._con.execute("SET TimeZone = 'UTC'")

    # -- schema ---------------------------------------------------------------------------------------
    def init_schema(self) -> None:
        with self._lock:
            con = self._con
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]
            for version in range(current + 1, SCHEMA_VERSION + 1):
                con.execute("BEGIN TRANSACTION")
                try:
                    for stmt in MIGRATIONS[version]:
                        con.execute(stmt)
                    con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
                    con.execute("COMMIT")
                except Exception:
                    con.execute("ROLLBACK")
                    raise
            self._ready = True

    def schema_version(self) -> int:
        with self._lock:
            self._ensure()
            return int(self._con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0])

    def _ensure(self) -> None:
        if not self._ready:
            self.init_schema()

    # -- candles --------------------------------------------------------------------------------------
    def upsert_candles(self, candles: pl.DataFrame) -> int:
        frame = normalise_candles(candles, self.bounds)  # raises before anything is written
        if frame.is_empty():
            return 0
        # Written in time order so row groups cluster by ts: zonemaps then skip old data in last_bars.
        frame = frame.sort("ts", "symbol", "timeframe")
        with self._write(f"upsert of {len(frame)} candles", view="_incoming"):
            for offset in range(0, len(frame), self.batch_rows):
                self._write_chunk(frame.slice(offset, self.batch_rows))
        return len(frame)

    @contextmanager
    def _write(self, what: str, *, view: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction under the lock: any failure is rolled back and raised as StoreError;
        the Arrow view `view` the body registers is dropped either way."""
        with self._lock:
            self._ensure()
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except Exception as exc:
                con.execute("ROLLBACK")
                raise StoreError(f"{what} failed and was rolled back: {exc}") from exc
            finally:
                con.unregister(view)

    def _write_chunk(self, chunk: pl.DataFrame) -> None:
        self._con.register("_incoming", chunk.to_arrow())
        self._con.execute(_UPSERT)

    def _query(self, sql: str, params: list[Any]) -> pl.DataFrame:
        with self._lock:
            self._ensure()
            return self._con.sql(sql, params=params).pl()

    def read_candles(
        self, symbol: str, timeframe: str, start: datetime | None = None, end: datetime | None = None
    ) -> pl.DataFrame:
        return self.read_many([symbol], timeframe, start, end)

    def read_many(
        self, symbols: list[str], timeframe: str, start: datetime | None = None, end: datetime | None = None
    ) -> pl.DataFrame:
        check_timeframe(timeframe)
        if not symbols:
            return pl.DataFrame(schema=CANDLE_SCHEMA)
        bounds, bound_params = ts_bounds_sql(start, end, "?")
        sql = f"{_SELECT} WHERE symbol IN (SELECT unnest(?)) AND timeframe = ?{bounds}"
        params: list[Any] = [list(symbols), timeframe, *bound_params]
        return candle_frame(self._query(sql + " ORDER BY symbol, ts", params))

    def last_bars(self, symbols: list[str], timeframe: str, n: int, end: datetime | None = None) -> pl.DataFrame:
        step = check_timeframe(timeframe)
        if not symbols or n <= 0:
            return pl.DataFrame(schema=CANDLE_SCHEMA)
        e = utc_bound(end, "end")
        wanted = list(dict.fromkeys(symbols))
        with self._lock:
            self._ensure()
            hi = e or self._con.execute("SELECT max(ts) FROM candles WHERE timeframe = ?", [timeframe]).fetchall()[0][0]
            if hi is None:
                return pl.DataFrame(schema=CANDLE_SCHEMA)
            # Fast path: a constant lower bound (2n bars back) lets zonemaps skip old row groups, as rows are
            # written in time order; the few rows left are cut to the last n per symbol by polars (cheaper
            # than a window here). Symbols with fewer than n bars in that window (stale symbol, gap) are
            # then read by the exact query, so the result never depends on the shortcut.
            try:
                lo = hi - step * 2 * n
            except OverflowError:  # n so large the window starts before year 1: everything qualifies
                lo = datetime.min.replace(tzinfo=UTC)
            sql = f"{_SELECT} WHERE timeframe = ? AND ts >= ?" + (" AND ts < ?" if e else "")
            recent = self._con.sql(sql, params=[timeframe, lo, *([e] if e else [])]).pl()
            recent = _tail(recent.filter(pl.col("symbol").is_in(wanted)), n)
            counts = dict(recent.group_by("symbol").len().iter_rows())
            short = [s for s in wanted if counts.get(s, 0) < n]
            if short:
                sql = f"{_SELECT} WHERE symbol IN (SELECT unnest(?)) AND timeframe = ?" + (" AND ts < ?" if e else "")
                sql += " QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC) <= ?"
                exact = self._con.sql(sql, params=[short, timeframe, *([e] if e else []), n]).pl()
                recent = pl.concat([recent.filter(~pl.col("symbol").is_in(short)), exact])
        return candle_frame(recent)

    def coverage(self) -> pl.DataFrame:
        raw = self._query(
            'SELECT symbol, timeframe, min(ts) AS "first", max(ts) AS "last", count(*) AS "rows" '
            "FROM candles GROUP BY symbol, timeframe",
            [],
        )
        return coverage_frame(raw)

    def gaps(self, symbol: str, timeframe: str) -> pl.DataFrame:
        """Intervals of missing bars between the first and the last stored bar."""
        step = check_timeframe(timeframe)
        raw = self._query(
            "SELECT prev_ts, ts FROM (SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev_ts FROM candles "
            "WHERE symbol = ? AND timeframe = ?) WHERE ts - prev_ts > ? ORDER BY ts",
            [symbol, timeframe, step],
        )
        return gaps_frame(raw, symbol, timeframe)

    # -- records --------------------------------------------------------------------------------------
    def put_records(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> int:
        # A key given twice behaves like two puts: the last payload wins and takes the later position.
        latest: dict[str, str] = {}
        for key, payload in records:
            latest.pop(str(key), None)
            latest[str(key)] = encode_payload(kind, key, payload)
        if not latest:
            return 0
        with self._write(f"writing {len(latest)} {kind} records", view="_records_in") as con:
            seqs = sorted(r[0] for r in con.execute("SELECT nextval('records_seq') FROM range(?)", [len(latest)]).fetchall())
            batch = pl.DataFrame({"key": list(latest), "payload": list(latest.values()), "seq": seqs})
            con.register("_records_in", batch.to_arrow())
            con.execute(
                "INSERT INTO records (kind, key, payload, seq) SELECT ?, key, payload::JSON, seq FROM _records_in "
                "ON CONFLICT (kind, key) DO UPDATE SET payload = excluded.payload, updated_at = now(), "
                "seq = excluded.seq",
                [kind],
            )
        return len(records)

    def get_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            self._ensure()
            rows = self._con.execute("SELECT key, payload FROM records WHERE kind = ? ORDER BY seq", [kind]).fetchall()
        return [(key, decode_payload(payload)) for key, payload in rows]

    def delete_records(self, kind: str, keys: list[str]) -> int:
        if not keys:
            return 0
        with self._lock:
            self._ensure()
            rows = self._con.execute(
                "DELETE FROM records WHERE kind = ? AND key IN (SELECT unnest(?)) RETURNING key", [kind, list(keys)]
            ).fetchall()
        return len(rows)

    def delete_kinds(self, kinds: list[str]) -> int:
        if not kinds:
            return 0
        with self._write(f"deleting records of {list(kinds)}", view="_no_view") as con:
            rows = con.execute(
                "DELETE FROM records WHERE kind IN (SELECT unnest(?)) RETURNING key", [list(kinds)]
            ).fetchall()
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
