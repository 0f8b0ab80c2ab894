"""The `mlcrypto up` supervisor with real processes: SIGTERM to the supervisor leaves no child or
grandchild alive (one of them ignores SIGTERM and is killed), a restartable child that dies is started
again with a doubling backoff and each restart is logged, and a non-restartable child's exit stops all."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from deployments.supervisor import ChildSpec, Supervisor

ROOT = Path(__file__).resolve().parent.parent

# A child that starts a grandchild in its own process group and records both pids.
_CHILD = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    if len(sys.argv) > 2 and sys.argv[2] == "deaf":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {gc.pid}")
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
""")

_SUPERVISOR = textwrap.dedent("""
    import logging, os, sys
    from pathlib import Path
    from deployments.supervisor import ChildSpec, Supervisor
    logging.basicConfig(level=logging.INFO)
    tmp = Path(sys.argv[1]); child = sys.argv[2]
    sup = Supervisor(cwd=tmp, env=dict(os.environ), stop_timeout=2.0, poll=0.1)
    sup.install_signal_handlers()
    for name, restart, mode in (("server", False, "ok"), ("serve", True, "ok"), ("stream", True, "deaf")):
        sup.start(ChildSpec(name, [sys.executable, "-c", child, str(tmp / f"{name}.pids"), mode],
                            tmp / f"{name}.log", restart=restart))
    (tmp / "sup.ready").write_text(str(os.getpid()))
    sys.exit(sup.run())
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's bookkeeping is left


def _wait(pred, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_supervisor_when_sigterm_then_no_child_or_grandchild_survives(tmp_path: Path) -> None:
    sup = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, str(tmp_path), _CHILD], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        names = ("server", "serve", "stream")
        assert _wait(lambda: all((tmp_path / f"{n}.pids").exists() for n in names)), sup.stdout
        pids = [int(p) for n in names for p in (tmp_path / f"{n}.pids").read_text().split()]
        assert len(pids) == 6 and all(_alive(p) for p in pids)

        sup.send_signal(signal.SIGTERM)
        out, _ = sup.communicate(timeout=60)
    finally:
        if sup.poll() is None:
            sup.kill()
    assert sup.returncode == 0, out
    assert b"stack stopped (SIGTERM)" in out
    assert _wait(lambda: not any(_alive(p) for p in pids), 10), [p for p in pids if _alive(p)]


def test_supervisor_when_restartable_child_dies_then_restarted_with_backoff_and_logged(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="deployments.supervisor")
    notes: list[str] = []
    sup = Supervisor(cwd=ROOT, env=dict(os.environ), backoff_initial=0.2, backoff_max=0.8, poll=0.05,
                     on_exit=lambda title, lines: notes.append(title))
    child = sup.start(ChildSpec("stream", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "s.log",
                                restart=True))

    code = sup.run(seconds=4.0)

    assert code == 0 and sup.stop_reason == "time limit"
    assert child.restarts >= 3 and len(set(child.pids)) == len(child.pids) >= 4
    exits = [r.getMessage() for r in caplog.records if "exited with code 3" in r.getMessage()]
    assert exits[:4] == [f"stream exited with code 3; restart {i} in {d:.1f}s (log {tmp_path / 's.log'})"
                         for i, d in ((1, 0.2), (2, 0.4), (3, 0.8), (4, 0.8))][: len(exits[:4])]
    assert sum("restarting stream" in r.getMessage() for r in caplog.records) >= 3
    assert notes[:2] == ["stream exited with code 3: restart 1 in 0.2s", "stream exited with code 3: restart 2 in 0.4s"]


def test_supervisor_when_essential_child_exits_then_everything_stops_with_error(tmp_path: Path) -> None:
    sup = Supervisor(cwd=ROOT, env=dict(os.environ), poll=0.05, stop_timeout=5)
    sleeper = sup.start(ChildSpec("serve", [sys.executable, "-c", "import time; time.sleep(600)"],
                                  tmp_path / "a.log", restart=True))
    sup.start(ChildSpec("prefect server", [sys.executable, "-c", "import sys; sys.exit(1)"], tmp_path / "b.log"))

    code = sup.run(seconds=30)

    assert code == 1 and sup.failed is not None and "prefect server exited with code 1" in sup.failed
    assert sleeper.proc is not None and sleeper.proc.poll() is not None


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pgrep(flag: str, pid: int) -> list[str]:
    return subprocess.run(["pgrep", flag, str(pid)], check=False, capture_output=True, text=True).stdout.split()


def test_mlcrypto_up_when_sigterm_then_whole_real_stack_stops(tmp_path: Path) -> None:
    """The real stack (Prefect server, MLflow UI, serving process) on free ports: the serving process
    killed with -9 is alerted (to a local Slack receiver) and restarted; SIGTERM to `mlcrypto up`
    leaves none of the processes of its children's groups alive."""
    from tests.test_alerts import Receiver

    slack = Receiver()
    prefect_port, mlflow_port = _free_ports(2)
    env = {**os.environ, "MLCRYPTO_DATA__VAR_DIR": str(tmp_path / "var"), "MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL": slack.url,
           "MLCRYPTO_SCHEDULE__PREFECT_PORT": str(prefect_port),
           "MLCRYPTO_SCHEDULE__MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}", "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    up = subprocess.Popen([str(Path(sys.executable).parent / "mlcrypto"), "up", "--no-stream"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[int] = set()
    try:
        lines: list[str] = []
        assert up.stdout is not None
        for line in up.stdout:
            lines.append(line)
            if line.startswith("running;"):
                break
        assert any(line.startswith("running;") for line in lines), "".join(lines)
        children = [int(p) for p in _pgrep("-P", up.pid)]
        assert len(children) == 3  # prefect server, mlflow ui, serve
        time.sleep(5)  # let them start their own children (uvicorn workers, job consumers)
        serve = next(c for c in children if "deployments.serve" in Path(f"/proc/{c}/cmdline").read_text())
        os.kill(serve, signal.SIGKILL)
        assert _wait(lambda: len(_pgrep("-P", up.pid)) == 3 and serve not in [int(p) for p in _pgrep("-P", up.pid)], 30)
        children = [int(p) for p in _pgrep("-P", up.pid)]
        time.sleep(3)
        for c in children:
            seen |= {int(p) for p in _pgrep("-g", c)}
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
    slack.httpd.shutdown()
    slack.httpd.server_close()
    assert up.returncode == 0, out
    assert "stack stopped (SIGTERM)" in out and "restarting serve (restart 1)" in out
    assert any("serve exited with code -9: restart 1" in p["body"]["text"] for p in slack.posts), slack.posts
    assert len(seen) >= 3 and _wait(lambda: not any(_alive(p) for p in seen), 10), [p for p in seen if _alive(p)]
