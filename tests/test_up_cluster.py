"""`mlcrypto up --profile cluster`: the one-machine rehearsal of the cluster. The Prefect server, the
store and MLflow each on their own PostgreSQL database (real server on 127.0.0.1), every deployment
registered with `prefect deploy --all`, two process workers online on the pool; SIGTERM stops it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.settings import load_settings
from deployments.commands.ops import cluster_problems
from tests.test_supervisor import _free_ports

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_problems_when_not_postgres_everywhere_then_each_missing_piece_named() -> None:
    local = load_settings()
    pg = load_settings(store={"backend": "postgres", "postgres_dsn": "postgresql://u@h/s"},
                       ml={"tracking_uri": "postgresql+psycopg://u@h/m"})

    missing = cluster_problems(local, {})
    assert len(missing) == 3 and any("PREFECT_API_DATABASE_CONNECTION_URL" in p for p in missing)
    assert any("STORE__BACKEND" in p for p in missing) and any("TRACKING_URI" in p for p in missing)
    assert cluster_problems(pg, {"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://u@h/p"}) == []
    assert len(cluster_problems(pg, {"PREFECT_API_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///x.db"})) == 1


def _post(url: str, body: dict) -> list[dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def databases(pg_dsn: str):
    import psycopg

    names = {k: f"t_cluster_{k}_{secrets.token_hex(3)}" for k in ("prefect", "mlflow", "store")}
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for name in names.values():
            con.execute(f'CREATE DATABASE "{name}"')
    base = pg_dsn.rsplit("/", 1)[0].split("://", 1)[1]
    yield {k: f"{base}/{v}" for k, v in names.items()}
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for name in names.values():
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_up_cluster_when_started_then_postgres_everywhere_deployments_and_two_workers_online(
    databases, tmp_path: Path
) -> None:
    prefect_port, mlflow_port = _free_ports(2)
    env = {**os.environ, "COLUMNS": "200",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{databases['prefect']}",
           "MLCRYPTO_STORE__BACKEND": "postgres", "MLCRYPTO_STORE__POSTGRES_DSN": f"postgresql://{databases['store']}",
           "MLCRYPTO_ML__TRACKING_URI": f"postgresql+psycopg://{databases['mlflow']}",
           "MLCRYPTO_DATA__VAR_DIR": str(tmp_path / "var"), "MLCRYPTO_SCHEDULE__PREFECT_PORT": str(prefect_port),
           "MLCRYPTO_SCHEDULE__MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}"}
    env.pop("PREFECT_API_URL", None)
    up = subprocess.Popen([str(Path(sys.executable).parent / "mlcrypto"), "up", "--profile", "cluster", "--no-stream"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = f"http://127.0.0.1:{prefect_port}/api"
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:
            lines.append(line)
            if line.startswith("running;"):
                break
        assert any(line.startswith("running;") for line in lines), "".join(lines)
        deadline = time.monotonic() + 120
        workers: list[dict] = []
        while time.monotonic() < deadline:
            workers = _post(f"{api}/work_pools/mlcrypto-process/workers/filter", {})
            if sum(w["status"] == "ONLINE" for w in workers) == 2:
                break
            time.sleep(2)
        deployments = {d["name"] for d in _post(f"{api}/deployments/filter", {})}
        limits = {c["name"]: c["limit"] for c in _post(f"{api}/v2/concurrency_limits/filter", {})}
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
    assert sorted(w["name"] for w in workers if w["status"] == "ONLINE") == ["mlcrypto-worker-1", "mlcrypto-worker-2"]
    assert {"scan-and-trade", "manage-positions", "weekly-retrain", "streaming-ingest"} <= deployments
    assert limits.get("mlcrypto-ledger") == 1  # scan and manage share one slot
    assert up.returncode == 0 and "stack stopped (SIGTERM)" in out

    import psycopg

    with psycopg.connect(f"postgresql://{databases['prefect']}") as con:  # the server wrote to PostgreSQL
        assert con.execute("SELECT count(*) FROM deployment").fetchone()[0] >= 8
    with psycopg.connect(f"postgresql://{databases['mlflow']}") as con:  # MLflow migrated its schema there
        assert con.execute("SELECT count(*) FROM experiments").fetchone()[0] >= 1
