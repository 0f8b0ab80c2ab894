"""Operations commands: `mlcrypto up` (Prefect server + MLflow UI + served deployments + the stream),
`mlcrypto serve`, `mlcrypto deploy-check`; and the main job that `mlcrypto run` executes as Prefect
flow runs (run_main_job). Prefect is imported only inside the commands, after its environment is set.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from core.errors import TradingSystemError
from core.settings import PROJECT_ROOT, Settings, load_settings

console = Console()
WORK_POOL = "mlcrypto-process"


def _settings() -> Settings:
    try:
        return load_settings()
    except TradingSystemError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


# --- the main job -------------------------------------------------------------------------------------


def run_main_job(
    days: int | None = None, step_hours: int | None = None, train: str = "auto", verbose: bool = False
) -> dict[str, Any]:
    """`mlcrypto run`: the offline session as Prefect flow runs, then the report in the terminal."""
    from deployments.prefect_env import configure

    settings = _settings()
    configure(settings, quiet=not verbose, lean=True)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from tqdm import tqdm

    from flows.offline_session import run_session
    from tasks.runtime import open_runtime

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step" if stage == "replay" else "", leave=False)
        bar.total = total
        bar.n = done
        bar.refresh()

    started = time.perf_counter()
    # Heartbeats detect crashed runs of deployed flows; in one in-process session they only add a
    # second per flow run (the engine joins the heartbeat thread), so they are off here.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), open_runtime(settings) as rt:
        out = run_session(rt, days=days, step_hours=step_hours, train=train, progress=progress)
    for bar in bars.values():
        bar.close()
    _print_session(out, time.perf_counter() - started)
    return out


def _print_session(out: dict[str, Any], seconds: float) -> None:
    from rich.table import Table

    from core.session_report import fmt

    t = Table("metric", "ML", "rule-only", "buy-and-hold BTC",
              title="out-of-sample backtest: ML vs rule-only vs buy-and-hold BTC (same bars)")
    for r in out["comparison"]:
        m = r["metric"]
        t.add_row(m, fmt(m, r["ml"]), fmt(m, r["rule_only"]), fmt(m, r.get("buy_and_hold_btc")))
    console.print(t)
    p = Table("paper replay (Prefect flow runs)", "", show_header=True)
    for k, v in out["paper"].items():
        p.add_row(str(k), fmt(str(k), v))
    console.print(p)
    console.print(f"report: {out['html']}\nequity: {out['png']}\nmain job wall time: {seconds:,.0f} s")


# --- up / serve / deploy-check ----------------------------------------------------------------------------


def _wait_http(url: str, seconds: float, stop: Callable[[], bool] = lambda: False) -> bool:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # loopback health check
                if r.status < 500:
                    return True
        except OSError:
            time.sleep(1)
    return False


def up(
    seconds: Annotated[
        float | None, typer.Option(help="Stop everything after N seconds (default: until Ctrl-C or SIGTERM).")
    ] = None,
    stream: Annotated[bool, typer.Option(help="Run the streaming ingest (a supervised child) once the server is up.")] = True,
    profile: Annotated[
        str, typer.Option(help="local (serve in one process) | cluster (PostgreSQL everywhere, deploy + process workers).")
    ] = "local",
    workers: Annotated[int, typer.Option(min=1, max=16, help="cluster: process workers on the mlcrypto-process pool.")] = 2,
) -> None:
    """Local stack: Prefect server (UI localhost:4200), MLflow UI (localhost:5000), every deployment
    served, and the stream running (Kraken, or the replay when offline; Polygon with a key). Ctrl-C and
    SIGTERM stop all of it; the MLflow UI, the serving process and the stream are restarted with
    backoff when they die (deployments/supervisor.py).

    --profile cluster rehearses the cluster on one machine: the Prefect server on PostgreSQL
    (PREFECT_API_DATABASE_CONNECTION_URL, Prefect's own setting), the store on PostgreSQL
    (store.backend=postgres), MLflow's backend on PostgreSQL (ml.tracking_uri), every deployment
    registered with `prefect deploy --all` and run by `--workers` process workers instead of serve."""
    import logging

    from deployments.prefect_env import api_url, configure
    from deployments.supervisor import ChildSpec, Supervisor

    settings = _settings()
    if profile not in ("local", "cluster"):
        raise typer.Exit(_fail_up(f"unknown profile {profile!r}; use local or cluster"))
    if profile == "cluster":
        problems = cluster_problems(settings, os.environ)
        if problems:
            raise typer.Exit(_fail_up("the cluster profile needs PostgreSQL everywhere:\n  " + "\n  ".join(problems)))
    configure(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logs = settings.data.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    api = api_url(settings)
    # Deployed runs send heartbeats, so a run whose process dies (kill -9) is marked Crashed by the
    # automation below instead of staying Running for ever.
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT_SECONDS}
    bin_dir = Path(sys.executable).parent
    from core.alerts import AlertKind, SlackAlerter

    alerter = SlackAlerter.from_settings(settings)  # a child killed with -9 runs no hook: say it here
    sup = Supervisor(cwd=PROJECT_ROOT, env=env,
                     on_exit=lambda title, lines: alerter.send(AlertKind.FLOW_FAILURE, f"mlcrypto up: {title}", lines))
    sup.install_signal_handlers()  # from here on SIGTERM stops the stack exactly as Ctrl-C does
    port = str(settings.schedule.prefect_port)
    sup.start(ChildSpec("prefect server", [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                                           "--port", port], logs / "prefect-server.log"))
    if not _wait_http(api.removesuffix("/api") + "/api/health", 180, stop=lambda: sup.stop_reason is not None):
        sup.stop_all()
        if sup.stop_reason is not None:
            return
        raise typer.Exit(_fail_up(f"the Prefect server did not answer on {api}; see {logs / 'prefect-server.log'}"))
    console.print(f"Prefect UI     http://127.0.0.1:{port}")
    ensure_ledger_limit(env)
    ensure_zombie_automation(env)
    ml_port = settings.schedule.mlflow_ui_url.rsplit(":", 1)[-1].strip("/")
    sup.start(ChildSpec("mlflow ui", [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                                      settings.mlflow_tracking_uri, "--host", "127.0.0.1", "--port", ml_port],
                        logs / "mlflow-ui.log", restart=True))
    console.print(f"MLflow UI      {settings.schedule.mlflow_ui_url}")
    if profile == "cluster":
        out = deploy_all(api, env=env)
        if out.returncode:
            sup.stop_all()
            raise typer.Exit(_fail_up(f"prefect deploy --all failed: {out.stderr[-1500:]}"))
        for i in range(1, workers + 1):
            sup.start(ChildSpec(f"worker {i}", [str(bin_dir / "prefect"), "worker", "start", "--pool", WORK_POOL,
                                                "--name", f"mlcrypto-worker-{i}"], logs / f"worker-{i}.log",
                                restart=True))
        console.print(f"deployments    registered on pool {WORK_POOL}, {workers} process workers (logs {logs})")
    else:
        sup.start(ChildSpec("serve", [sys.executable, "-m", "deployments.serve"], logs / "serve.log", restart=True))
        console.print(f"deployments    served from this machine (log {logs / 'serve.log'})")
    if stream:
        sup.start(ChildSpec("stream", [sys.executable, "-c", STREAM_CHILD], logs / "stream.log", restart=True))
        console.print(f"stream         streaming-ingest flow run, feed.source={settings.feed.source} "
                      f"(log {logs / 'stream.log'})")
    console.print("running; Ctrl-C or SIGTERM stops everything" + (f" (or after {seconds:.0f} s)" if seconds else ""))
    code = sup.run(seconds)
    if code:
        raise typer.Exit(_fail_up(sup.failed or "a child failed"))


def cluster_problems(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """What keeps the cluster profile from running on PostgreSQL everywhere (empty when ready)."""
    problems = []
    db = environ.get("PREFECT_API_DATABASE_CONNECTION_URL", "")
    if not db.startswith("postgresql+asyncpg://"):
        problems.append(
            "PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://user@host:5432/prefect (the Prefect server's database)"
        )
    if settings.store.backend != "postgres":
        problems.append("MLCRYPTO_STORE__BACKEND=postgres and MLCRYPTO_STORE__POSTGRES_DSN=postgresql://... (the store)")
    if not (settings.ml.tracking_uri or "").startswith("postgresql"):
        problems.append("MLCRYPTO_ML__TRACKING_URI=postgresql+psycopg://user@host:5432/mlflow (MLflow's backend)")
    return problems


# The stream as its own supervised process: a streaming-ingest flow run reported to the Prefect server
# (visible in the UI), restarted with backoff by the supervisor when it dies.
STREAM_CHILD = "from flows.streaming_ingest import streaming_ingest; streaming_ingest()"


def _fail_up(message: str) -> int:
    console.print(f"[red]{message}[/red]")
    return 1


def ensure_ledger_limit(env: dict[str, str], cwd: Path = PROJECT_ROOT) -> None:
    """The global concurrency limit (1 slot) that scan-and-trade and manage-positions hold while they
    write the paper ledger; creating it again when it exists is harmless (the CLI says so)."""
    from flows.common import LEDGER_LIMIT

    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run([prefect, "global-concurrency-limit", "create", LEDGER_LIMIT, "--limit", "1"], cwd=cwd, env=env,
                   capture_output=True, text=True, timeout=300, check=False)


HEARTBEAT_SECONDS = "30"  # Prefect's minimum for heartbeat events; the automation waits 3 of them
ZOMBIE_AUTOMATION = PROJECT_ROOT / "deployments" / "automations" / "crash-zombie-runs.yaml"


def ensure_zombie_automation(env: dict[str, str], cwd: Path = PROJECT_ROOT) -> bool:
    """Create the automation that marks runs Crashed when their heartbeats stop, unless it exists."""
    import yaml

    prefect = str(Path(sys.executable).parent / "prefect")
    name = yaml.safe_load(ZOMBIE_AUTOMATION.read_text())["automations"][0]["name"]
    listed = subprocess.run([prefect, "automation", "inspect", name], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    if listed.returncode == 0:
        return False
    made = subprocess.run([prefect, "automation", "create", "--from-file", str(ZOMBIE_AUTOMATION)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if made.returncode:
        console.print(f"[yellow]could not create the zombie-run automation: {made.stderr[-500:]}[/yellow]")
    return made.returncode == 0


def serve() -> None:
    """Serve every deployment of prefect.yaml from this process (needs a Prefect API: PREFECT_API_URL)."""
    from deployments.serve import main

    main()


def check_deployments(settings: Settings, path: Path | None = None) -> list[str]:
    """Problems with prefect.yaml: schema, importable entrypoints, crons equal to the settings."""
    import yaml

    from deployments.prefect_env import configure

    configure(settings)
    from prefect.cli.deploy._models import PrefectYamlModel

    from deployments.serve import CRON_SETTING, PREFECT_YAML, load_flow, read_specs

    path = path or PREFECT_YAML
    problems: list[str] = []
    model = PrefectYamlModel.model_validate(yaml.safe_load(path.read_text()))
    if not model.deployments:
        problems.append("prefect.yaml defines no deployments")
    for spec in read_specs(path):
        try:
            fl = load_flow(spec.entrypoint)
            if not hasattr(fl, "to_deployment"):
                problems.append(f"{spec.name}: {spec.entrypoint} is not a Prefect flow")
        except Exception as exc:  # noqa: BLE001 - report every broken entrypoint, not only the first
            problems.append(f"{spec.name}: cannot import {spec.entrypoint}: {type(exc).__name__}: {exc}")
        if spec.name in CRON_SETTING:
            want = getattr(settings.schedule, CRON_SETTING[spec.name])
            if spec.crons != (want,):
                setting = f"schedule.{CRON_SETTING[spec.name]}"
                problems.append(f"{spec.name}: prefect.yaml cron {spec.crons} != settings {setting} {want!r}")
    return problems


def deploy_all(
    api: str, cwd: Path = PROJECT_ROOT, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`prefect deploy --all` against `api`, creating the process work pool first if it is missing."""
    env = {**os.environ, **(env or {}), "PREFECT_API_URL": api}
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run([prefect, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], cwd=cwd, env=env,
                   capture_output=True, text=True, timeout=timeout, check=False)
    ensure_ledger_limit(env, cwd)
    ensure_zombie_automation(env, cwd)
    return subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def write_schedules(settings: Settings, path: Path | None = None) -> bool:
    """Write the settings' crons (schedule.*) into prefect.yaml; True when the file changed."""
    from deployments.serve import PREFECT_YAML, render_prefect_yaml

    path = path or PREFECT_YAML
    text = path.read_text()
    rendered = render_prefect_yaml(settings, text)
    if rendered != text:
        path.write_text(rendered)
    return rendered != text


def deploy_check(
    deploy: Annotated[
        bool, typer.Option(help="Also run `prefect deploy --all` against PREFECT_API_URL (or localhost:4200).")
    ] = False,
    write: Annotated[
        bool, typer.Option(help="First write the schedules of the settings (schedule.*) into prefect.yaml.")
    ] = False,
) -> None:
    """Validate prefect.yaml: schema, importable entrypoints, schedules equal to the settings (the one
    source of the crons; `--write` copies them into prefect.yaml). `--deploy` runs only when it passes."""
    from deployments.prefect_env import api_url

    settings = _settings()
    if write and write_schedules(settings):
        console.print("prefect.yaml: schedules rewritten from the settings")
    problems = check_deployments(settings)
    for p in problems:
        console.print(f"[red]{p}[/red]")
    if problems:
        raise typer.Exit(1)
    console.print("prefect.yaml: every deployment parses and its entrypoint imports; schedules match the settings")
    if deploy:
        out = deploy_all(os.environ.get("PREFECT_API_URL") or api_url(settings))
        console.print(out.stdout[-3000:])
        if out.returncode:
            console.print(f"[red]{out.stderr[-2000:]}[/red]")
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("serve")(serve)
    app.command("deploy-check")(deploy_check)
