"""streaming_ingest: the long-running 1m stream into the store (Polygon with a key, else the replay)."""

from __future__ import annotations

from prefect import flow

from flows.common import flow_runtime
from flows.hooks import ALERT_HOOKS
from tasks.data import ingest_stream
from tasks.runtime import Runtime


@flow(name="streaming-ingest", validate_parameters=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def streaming_ingest(
    symbols: list[str] | None = None,
    seconds: float | None = None,
    source: str = "auto",
    runtime: Runtime | None = None,
) -> dict[str, int]:
    """Runs until `seconds` elapse (forever when None). source: auto | polygon | replay."""
    with flow_runtime(runtime) as rt:
        return ingest_stream(rt, list(symbols or rt.settings.data.symbols), seconds, source)
