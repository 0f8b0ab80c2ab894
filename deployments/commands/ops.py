"""Operations commands: `mlcrypto up` (Prefect server + MLflow UI + served deployments + the stream),
`mlcrypto serve`, `mlcrypto deploy-check`; and the main job that `mlcrypto run` executes as Prefect
flow runs (run_main_job). Prefect is imported only inside the commands, after its environment is set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def _wait_http(url: str, seconds: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback health check
                if r.status < 500:
                    return True
        except OSError:
            time.sleep(1)
    return False


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def up(
    seconds: Annotated[float | None, typer.Option(help="Stop everything after N seconds (default: until Ctrl-C).")] = None,
    stream: Annotated[bool, typer.Option(help="Start the streaming-ingest deployment once the server is up.")] = True,
) -> None:
    """Local stack: Prefect server (UI localhost:4200), MLflow UI (localhost:5000), every deployment
    served, and the stream running (the replay source when no Polygon key is set)."""
    from deployments.prefect_env import api_url, configure

    settings = _settings()
    configure(settings)
    logs = settings.data.var_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    api = api_url(settings)
    env = {**os.environ, "PREFECT_API_URL": api}
    bin_dir = Path(sys.executable).parent
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        port = str(settings.schedule.prefect_port)
        server_cmd = [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port]
        procs.append(("prefect server", _spawn(server_cmd, env, logs / "prefect-server.log")))
        if not _wait_http(api.removesuffix("/api") + "/api/health", 180):
            raise typer.Exit(_fail_up(f"the Prefect server did not answer on {api}; see {logs / 'prefect-server.log'}"))
        console.print(f"Prefect UI     http://127.0.0.1:{port}")
        ensure_ledger_limit(env)
        ml_port = settings.schedule.mlflow_ui_url.rsplit(":", 1)[-1].strip("/")
        mlflow_cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", settings.mlflow_tracking_uri,
                      "--host", "127.0.0.1", "--port", ml_port]
        procs.append(("mlflow ui", _spawn(mlflow_cmd, env, logs / "mlflow-ui.log")))
        console.print(f"MLflow UI      {settings.schedule.mlflow_ui_url}")
        procs.append(("serve", _spawn([sys.executable, "-m", "deployments.serve"], env, logs / "serve.log")))
        console.print(f"deployments    served from this machine (log {logs / 'serve.log'})")
        if stream:
            _start_stream(env, settings)
        console.print("running; Ctrl-C stops everything" + (f" (or after {seconds:.0f} s)" if seconds else ""))
        deadline = time.monotonic() + seconds if seconds else None
        while deadline is None or time.monotonic() < deadline:
            for name, p in procs:
                if p.poll() is not None:
                    raise typer.Exit(_fail_up(f"{name} exited with code {p.returncode}; see {logs}"))
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for _, p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # its own session: the process and its children
        for _, p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _fail_up(message: str) -> int:
    console.print(f"[red]{message}[/red]")
    return 1


def ensure_ledger_limit(env: dict[str, str], cwd: Path = PROJECT_ROOT) -> None:
    """The global concurrency limit (1 slot) that scan-and-trade and manage-positions hold while they
    write the paper ledger; creating it again when it exists is harmless (the CLI says so)."""
    from flows.common import LEDGER_LIMIT

    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run([prefect, "global-concurrency-limit", "create", LEDGER_LIMIT, "--limit", "1"], cwd=cwd, env=env,
                   capture_output=True, text=True, timeout=300)


def _start_stream(env: dict[str, str], settings: Settings) -> None:
    """Once the served deployments are registered, ask for one streaming-ingest run."""
    code = (
        "import time\n"
        "from prefect.deployments import run_deployment\n"
        "for _ in range(120):\n"
        "    try:\n"
        "        r = run_deployment('streaming-ingest/streaming-ingest', timeout=0); print(r.id); break\n"
        "    except Exception: time.sleep(2)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    source = "Polygon" if settings.feed.polygon_api_key is not None else "the local replay"
    run_id = out.stdout.strip() or "not started: " + out.stderr[-200:]
    console.print(f"stream         streaming-ingest from {source} (flow run {run_id})")


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
                   capture_output=True, text=True, timeout=timeout)
    ensure_ledger_limit(env, cwd)
    cmd = [prefect, "--no-prompt", "deploy", "--all"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


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
