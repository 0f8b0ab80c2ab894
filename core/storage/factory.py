"""open_store(settings): the one place that picks the storage backend from the settings."""

from __future__ import annotations

from core.plausibility import Bounds
from core.settings import Settings
from core.storage.base import CandleStore


def open_store(settings: Settings) -> CandleStore:
    """DuckDB file under var_dir by default; Postgres/Supabase when store.backend=postgres."""
    if settings.store.backend == "postgres":
        from core.storage.postgres_store import PostgresStore

        assert settings.store.postgres_dsn is not None  # guaranteed by StoreSettings validation
        return PostgresStore(settings.store.postgres_dsn.get_secret_value(), batch_rows=settings.store.batch_rows,
                             bounds=Bounds.from_settings(settings))
    from core.storage.duckdb_store import DuckDBStore

    return DuckDBStore(settings.duckdb_path, batch_rows=settings.store.batch_rows, bounds=Bounds.from_settings(settings))
