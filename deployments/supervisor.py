"""A small process supervisor for `mlcrypto up`: starts children, restarts the ones allowed to die,
and stops the whole tree on SIGTERM exactly as on SIGINT (Ctrl-C).

Each child runs in its own session (process group), so stopping it reaches its own children too (the
Prefect server's workers, MLflow's job consumers, a flow-run engine): SIGTERM to the group, then
SIGKILL to the group after `stop_timeout` seconds. A `restart=True` child that exits is started again
after a backoff that doubles from `backoff_initial` up to `backoff_max` (reset once it has run for
`stable_after` seconds), each restart logged; a `restart=False` child that exits stops everything.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    log_path: Path
    restart: bool = False


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float | None = None  # when a dead restartable child is due to start again
    pids: list[int] = field(default_factory=list)  # every pid it ever had


class Supervisor:
    def __init__(
        self,
        *,
        cwd: Path,
        env: dict[str, str],
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 60.0,
        stop_timeout: float = 20.0,
        poll: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_exit: Callable[[str, list[str]], object] | None = None,
    ) -> None:
        self.cwd = cwd
        self.env = env
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.poll = poll
        self.clock = clock
        self.on_exit = on_exit  # (title, lines): e.g. a Slack alert; a dead process runs no hook of its own
        self.children: list[Child] = []
        self.stop_reason: str | None = None
        self.failed: str | None = None

    # -- signals ------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT both ask for a clean stop of the whole stack."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.stop_reason = signal.Signals(signum).name

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- children -------------------------------------------------------------------------------------
    def start(self, spec: ChildSpec) -> Child:
        child = Child(spec)
        self.children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with child.spec.log_path.open("ab") as handle:
            child.proc = subprocess.Popen(child.spec.argv, cwd=self.cwd, env=self.env, stdout=handle,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        child.started_at = self.clock()
        child.next_start = None
        child.pids.append(child.proc.pid)

    def backoff(self, restarts: int) -> float:
        return float(min(self.backoff_max, self.backoff_initial * 2 ** max(0, restarts - 1)))

    def check(self) -> None:
        """One supervision pass: restart what died (after its backoff), or mark the stack failed."""
        now = self.clock()
        for child in self.children:
            if child.next_start is not None:
                if now >= child.next_start:
                    log.warning("restarting %s (restart %d)", child.spec.name, child.restarts)
                    self._spawn(child)
                continue
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                continue
            if not child.spec.restart:
                self.failed = f"{child.spec.name} exited with code {code}; see {child.spec.log_path}"
                self._notify(f"{child.spec.name} exited with code {code}: stopping the stack", [self.failed])
                return
            if now - child.started_at >= self.stable_after:
                child.restarts = 0  # it had been running fine: start the backoff over
            child.restarts += 1
            delay = self.backoff(child.restarts)
            child.next_start = now + delay
            log.warning("%s exited with code %s; restart %d in %.1fs (log %s)", child.spec.name, code,
                        child.restarts, delay, child.spec.log_path)
            self._notify(f"{child.spec.name} exited with code {code}: restart {child.restarts} in {delay:.1f}s",
                         [f"log: {child.spec.log_path}"])

    def _notify(self, title: str, lines: list[str]) -> None:
        if self.on_exit is None:
            return
        try:
            self.on_exit(title, lines)
        except Exception as exc:  # noqa: BLE001 - an alert must never stop the supervision
            log.error("exit notification failed: %s", exc)

    def run(self, seconds: float | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
        """Supervise until a signal, `seconds`, or a non-restartable child's exit; then stop all.
        Returns the exit code for the command: 0 on a requested stop, 1 when a child failed."""
        deadline = self.clock() + seconds if seconds else None
        try:
            while self.stop_reason is None and self.failed is None:
                if deadline is not None and self.clock() >= deadline:
                    self.stop_reason = "time limit"
                    break
                self.check()
                sleep(self.poll)
        except KeyboardInterrupt:
            self.stop_reason = "SIGINT"
        finally:
            self.stop_all()
        if self.failed:
            log.error("stack stopped: %s", self.failed)
            return 1
        log.info("stack stopped (%s)", self.stop_reason)
        return 0

    def stop_all(self) -> None:
        """SIGTERM every child's process group (newest first), then SIGKILL what is left."""
        live = [c for c in reversed(self.children) if c.proc is not None]
        for child in live:
            assert child.proc is not None
            _signal_group(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs: killing its process group", child.spec.name,
                            self.stop_timeout)
            # The group may outlive its leader (a grandchild ignoring SIGTERM): kill what is left.
            _signal_group(child.proc.pid, signal.SIGKILL)
            if child.proc.poll() is None:
                child.proc.wait(timeout=5)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
