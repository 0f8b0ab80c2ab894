"""The resources one flow run works with: settings, the store, the trading account, the scorer, the alerter.

Deployed flows open a Runtime from the environment's settings (JSON-able parameters only); the offline
session, tests and benchmarks open ONE Runtime and hand it to every subflow, so the DuckDB file (a
single-writer database) is opened once and the champion models are loaded once per process.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.alerts import SlackAlerter
from core.errors import StoreError
from core.scoring import RuleOnlyScorer, Scorer
from core.settings import Settings, load_settings
from core.storage.base import Store
from core.storage.factory import open_store

if TYPE_CHECKING:
    from core.trading.account import Account

log = logging.getLogger(__name__)


class Runtime:
    """Not a dataclass, and slotted, on purpose: Prefect walks task inputs (visit_collection) and encodes
    flow parameters to JSON (jsonable_encoder); a dataclass would be walked and copied deep, ledger
    included, on every task call. A slotted object is opaque to both (stored as "<Runtime>")."""

    __slots__ = ("_account", "_gate", "_owns_store", "alerter", "scorer", "settings", "store")

    def __init__(
        self, settings: Settings, store: Store, alerter: SlackAlerter, scorer: Scorer | None = None,
        *, owns_store: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.alerter = alerter
        self.scorer = scorer
        self._account: Account | None = None
        self._owns_store = owns_store
        self._gate: Any = None

    def __repr__(self) -> str:
        return f"Runtime(store={self.settings.store.backend}, settings={self.settings.fingerprint()})"

    @property
    def gate(self) -> Any:
        """One long-lived GX gate (building its context costs more than validating a scan)."""
        if self._gate is None:
            from core.quality.gate import CandleGate

            self._gate = CandleGate(self.settings)
        return self._gate

    @property
    def account(self) -> Account:
        """The book, loaded from the store once (Account.load resubmits stored intents), with the driver
        of settings.execution.mode: paper (simulated) or live (build_venue refuses live unless
        mode=live AND confirm_live=true; then the orders go to Hummingbot)."""
        if self._account is None:
            from core.trading.account import Account, build_driver
            from core.venues.factory import build_venue

            driver = build_driver(self.settings, build_venue(self.settings, self.store, self.venue_alert))
            self._account = Account.load(self.store, self.settings, driver)
        return self._account

    def venue_alert(self, message: str) -> None:
        """What the live venue tells the operator (an order in doubt, or adopted after a lost answer)."""
        from core.alerts import AlertKind

        self.alerter.send(AlertKind.VENUE, message)

    def drop_account(self) -> None:
        """Forget the loaded book (after the store's book was reset); the next use reloads it."""
        self._account = None

    def get_scorer(self) -> Scorer:
        """The champion models when models/ is importable (rule-only defaults per strategy without a
        champion), else the rule-only scorer; built once per runtime."""
        if self.scorer is None:
            try:
                from models.scorer import MLScorer

                self.scorer = MLScorer(self.settings)
            except Exception as exc:  # noqa: BLE001 - scoring must never stop trading on the rules
                log.warning("ML scorer unavailable (%s); rule-only defaults apply", type(exc).__name__)
                self.scorer = RuleOnlyScorer(self.settings)
        return self.scorer

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SharedDuckDBStore:
    """The DuckDB store for flows that run in SEPARATE processes on one machine (the served deployments
    of `mlcrypto up`: the stream, scans, management). DuckDB lets one process hold the file, so each
    call opens it, does its work and closes it; a call that finds the file locked by another process
    waits and retries. Postgres/Supabase needs none of this (use it beyond one machine)."""

    def __init__(self, path: Path, *, batch_rows: int, wait_seconds: float = 30.0) -> None:
        self.path = Path(path)
        self._batch_rows = batch_rows
        self._wait = wait_seconds

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from core.storage.duckdb_store import DuckDBStore

        deadline = time.monotonic() + self._wait
        delay = 0.05
        while True:
            try:
                store = DuckDBStore(self.path, batch_rows=self._batch_rows)
                break
            except StoreError as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            return getattr(store, name)(*args, **kwargs)
        finally:
            store.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self._call, name)

    def close(self) -> None:  # nothing is held between calls
        return None


def open_runtime(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    scorer: Scorer | None = None,
    shared: bool = False,
) -> Runtime:
    """`shared`: other processes use the same DuckDB file at the same time (served deployments)."""
    settings = settings or load_settings()
    owns = store is None
    if store is None and shared and settings.store.backend == "duckdb":
        store = SharedDuckDBStore(settings.duckdb_path, batch_rows=settings.store.batch_rows)  # type: ignore[assignment]
    store = store or open_store(settings)
    store.init_schema()
    return Runtime(settings, store, SlackAlerter.from_settings(settings), scorer, owns_store=owns)
