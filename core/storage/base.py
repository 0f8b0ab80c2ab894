"""The store contract shared by the DuckDB and Postgres backends.

Candles are keyed by (symbol, timeframe, ts); writes are idempotent upserts in transactional batches.
Every read returns a polars DataFrame with the columns of core.domain.CANDLE_SCHEMA, sorted by
(symbol, ts). Records (the book's journal and views, gate results, ...) are a separate protocol,
RecordStore: JSON payloads keyed by an id so each component owns its own record shape. Both backends
implement both (Store).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import polars as pl


@runtime_checkable
class CandleStore(Protocol):
    def init_schema(self) -> None:
        """Create or migrate the schema; safe to call many times."""

    def upsert_candles(self, candles: pl.DataFrame) -> int:
        """Validate then upsert; returns rows written. Raises DataQualityError before writing anything."""

    def read_candles(
        self, symbol: str, timeframe: str, start: datetime | None = None, end: datetime | None = None
    ) -> pl.DataFrame:
        """Bars with start <= ts < end (either bound optional)."""

    def read_many(
        self,
        symbols: list[str],
        timeframe: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Bars of many symbols in one query."""

    def last_bars(self, symbols: list[str], timeframe: str, n: int, end: datetime | None = None) -> pl.DataFrame:
        """The last n bars (ts < end when given) of each symbol, in one query."""

    def coverage(self) -> pl.DataFrame:
        """Per (symbol, timeframe): first ts, last ts, rows, expected rows, missing bars."""

    def close(self) -> None: ...


@runtime_checkable
class RecordStore(Protocol):
    """JSON records, one table per kind, rows keyed by (kind, key): the book's journal and views, gate
    results, regime state. Separate from the candles: a component that keeps records needs only this."""

    def put_records(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Upsert records of one kind atomically (all or nothing)."""

    def get_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """All records of one kind, in insertion/update order."""

    def delete_records(self, kind: str, keys: list[str]) -> int: ...

    def delete_kinds(self, kinds: list[str]) -> int:
        """Delete every record of these kinds in ONE transaction (all or nothing); returns rows deleted."""
        ...


@runtime_checkable
class Store(CandleStore, RecordStore, Protocol):
    """What the DuckDB and Postgres backends implement: candles and records in one database."""
