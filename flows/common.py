"""What every flow does first: resolve its Runtime and log the settings fingerprint with the run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

from prefect import get_run_logger

from tasks.runtime import Runtime, open_runtime

# Global concurrency limit (create it with limit 1: `mlcrypto up` and `deploy_all` do) held by every
# deployed flow run that writes the paper ledger: the book (core.trading.account) is single-writer by design.
LEDGER_LIMIT = "mlcrypto-ledger"
# The slot is a lease the holder renews in the background; a holder killed with -9 stops renewing and
# its slot frees after this long (Prefect's default, 300 s, stalled every scan and management run for
# 5 minutes after a kill in the rehearsal, bench/rehearse.py).
LEDGER_LEASE_SECONDS = 60.0


@contextmanager
def flow_runtime(runtime: Runtime | None, *, ledger: bool = False, exclusive: bool = False) -> Iterator[Runtime]:
    """The caller's runtime (offline session, tests) or one opened from the environment's settings and
    closed when the flow ends (deployments). Deployed runs share the DuckDB file with the other served
    flows (open per call) unless `exclusive`, and with `ledger` hold the ledger's concurrency slot.
    The settings fingerprint goes into the run's log."""
    with ExitStack() as stack:
        if runtime is None and ledger:
            from prefect.concurrency.sync import concurrency

            stack.enter_context(concurrency(LEDGER_LIMIT, occupy=1, lease_duration=LEDGER_LEASE_SECONDS))
        rt = runtime or open_runtime(shared=not exclusive)
        get_run_logger().info("settings fingerprint %s (store %s, mode %s)", rt.settings.fingerprint(),
                              rt.settings.store.backend, rt.settings.execution.mode)
        try:
            yield rt
        finally:
            if runtime is None:
                rt.close()


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_when(value: datetime | str | None) -> datetime | None:
    """Deployment parameters arrive as ISO strings; naive times are refused (UTC is required)."""
    if value is None or isinstance(value, datetime):
        ts = value
    else:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts is not None and ts.tzinfo is None:
        raise ValueError(f"time {value!r} must carry a UTC offset, e.g. 2026-04-20T12:00:00Z")
    return ts.astimezone(UTC) if ts is not None else None
