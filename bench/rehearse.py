"""The deployed stack rehearsed under faults: `python -m bench.rehearse --minutes 30`.

It starts what a user starts, `mlcrypto up` (Prefect server, MLflow UI, every deployment served, the
stream), in a scratch var dir on free ports, offline: the stream is the replay re-timed to now
(core/feeds/replay_live.py). Trading is LIVE against the faithful Hummingbot double
(tests/hummingbot_server.py, in this process) whose market follows the same replayed bars, so resting
orders fill as the replayed price crosses them. Alerts go to a local Slack receiver (this process).

Faults: the first order sent times out (armed before start-up: it must be found at the venue and
adopted, not resent); then one every `--fault-every` seconds once the first scan has decided, in this
order, repeated:
  serve_kill    kill -9 of the serving process group while a scan-and-trade run is in flight
  feed_drop     kill -9 of the stream (its replay server and client): the feed is gone until the
                supervisor restarts it
  mlflow_down   kill -9 of the MLflow server
  venue_errors  the venue answers 500 to every read of one reconciliation and times out on the next
                (more failures than the adapter retries), and times out once on the next order sent
Every fault must reach the Slack receiver. At the end the market is frozen, one more management run
books what filled, the stack gets SIGTERM, and the checks run against the store and the venue:
  candles   every replayed 1m bar that had closed is in the store once, under its re-timed minute;
            none missing, none extra, none twice
  orders    no venue order is journalled twice, none at the venue is unknown to the journal, no
            intent produced two venue orders
  ledger    the journal's fills are exactly the venue's trades; net holdings equal venue balances
  alerts    each fault has an alert naming it after the fault's time
Prints a table, writes <var>/rehearsal.json, exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ("serve_kill", "feed_drop", "mlflow_down", "venue_errors")
# What the alert of each fault says (core.alerts texts: the supervisor's child-exit alert, the flows'
# failure hook, the venue's in-doubt alert).
ALERT_SIGNS: dict[str, tuple[str, ...]] = {
    "serve_kill": ("serve exited with code -9",),
    "feed_drop": ("stream exited with code -9",),
    "mlflow_down": ("mlflow ui exited with code -9",),
    "venue_errors": ("manage-positions", "scan-and-trade", "in doubt", "answer was lost"),
    "order_timeout": ("answer was lost", "in doubt"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the local Slack receiver -----------------------------------------------------------------------


class SlackReceiver:
    """A loopback incoming-webhook endpoint: records every alert's text with its arrival time."""

    def __init__(self) -> None:
        self.alerts: list[tuple[float, str]] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    text = json.dumps(json.loads(body))
                except ValueError:
                    text = body.decode(errors="replace")
                received.append((time.time(), text))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/services/T000/B000/rehearsal"

    def __enter__(self) -> SlackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the replayed market, for the venue double ------------------------------------------------------


class ReplayedMarket:
    """The venue's prices follow the replay: a pair's mark is the close of its newest re-timed bar that
    has closed on the wall clock (1m where recorded, else the detection timeframe)."""

    def __init__(self, settings: Any, offset: timedelta) -> None:
        from core.data_import import load_shipped

        anchor = settings.feed.replay_anchor
        symbols = list(settings.data.symbols)
        one_m = load_shipped(settings.data.data_dir, "1m", symbols).with_columns(step=pl.lit(60))
        tf = settings.data.detection_timeframe
        hours = load_shipped(settings.data.data_dir, tf, symbols, anchor - timedelta(days=3), anchor + timedelta(days=30))
        frames = [one_m.select("symbol", "ts", "close", "step"),
                  hours.filter(~pl.col("symbol").is_in(one_m["symbol"].unique().implode()))
                  .with_columns(step=pl.lit(3600)).select("symbol", "ts", "close", "step")]
        self.bars = (pl.concat(frames).with_columns(
            closes=(pl.col("ts") + offset).dt.epoch("s") + pl.col("step")).sort("closes"))
        self.quote = settings.execution.hummingbot_quote

    def marks(self, now: float) -> dict[str, float]:
        done = self.bars.filter(pl.col("closes") <= now)
        last = done.group_by("symbol").agg(pl.col("close").last())
        return {f"{s}-{self.quote}": float(c) for s, c in last.iter_rows()}


# --- the stack ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    at: float
    detail: str = ""
    alerted_after_s: float | None = None
    run_id: str = ""  # serve_kill: the scan run that was in flight
    run_final_state: str = ""  # ... and the state the UI ends up showing for it


@dataclass
class Rehearsal:
    minutes: float
    started: str = ""
    seconds_to_first_decision: float | None = None
    faults: list[Fault] = field(default_factory=list)
    scans: dict[str, int] = field(default_factory=dict)
    manages: dict[str, int] = field(default_factory=dict)
    candles: dict[str, int] = field(default_factory=dict)
    orders: dict[str, int] = field(default_factory=dict)
    ledger: dict[str, Any] = field(default_factory=dict)
    alerts_received: int = 0
    checks: dict[str, bool] = field(default_factory=dict)


class Prefect:
    """The few REST calls the rehearsal needs from the Prefect server."""

    def __init__(self, api: str) -> None:
        self.http = httpx.Client(base_url=api, timeout=30)

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 200}
        r = self.http.post("/flow_runs/filter", json=body)
        r.raise_for_status()
        return list(r.json())

    def run(self, run_id: str) -> dict[str, Any]:
        r = self.http.get(f"/flow_runs/{run_id}")
        r.raise_for_status()
        return dict(r.json())

    def create_run(self, flow: str, deployment: str) -> str:
        d = self.http.get(f"/deployments/name/{flow}/{deployment}")
        d.raise_for_status()
        r = self.http.post(f"/deployments/{d.json()['id']}/create_flow_run", json={})
        r.raise_for_status()
        return str(r.json()["id"])

    def task_runs(self, run_id: str) -> int:
        r = self.http.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})
        r.raise_for_status()
        return len(r.json())

    def artifacts(self, key: str) -> list[dict[str, Any]]:
        r = self.http.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC",
                                                      "limit": 200})
        r.raise_for_status()
        return list(r.json())


def children(pid: int) -> dict[str, int]:
    """The supervisor's children by role: pid (each leads its own process group)."""
    roles = {"deployments.serve": "serve", "streaming_ingest": "stream", "mlflow": "mlflow", "server start": "prefect"}
    out: dict[str, int] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid != pid:
            continue
        for sign, role in roles.items():
            if sign in cmd:
                out[role] = int(p.name)
    return out


def kill_group(pid: int | None) -> bool:
    """SIGKILL a child's process group; False when there is none to kill (never killpg(0): that is our own)."""
    if not pid or pid <= 0:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def wait_for(pred: Any, timeout: float, poll: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            got = pred()
            if got:
                return got
        time.sleep(poll)
    return None


def rehearse(minutes: float, fault_every: float, var: Path, *, log: Any = print) -> Rehearsal:
    from core.settings import load_settings
    from tests.hummingbot_server import ExchangeState, HummingbotTestServer, kraken_rule

    var.mkdir(parents=True, exist_ok=True)
    ports = {k: free_port() for k in ("prefect", "mlflow", "replay", "replay_rest")}
    out = Rehearsal(minutes=minutes, started=datetime.now(UTC).isoformat(timespec="seconds"))
    base = load_settings()
    capital = base.risk.capital
    state = ExchangeState(balances={base.execution.hummingbot_quote: capital}, latency=timedelta(seconds=0.5),
                          delay=4.0)
    state.rules = {f"{s}-{base.execution.hummingbot_quote}": kraken_rule(f"{s}-{base.execution.hummingbot_quote}")
                   for s in base.data.symbols}
    with SlackReceiver() as slack, HummingbotTestServer(state) as hb:
        env = {
            # `mlcrypto up` as started from a clean shell: it configures Prefect itself (an inherited
            # PREFECT_HOME or services switch would point its server elsewhere).
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "MLCRYPTO_DATA__VAR_DIR": str(var),
            "MLCRYPTO_FEED__SOURCE": "replay",
            "MLCRYPTO_FEED__REPLAY_PORT": str(ports["replay"]),
            "MLCRYPTO_FEED__REPLAY_REST_PORT": str(ports["replay_rest"]),
            "MLCRYPTO_SCHEDULE__PREFECT_PORT": str(ports["prefect"]),
            "MLCRYPTO_SCHEDULE__MLFLOW_UI_URL": f"http://127.0.0.1:{ports['mlflow']}",
            "MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL": slack.url,
            "MLCRYPTO_EXECUTION__MODE": "live",
            "MLCRYPTO_EXECUTION__CONFIRM_LIVE": "true",
            "MLCRYPTO_EXECUTION__HUMMINGBOT_URL": hb.url,
            "MLCRYPTO_EXECUTION__HUMMINGBOT_USERNAME": state.username,
            "MLCRYPTO_EXECUTION__HUMMINGBOT_PASSWORD": state.password,
            "MLCRYPTO_EXECUTION__TIMEOUT_SECONDS": "2",
            "MLCRYPTO_EXECUTION__MAX_RETRIES": "2",
            "MLCRYPTO_EXECUTION__BACKOFF_SECONDS": "0.2",
        }
        api = f"http://127.0.0.1:{ports['prefect']}/api"
        # The first order the stack sends times out (the double answers after 4 s; the client waits 2 s):
        # the venue must find it at the venue and adopt it, never send it twice, and say so.
        state.fail_next("place", "timeout_after_place")
        t0 = time.time()
        out.faults.append(Fault("order_timeout", t0, "the first order send times out (armed before start-up)"))
        up_log = (var / "up.log").open("ab")
        up = subprocess.Popen([str(Path(sys.executable).parent / "mlcrypto"), "up"], cwd=ROOT, env=env,
                              stdout=up_log, stderr=subprocess.STDOUT, start_new_session=True)
        log(f"mlcrypto up started (pid {up.pid}), var {var}, Prefect UI http://127.0.0.1:{ports['prefect']}")
        stop_market = threading.Event()
        try:
            prefect = Prefect(api)
            settings = load_settings(data={"var_dir": var})
            offset = wait_for(lambda: _stored_offset(settings), timeout=300, poll=2)
            if offset is None:
                raise RuntimeError(f"the stream never stored its replay offset; see {var / 'logs'}")
            market = ReplayedMarket(settings, offset)
            threading.Thread(target=_follow_market, args=(state, market, stop_market), daemon=True).start()
            log(f"replay offset {offset}; the venue follows the replayed market")

            first = wait_for(lambda: prefect.artifacts("scan-decisions"), timeout=900, poll=5)
            if first:
                made = datetime.fromisoformat(first[-1]["created"]).timestamp()  # newest first
                out.seconds_to_first_decision = round(made - t0, 1)
                log(f"first gated decision {out.seconds_to_first_decision:.0f} s after `mlcrypto up`")
            end = t0 + minutes * 60
            k = 0
            while time.time() + fault_every < end:
                time.sleep(max(0.0, min(fault_every, end - time.time())))
                kind = FAULTS[k % len(FAULTS)]
                k += 1
                fault = _inject(kind, up.pid, prefect, state)
                out.faults.append(fault)
                log(f"{datetime.now(UTC):%H:%M:%S} fault {kind}: {fault.detail}")
            time.sleep(max(0.0, end - time.time()))
            # Freeze the market, let one more management run book what filled, then stop the stack.
            stop_market.set()
            frozen = time.time()
            wait_for(lambda: any(_after(r, frozen + 5) and r["state_type"] == "COMPLETED"
                                 for r in prefect.runs("manage-positions")), timeout=300, poll=5)
            for f in out.faults:  # a run killed mid-scan must not stay "Running" (zombie automation: Crashed)
                if f.run_id:
                    f.run_final_state = str(wait_for(lambda f=f: _final(prefect.run(f.run_id)), timeout=240, poll=5))
            out.scans = _states(prefect.runs("scan-and-trade"))
            out.manages = _states(prefect.runs("manage-positions"))
        finally:
            stop_market.set()
            with contextlib.suppress(ProcessLookupError):
                up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                kill_group(up.pid)
            up_log.close()
        state.settle()
        out.alerts_received = len(slack.alerts)
        for f in out.faults:
            f.alerted_after_s = alert_delay(f, slack.alerts)
        (var / "alerts.jsonl").write_text("".join(json.dumps({"at": t, "text": x}) + "\n" for t, x in slack.alerts))
        _check_store(out, settings, state, stopped=time.time())
    out.checks["faults alerted"] = bool(out.faults) and all(f.alerted_after_s is not None for f in out.faults)
    killed = [f for f in out.faults if f.run_id]
    out.checks["killed runs shown Crashed"] = all(f.run_final_state == "Crashed" for f in killed)
    out.checks["decided within 15 min"] = out.seconds_to_first_decision is not None and out.seconds_to_first_decision <= 900
    (var / "rehearsal.json").write_text(json.dumps(asdict(out), indent=2, default=str))
    return out


def _stored_offset(settings: Any) -> timedelta | None:
    from core.feeds.replay_live import OFFSET_RECORD
    from core.storage.duckdb_store import DuckDBStore

    if not settings.duckdb_path.exists():
        return None
    store = DuckDBStore(settings.duckdb_path)  # a moment's use; the stack's processes wait for it
    try:
        saved = dict(store.get_records(OFFSET_RECORD)).get(settings.feed.replay_anchor.isoformat())
    finally:
        store.close()
    return timedelta(seconds=saved["offset_seconds"]) if saved else None


def _follow_market(state: Any, market: ReplayedMarket, stop: threading.Event) -> None:
    last: dict[str, float] = {}
    while not stop.is_set():
        for pair, price in market.marks(time.time()).items():
            if last.get(pair) != price:
                state.set_mark(pair, price)
                last[pair] = price
        stop.wait(2.0)


def _after(run: dict[str, Any], at: float) -> bool:
    start = run.get("start_time")
    return bool(start) and datetime.fromisoformat(start).timestamp() >= at


def _final(run: dict[str, Any]) -> str | None:
    return str(run["state_name"]) if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def _states(runs: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(r["state_name"]) for r in runs))


def _inject(kind: str, up_pid: int, prefect: Prefect, state: Any) -> Fault:
    kids = children(up_pid)
    if kind == "serve_kill":
        run_id = prefect.create_run("scan-and-trade", "scan-and-trade")
        # Mid-scan: the run is RUNNING and has started its first tasks.
        mid = wait_for(lambda: prefect.run(run_id)["state_type"] == "RUNNING" and prefect.task_runs(run_id) >= 2,
                       timeout=240, poll=0.2)
        at = time.time()
        killed = kill_group(children(up_pid).get("serve", kids.get("serve")))
        ran = prefect.task_runs(run_id)
        what = "when serve was killed" if killed else "but NO serve process was found to kill"
        return Fault(kind, at, run_id=run_id, detail=f"scan run {run_id[:8]} {'mid-scan' if mid else 'NOT yet running'} "
                               f"({ran} task runs started) {what}")
    if kind == "feed_drop":
        at = time.time()
        killed = kill_group(kids.get("stream"))
        return Fault(kind, at, "stream process group killed" if killed else "NO stream process to kill (restarting?)")
    if kind == "mlflow_down":
        at = time.time()
        killed = kill_group(kids.get("mlflow"))
        return Fault(kind, at, "MLflow server process group killed" if killed else "NO MLflow process to kill (restarting?)")
    at = time.time()
    # One reconciliation's reads fail past the adapter's retries (max_retries=2: 3 attempts), then
    # the next reads time out (the double answers after 4 s; the client waits 2 s), then an order times out.
    state.fail_next("active", *["500_before"] * 3, *["timeout_after_place"] * 3)
    state.fail_next("place", "timeout_after_place")
    return Fault(kind, at, "venue: 3x 500 then 3x timeout on active orders; 1 order send times out")


def candle_diff(src: pl.DataFrame, got: pl.DataFrame) -> dict[str, int]:
    """The store's bars (`got`) against the replayed source (`src`), both (symbol, ts, close)."""
    keys = ["symbol", "ts"]
    return {
        "replayed_closed": src.height,
        "stored": got.height,
        "missing": src.join(got, on=keys, how="anti").height,
        "extra": got.join(src, on=keys, how="anti").height,
        "doubled": got.height - got.unique(keys).height,
        "wrong_close": src.join(got.unique(keys), on=keys).filter(
            (pl.col("close") - pl.col("close_right")).abs() > 1e-9).height,
    }


def alert_delay(fault: Fault, alerts: list[tuple[float, str]]) -> float | None:
    """Seconds from the fault to the first alert naming it, or None when none came."""
    hit = [t for t, text in alerts if t >= fault.at and any(s in text for s in ALERT_SIGNS[fault.kind])]
    return round(min(hit) - fault.at, 1) if hit else None


def _check_store(out: Rehearsal, settings: Any, state: Any, stopped: float) -> None:
    from core.data_import import load_shipped
    from core.storage.duckdb_store import DuckDBStore
    from core.venues.order_journal import OrderJournal

    offset = _stored_offset(settings)
    assert offset is not None
    store = DuckDBStore(settings.duckdb_path)
    try:
        rec = load_shipped(settings.data.data_dir, "1m", list(settings.data.symbols))
        syms = rec["symbol"].unique().to_list()
        cutoff = datetime.fromtimestamp(stopped - 120, UTC)  # minutes closed well before the stop
        src = (rec.with_columns(ts=(pl.col("ts") + offset).dt.cast_time_unit("us").dt.convert_time_zone("UTC"))
               .filter(pl.col("ts") + timedelta(minutes=1) <= cutoff).select("symbol", "ts", "close"))
        first = src["ts"].min()
        got = store.read_many(syms, "1m", first, cutoff)
        got = (got.with_columns(ts=pl.col("ts").dt.cast_time_unit("us").dt.convert_time_zone("UTC"))
               .filter(pl.col("ts") + timedelta(minutes=1) <= cutoff).select("symbol", "ts", "close"))
        out.candles = {**candle_diff(src, got),
                       "streamed_live": src.filter(pl.col("ts") >= datetime.fromisoformat(out.started)).height}
        journal = OrderJournal(store)
        by_venue = Counter(o.venue_order_id for o in journal.orders() if o.venue_order_id)
        at_venue = state.orders_at_venue()
        intents = journal.intents()
        out.orders = {"intents": len(intents), "venue_orders": len(at_venue),
                      "doubled": sum(n - 1 for n in by_venue.values() if n > 1),
                      "unknown_at_venue": sum(1 for o in at_venue if o["order_id"] not in by_venue),
                      "adopted_after_lost_answer": sum(1 for i in intents if i.outcome == "adopted"),
                      "fills": len(journal.fills()), "venue_trades": len(state.trades)}
        held = journal.net_holdings()
        bases = sorted({s for s in held} | {k for k in state.balances if k != settings.execution.hummingbot_quote})
        diff = {b: held.get(b, 0.0) - state.balances.get(b, 0.0) for b in bases}
        fills_equal = {f.fill_id for f in journal.fills()} == {t["trade_id"] for t in state.trades}
        out.ledger = {"fills_equal_trades": fills_equal, "max_holding_diff": max((abs(v) for v in diff.values()), default=0.0),
                      "holdings": {b: round(held.get(b, 0.0), 10) for b in bases}}
    finally:
        store.close()
    out.checks["no candle lost"] = out.candles["missing"] == 0 and out.candles["wrong_close"] == 0
    out.checks["no candle doubled"] = out.candles["doubled"] == 0 and out.candles["extra"] == 0
    out.checks["no order doubled"] = out.orders["doubled"] == 0 and out.orders["unknown_at_venue"] == 0
    out.checks["ledger = venue"] = fills_equal and out.ledger["max_holding_diff"] <= 1e-9


def report(r: Rehearsal) -> str:
    lines = [f"rehearsal: {r.minutes:g} min from {r.started}; first gated decision "
             f"{r.seconds_to_first_decision} s after `mlcrypto up`",
             f"scan-and-trade runs {r.scans}; manage-positions runs {r.manages}",
             f"candles {r.candles}", f"orders {r.orders}", f"ledger {r.ledger}",
             f"alerts received {r.alerts_received}", "faults:"]
    for f in r.faults:
        alerted = f"alerted after {f.alerted_after_s} s" if f.alerted_after_s is not None else "NOT ALERTED"
        final = f"; the run ended {f.run_final_state}" if f.run_id else ""
        lines.append(f"  {datetime.fromtimestamp(f.at, UTC):%H:%M:%S} {f.kind:<13} {alerted:<22} {f.detail}{final}")
    lines += [f"  {'PASS' if ok else 'FAIL'}  {name}" for name, ok in r.checks.items()]
    return "\n".join(lines)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rehearse", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long the stack runs (default 30)")
    p.add_argument("--fault-every", type=float, default=240.0, help="seconds between faults (default 240)")
    p.add_argument("--var", type=Path, default=None, help="scratch var dir (default var/rehearsal/<time>)")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # the `finally` stops the stack it started
    var = a.var or ROOT / "var" / "rehearsal" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    r = rehearse(a.minutes, a.fault_every, var, log=lambda m: print(m, flush=True))
    print(report(r))
    print(f"written: {var / 'rehearsal.json'}")
    return 0 if r.checks and all(r.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
