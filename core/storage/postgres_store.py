"""Postgres backend of the CandleStore contract; also THE Supabase backend (Supabase is Postgres: pass
its connection string as the DSN, no REST layer involved).

All tables live in one schema (default `public`), so several stores can share a database. Upserts COPY
each chunk (CSV, exact float text) into a temporary table, then INSERT ... ON CONFLICT DO UPDATE into
candles; every chunk of one call runs in one transaction (all or nothing). Large reads stream out with
COPY ... TO STDOUT and are parsed by polars; small ones (last_bars) use a binary cursor. One connection per store, guarded by a lock; a broken
connection is reopened on the next call.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import polars as pl
import psycopg

from core.domain import CANDLE_SCHEMA
from core.errors import StoreError
from core.plausibility import Bounds
from core.redact import dsn_secrets, redact
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
ANALYZE_AFTER_ROWS = 50_000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def redact_dsn(dsn: str) -> str:
    """Hide the password of a URL (`user:pw@host`, any scheme) or key=value (`password=pw`) DSN."""
    out = re.sub(r"(://[^/@:]*:)[^@]*@", r"\1***@", dsn)
    out = re.sub(r"(password\s*=\s*)('[^']*'|[^\s&]+)", r"\1***", out, flags=re.IGNORECASE)
    return redact(out, dsn_secrets(dsn))


def _password(dsn: str) -> str | None:
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn).get("password")  # type: ignore[return-value]
    except psycopg.Error:
        return None


def _migrations(s: str) -> dict[int, list[str]]:
    """Migration n brings schema `s` from version n-1 to n. Append, never edit."""
    return {
        1: [
            f"""CREATE TABLE IF NOT EXISTS "{s}".candles (
                symbol TEXT NOT NULL, timeframe TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL,
                open DOUBLE PRECISION NOT NULL, high DOUBLE PRECISION NOT NULL, low DOUBLE PRECISION NOT NULL,
                close DOUBLE PRECISION NOT NULL, volume DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (symbol, timeframe, ts))""",
            f'CREATE SEQUENCE IF NOT EXISTS "{s}".records_seq',
            f"""CREATE TABLE IF NOT EXISTS "{s}".records (
                kind TEXT NOT NULL, key TEXT NOT NULL, payload JSONB NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                seq BIGINT NOT NULL DEFAULT nextval('"{s}".records_seq'), PRIMARY KEY (kind, key))""",
        ],
    }


class PostgresStore:
    """CandleStore on PostgreSQL / Supabase."""

    def __init__(
        self, dsn: str, *, schema: str = "public", batch_rows: int = 100_000, connect_timeout: float = 10.0,
        bounds: Bounds | None = None,
    ) -> None:
        if not _IDENT.match(schema):
            raise StoreError(f"Postgres schema name {schema!r} must be a plain identifier (letters, digits, _)")
        self._dsn = dsn
        self.dsn_redacted = redact_dsn(dsn)
        self.schema = schema
        self.batch_rows = batch_rows
        self.bounds = bounds or Bounds()  # plausibility: the last line of defence (core/plausibility.py)
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._ready = False
        self._con: psycopg.Connection | None = None
        self._connect()  # fail early on a wrong DSN

    def __repr__(self) -> str:
        return f"PostgresStore({self.dsn_redacted!r}, schema={self.schema!r})"

    def _error(self, what: str, exc: BaseException) -> StoreError:
        # By value: drivers echo the DSN (e.g. psycopg's "invalid dsn" on a SQLAlchemy-form URL).
        secrets = dsn_secrets(self._dsn) | ({p} if (p := _password(self._dsn)) else set())
        msg = redact(redact(str(exc).strip(), [self._dsn]), secrets)
        return StoreError(f"{what} (Postgres {self.dsn_redacted}, schema {self.schema}): {msg}")

    def _connect(self) -> psycopg.Connection:
        if self._con is not None and not self._con.closed and not self._con.broken:
            return self._con
        try:
            self._con = psycopg.connect(self._dsn, connect_timeout=max(1, int(self.connect_timeout)))
        except psycopg.Error as exc:
            scheme = self._dsn.partition("://")[0]
            hint = (f"; '{scheme}://' is a SQLAlchemy URL, libpq takes 'postgresql://'" if "+" in scheme
                    and "://" in self._dsn else "")
            raise self._error(f"cannot connect; check the DSN and that the server is up{hint}", exc) from None
        self._con.execute("SET TIME ZONE 'UTC'")
        self._con.commit()
        return self._con

    @contextmanager
    def _tx(self, what: str) -> Iterator[psycopg.Cursor]:
        """Lock, live connection, one transaction; any driver error -> StoreError after rollback."""
        with self._lock:
            con = self._connect()
            if not self._ready and what != "migrate":
                self.init_schema()
            try:
                with con.transaction(), con.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise self._error(f"{what} failed and was rolled back", exc) from exc

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # -- schema ---------------------------------------------------------------------------------------
    def init_schema(self) -> None:
        with self._tx("migrate") as cur:
            # One migrator at a time across processes sharing the database.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"mlcrypto-migrate-{self.schema}"])
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._t('schema_version')} (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur.execute(f"SELECT coalesce(max(version), 0) FROM {self._t('schema_version')}")
            current = cur.fetchone()[0]
            migrations = _migrations(self.schema)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for stmt in migrations[version]:
                    cur.execute(stmt)
                cur.execute(f"INSERT INTO {self._t('schema_version')} (version) VALUES (%s)", [version])
        self._ready = True

    def schema_version(self) -> int:
        with self._tx("read schema version") as cur:
            cur.execute(f"SELECT max(version) FROM {self._t('schema_version')}")
            return int(cur.fetchone()[0])

    # -- candles --------------------------------------------------------------------------------------
    def upsert_candles(self, candles: pl.DataFrame) -> int:
        frame = normalise_candles(candles, self.bounds)  # raises before anything is written
        if frame.is_empty():
            return 0
        try:
            with self._tx(f"upsert of {len(frame)} candles") as cur:
                cur.execute(
                    f"CREATE TEMP TABLE _incoming (LIKE {self._t('candles')} INCLUDING DEFAULTS) ON COMMIT DROP"
                )
                for offset in range(0, len(frame), self.batch_rows):
                    self._write_chunk(cur, frame.slice(offset, self.batch_rows))
        except StoreError:
            raise
        except Exception as exc:  # anything else inside the transaction: it was rolled back
            raise StoreError(f"upsert of {len(frame)} candles failed and was rolled back: {exc}") from exc
        if len(frame) >= ANALYZE_AFTER_ROWS:
            # Fresh statistics right after a bulk load, so the planner picks the primary-key index for
            # last_bars instead of a bitmap scan + sort (autovacuum would only catch up later).
            with self._tx("analyze candles") as cur:
                cur.execute(f"ANALYZE {self._t('candles')}")
        return len(frame)

    def _write_chunk(self, cur: psycopg.Cursor, chunk: pl.DataFrame) -> None:
        text = chunk.with_columns(pl.col("ts").dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00")).write_csv(
            include_header=False
        )
        cur.execute("TRUNCATE _incoming")
        with cur.copy(f"COPY _incoming ({', '.join(CANDLE_COLUMNS)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(text.encode())
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in VALUE_COLUMNS)
        cur.execute(
            f"INSERT INTO {self._t('candles')} AS c ({', '.join(CANDLE_COLUMNS)}) "
            f"SELECT {', '.join(CANDLE_COLUMNS)} FROM _incoming ON CONFLICT (symbol, timeframe, ts) DO UPDATE "
            f"SET {sets} WHERE ({', '.join('c.' + c for c in VALUE_COLUMNS)}) IS DISTINCT FROM "
            f"({', '.join('EXCLUDED.' + c for c in VALUE_COLUMNS)})"  # unchanged rows: no dead tuples
        )

    def _read(self, sql: str, params: list[Any], *, bulk: bool) -> pl.DataFrame:
        """Candle rows of `sql` sorted by (symbol, ts); ts travels as epoch microseconds (exact).

        bulk: COPY ... TO STDOUT as CSV parsed by polars (cheapest per row for big reads); otherwise a
        binary cursor (lower fixed cost, for small answers such as last_bars)."""
        cols = ", ".join(c if c != "ts" else "(extract(epoch FROM ts) * 1000000)::bigint AS ts" for c in CANDLE_COLUMNS)
        query = f"SELECT {cols} FROM ({sql}) q ORDER BY symbol, ts"
        schema = {**CANDLE_SCHEMA, "ts": pl.Int64()}
        with self._tx("read candles") as cur:
            if bulk:
                buf = io.BytesIO()
                with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)", params) as copy:
                    for block in copy:
                        buf.write(block)
                raw = (
                    pl.read_csv(buf.getvalue(), has_header=False, new_columns=CANDLE_COLUMNS, schema=schema)
                    if buf.tell() else None
                )
            else:
                cur.execute(query, params, binary=True)
                rows = cur.fetchall()
                raw = pl.DataFrame(rows, schema=schema, orient="row") if rows else None
        if raw is None:
            return pl.DataFrame(schema=CANDLE_SCHEMA)
        return candle_frame(raw.with_columns(pl.from_epoch("ts", "us").dt.replace_time_zone("UTC")))

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
        bounds, bound_params = ts_bounds_sql(start, end, "%s")
        sql = f"SELECT * FROM {self._t('candles')} WHERE symbol = ANY(%s) AND timeframe = %s{bounds}"
        params: list[Any] = [list(symbols), timeframe, *bound_params]
        return self._read(sql, params, bulk=True)

    def last_bars(self, symbols: list[str], timeframe: str, n: int, end: datetime | None = None) -> pl.DataFrame:
        check_timeframe(timeframe)
        if not symbols or n <= 0:
            return pl.DataFrame(schema=CANDLE_SCHEMA)
        e = utc_bound(end, "end")
        # One query: per symbol, an index scan backwards on the primary key (LATERAL ... LIMIT n).
        sql = (
            f"SELECT c.* FROM unnest(%s::text[]) AS s(symbol) CROSS JOIN LATERAL (SELECT * FROM {self._t('candles')} "
            f"WHERE symbol = s.symbol AND timeframe = %s {'AND ts < %s' if e else ''} ORDER BY ts DESC LIMIT %s) c"
        )
        params: list[Any] = [list(dict.fromkeys(symbols)), timeframe, *([e] if e else []), n]
        return self._read(sql, params, bulk=False)

    def coverage(self) -> pl.DataFrame:
        with self._tx("coverage") as cur:
            cur.execute(
                f'SELECT symbol, timeframe, min(ts) AS "first", max(ts) AS "last", count(*) AS "rows" '
                f"FROM {self._t('candles')} GROUP BY symbol, timeframe"
            )
            rows = cur.fetchall()
        schema = {"symbol": pl.Utf8, "timeframe": pl.Utf8, "first": pl.Datetime("us", "UTC"),
                  "last": pl.Datetime("us", "UTC"), "rows": pl.Int64}
        return coverage_frame(pl.DataFrame(rows, schema=schema, orient="row"))

    def gaps(self, symbol: str, timeframe: str) -> pl.DataFrame:
        """Intervals of missing bars between the first and the last stored bar."""
        step = check_timeframe(timeframe)
        with self._tx("gaps") as cur:
            cur.execute(
                f"SELECT prev_ts, ts FROM (SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev_ts FROM {self._t('candles')} "
                "WHERE symbol = %s AND timeframe = %s) q WHERE ts - prev_ts > %s ORDER BY ts",
                [symbol, timeframe, step],
            )
            rows = cur.fetchall()
        schema = {"prev_ts": pl.Datetime("us", "UTC"), "ts": pl.Datetime("us", "UTC")}
        return gaps_frame(pl.DataFrame(rows, schema=schema, orient="row"), symbol, timeframe)

    # -- records --------------------------------------------------------------------------------------
    def put_records(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> int:
        # Encoded up front: a bad payload fails before the transaction starts.
        rows = [(kind, str(key), encode_payload(kind, key, payload)) for key, payload in records]
        if not rows:
            return 0
        with self._tx(f"writing {len(rows)} {kind} records") as cur:
            cur.executemany(
                f"INSERT INTO {self._t('records')} AS r (kind, key, payload) VALUES (%s, %s, %s::jsonb) "
                "ON CONFLICT (kind, key) DO UPDATE SET payload = EXCLUDED.payload, updated_at = now(), "
                "seq = EXCLUDED.seq",
                rows,
            )
        return len(rows)

    def get_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with self._tx(f"reading {kind} records") as cur:
            cur.execute(f"SELECT key, payload FROM {self._t('records')} WHERE kind = %s ORDER BY seq", [kind])
            rows = cur.fetchall()
        return [(key, decode_payload(payload)) for key, payload in rows]

    def delete_records(self, kind: str, keys: list[str]) -> int:
        if not keys:
            return 0
        with self._tx(f"deleting {kind} records") as cur:
            cur.execute(f"DELETE FROM {self._t('records')} WHERE kind = %s AND key = ANY(%s)", [kind, list(keys)])
            return cur.rowcount

    def delete_kinds(self, kinds: list[str]) -> int:
        if not kinds:
            return 0
        with self._tx(f"deleting records of {list(kinds)}") as cur:
            cur.execute(f"DELETE FROM {self._t('records')} WHERE kind = ANY(%s)", [list(kinds)])
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
