"""The store contract shared by the DuckDB and Postgres backends.

Candles are keyed by (symbol, timeframe, ts); writes are idempotent upserts in transactional batches.
Every read returns a polars DataFrame with the columns of core.domain.CANDLE_SCHEMA, sorted by
(symbol, ts). The ledger tables (decisions, orders, fills, positions, trades, gate results, ...) are
stored as JSON-typed records keyed by an id so each component owns its own record shape.
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

    # Records: one table per kind, rows keyed by (kind, key); payload is a JSON-able dict.
    def put_records(self, kind: str, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Upsert records of one kind atomically (all or nothing)."""

    def get_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """All records of one kind, in insertion/update order."""

    def delete_records(self, kind: str, keys: list[str]) -> int: ...

    def delete_kinds(self, kinds: list[str]) -> int:
        """Delete every record of these kinds in ONE transaction (all or nothing); returns rows deleted."""

    def close(self) -> None: ...
