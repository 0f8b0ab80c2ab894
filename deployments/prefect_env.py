"""Prefect's environment for this project, set BEFORE prefect is imported (Prefect reads its settings
from the environment at import time): everything Prefect writes lives under <var_dir>/prefect, so no
global ~/.prefect is touched; no usage statistics; a patient start-up on a busy 2-core machine.

With PREFECT_API_URL set (e.g. by `mlcrypto up`, or a remote server), flows report there; without it,
Prefect starts a temporary local API server backed by <var_dir>/prefect/prefect.db (ephemeral mode),
so the runs of `mlcrypto run` are still there for the UI afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.settings import Settings

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_UI_ENABLED": "true",
}


def prefect_home(settings: Settings) -> Path:
    return settings.data.var_dir / "prefect"


# Server loop services a one-process replay never needs (no schedules, workers or automations); off
# for the temporary server only, they would otherwise compete for its SQLite file with every flow run.
EPHEMERAL_LEAN = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "PAUSE_EXPIRATIONS", "TRIGGERS")
}


def configure(settings: Settings, *, quiet: bool = False, lean: bool = False) -> dict[str, str]:
    """Set the Prefect environment for this process (and the child processes it starts). `lean`: a
    temporary server (no PREFECT_API_URL) runs without the services only deployments use."""
    home = prefect_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    env = {"PREFECT_HOME": str(home), **DEFAULTS}
    if quiet:
        env["PREFECT_LOGGING_LEVEL"] = "WARNING"
    if lean and not os.environ.get("PREFECT_API_URL"):
        env.update(EPHEMERAL_LEAN)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    if "prefect" in sys.modules and os.environ.get("PREFECT_HOME") != str(home):
        # Imported before we could configure it: say so instead of silently writing to ~/.prefect.
        print(f"note: prefect was imported before PREFECT_HOME={home} was set", file=sys.stderr)
    return env


def api_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.schedule.prefect_port}/api"
