"""offline_session: the main job (`mlcrypto run`), offline on a fresh machine, in three stages.

1. prepare-session: init the store, a fresh paper book, import the shipped 1h (and 5m, for exits)
   candles up to the replay start; train the models on the history before `ml.train_end`
   (weekly-retrain as a subflow: labels -> train -> evaluate -> register challenger -> promote), or
   keep the champions already registered;
2. replay: the last `replay_days` of the shipped 1h bars hour by hour, one scan-and-trade flow run per
   simulated hour that upserts the bars that closed (ingest), brings the positions up to date on them
   (manage), then gates, detects, scores, decides, sizes and submits at that simulated time;
3. finish-session: the same engine over the whole out-of-sample window [train_end, replay end), once
   with the champion models and once rule-only, and the comparison report (terminal, HTML, PNG).

`offline_session` (the deployment) runs the stages as subflows of one run; `mlcrypto run` runs them as
top-level flow runs on one in-process runtime. The replay window ends where every traded coin still
has bars (some coins' history stops earlier; see the data README), so no coin is gate-failed for
merely having no data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.domain import timeframe_duration
from flows.common import flow_runtime, parse_when
from flows.hooks import ALERT_HOOKS
from flows.scan_and_trade import scan_and_trade
from flows.weekly_retrain import weekly_retrain
from tasks.backtest import run_backtest
from tasks.data import import_history, init_store
from tasks.ml import model_versions
from tasks.runtime import Runtime
from tasks.trading import reconcile_orders


@task(name="plan_replay", cache_policy=NO_CACHE)
def plan_replay(rt: Runtime, symbols: list[str], days: int, end: datetime | None) -> tuple[datetime, datetime]:
    """[start, end) of the replay: `days` before the last hour every traded coin has a bar for."""
    from core.data_import import load_shipped

    tf = rt.settings.data.detection_timeframe
    if end is None:
        last = load_shipped(rt.settings.data.data_dir, tf, symbols).group_by("symbol").agg(pl.col("ts").max())
        if last.is_empty():
            raise ValueError(f"no shipped {tf} bars for {symbols} in {rt.settings.data.data_dir}")
        end = last["ts"].min() + timeframe_duration(tf)
    return end - timedelta(days=days), end


@task(name="reset_paper_book", cache_policy=NO_CACHE)
def reset_paper_book(rt: Runtime) -> int:
    """The replay re-trades history: an earlier replay's paper ledger (and regime state) goes first."""
    from core.backtest.session import reset_paper_ledger
    from core.errors import ConfigError
    from tasks.trading import REGIME_KIND

    if rt.settings.execution.mode != "paper":  # replaying history must never reach a real venue
        raise ConfigError("the offline session replays history on the paper book only; set execution.mode=paper")
    removed = reset_paper_ledger(rt.store)
    keys = [k for k, _ in rt.store.get_records(REGIME_KIND)]
    if keys:
        removed += rt.store.delete_records(REGIME_KIND, keys)
    rt.drop_portfolio()
    return removed


@task(name="paper_summary", cache_policy=NO_CACHE)
def paper_summary(rt: Runtime, start: datetime, end: datetime, steps: int, seconds: float) -> dict[str, Any]:
    pf = rt.portfolio
    decisions = list(pf.decisions.values())
    trades = list(pf.trades.values())
    return {
        "window": f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC",
        "scan flow runs": steps,
        "decisions": len(decisions),
        "taken": sum(d.taken for d in decisions),
        "closed trades": len(trades),
        "open positions": len(pf.open_positions()),
        "realised P&L": round(pf.realised_pnl, 2),
        "fees": round(pf.fees_paid, 2),
        "equity": round(pf.equity(), 2),
        "replay seconds": round(seconds, 1),
    }


@dataclass(frozen=True)
class SessionPlan:
    symbols: list[str]
    start: datetime
    stop: datetime
    oos_start: datetime
    champions: dict[str, Any]


@flow(name="prepare-session", validate_parameters=False)
def prepare_session(
    days: int | None = None,
    symbols: list[str] | None = None,
    end: datetime | str | None = None,
    train: str = "auto",
    reset: bool = True,
    runtime: Runtime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> SessionPlan:
    """Init, fresh paper book, the replay window, the import, and the models (trained or loaded)."""
    tell = progress or _silent
    with flow_runtime(runtime, exclusive=True) as rt:
        s = rt.settings
        syms = list(symbols or s.data.symbols)
        tf = s.data.detection_timeframe
        init_store(rt)
        if reset:
            reset_paper_book(rt)
        start, stop = plan_replay(rt, syms, days or s.schedule.replay_days, parse_when(end))
        oos_start = datetime.fromisoformat(s.ml.train_end).replace(tzinfo=UTC)
        # Only what the flows and the engine read: the out-of-sample window plus the engine's warm-up
        # (training reads the shipped files directly). The replay adds the rest, hour by hour.
        tell("import", 0, 1)
        import_history(rt, sorted({tf, "5m"}), syms, oos_start - timedelta(days=40), start)
        strategies = ["dca", "swing", "channel"]
        champions = model_versions(rt, strategies) if train != "never" else {}
        if train == "always" or (train == "auto" and not all(champions.values())):
            tell("train", 0, 1)
            weekly_retrain(end=oos_start, runtime=rt)
            champions = model_versions(rt, strategies)
        get_run_logger().info("champion models: %s", champions)
        reconcile_orders(rt, now=start)
        return SessionPlan(syms, start, stop, oos_start, champions)


def replay(rt: Runtime, plan: SessionPlan, step: timedelta, progress: Callable[[str, int, int], None] | None = None) -> tuple[int, float]:
    """One scan-and-trade flow run per simulated step: it upserts the bars that closed in the step,
    brings the positions up to date on them, then scans. Called from a flow these are subflow runs;
    from `mlcrypto run` they are top-level flow runs (no subflow tracking task run: ~4x less overhead)."""
    import time

    from core.data_import import load_shipped

    tell = progress or _silent
    s = rt.settings
    dur = timeframe_duration(s.data.detection_timeframe)
    tape = load_shipped(s.data.data_dir, s.data.detection_timeframe, plan.symbols, plan.start, plan.stop)
    began = time.perf_counter()
    now, steps = plan.start, 0
    total = -((plan.start - plan.stop) // step)  # ceil: the last step may be shorter
    while now < plan.stop:
        tell("replay", steps, total)
        nxt = min(now + step, plan.stop)
        closed = tape.filter((pl.col("ts") >= now) & (pl.col("ts") + dur <= nxt))
        scan_and_trade(symbols=plan.symbols, now=nxt, manage=True, ingest=closed, runtime=rt)
        now, steps = nxt, steps + 1
    tell("replay", steps, total)
    return steps, time.perf_counter() - began


@flow(name="finish-session", validate_parameters=False)
def finish_session(
    plan: SessionPlan, steps: int, seconds: float, runtime: Runtime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The paper replay's summary, ML vs rule-only over the out-of-sample window, the report."""
    tell = progress or _silent
    with flow_runtime(runtime, exclusive=True) as rt:
        paper = paper_summary(rt, plan.start, plan.stop, steps, seconds)
        tell("backtest", 0, 2)
        ml = run_backtest(rt, plan.symbols, plan.oos_start, plan.stop, kind="ml", use_ml=True)
        tell("backtest", 1, 2)
        rule = run_backtest(rt, plan.symbols, plan.oos_start, plan.stop, kind="rule", use_ml=False)
        out = _report(rt, ml, rule, paper, plan.champions)
        create_markdown_artifact(key="session-report", markdown=out["markdown"], description="Main job: ML vs rule-only")
        return out


@flow(name="offline-session", validate_parameters=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def offline_session(
    days: int | None = None,
    step_hours: int | None = None,
    symbols: list[str] | None = None,
    end: datetime | str | None = None,
    train: str = "auto",
    reset: bool = True,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """The main job as one flow run (the deployment): prepare, replay, finish as subflows.
    train: auto (train when a strategy has no champion) | always | never (rule-only defaults)."""
    with flow_runtime(runtime, exclusive=True) as rt:
        plan = prepare_session(days, symbols, end, train, reset, runtime=rt)
        steps, seconds = replay(rt, plan, timedelta(hours=step_hours or rt.settings.schedule.replay_step_hours))
        return finish_session(plan, steps, seconds, runtime=rt)


def run_session(
    rt: Runtime, *, days: int | None = None, step_hours: int | None = None, train: str = "auto",
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """`mlcrypto run`: the same three stages as top-level flow runs (prepare, one scan-and-trade run per
    simulated hour, finish), all on one in-process runtime."""
    plan = prepare_session(days, train=train, runtime=rt, progress=progress)
    steps, seconds = replay(rt, plan, timedelta(hours=step_hours or rt.settings.schedule.replay_step_hours), progress)
    return finish_session(plan, steps, seconds, runtime=rt, progress=progress)


def _silent(stage: str, done: int, total: int) -> None:
    return None


def _report(rt: Runtime, ml: Any, rule: Any, paper: dict[str, Any], champions: dict[str, Any]) -> dict[str, Any]:
    from core.session_report import fmt, write_session_report

    s = rt.settings
    notes = [
        f"models trained on the history before {s.ml.train_end}; both backtests run on the later bars only",
        "champions: " + ", ".join(f"{k} v{v}" if v else f"{k}: none (rule-only defaults)" for k, v in champions.items()),
        f"settings fingerprint {s.fingerprint()}",
    ]
    directory = s.reports_dir / f"session-{s.fingerprint()}"
    rep = write_session_report(directory, ml_report=ml, rule_report=rule, paper=paper, capital=s.risk.capital, notes=notes)
    lines = ["| metric | ML | rule-only | buy-and-hold BTC |", "|---|---|---|---|"] + [
        f"| {r['metric']} | {fmt(r['metric'], r['ml'])} | {fmt(r['metric'], r['rule_only'])} "
        f"| {fmt(r['metric'], r.get('buy_and_hold_btc'))} |" for r in rep.comparison
    ]
    md = "\n".join(["# Main job", "## Out-of-sample backtest", *lines, "## Paper replay (Prefect flow runs)",
                    *[f"- {k}: {v}" for k, v in paper.items()], f"\nReport: `{rep.html}`"])
    return {"html": str(rep.html), "png": str(rep.png), "comparison": rep.comparison, "paper": paper, "markdown": md,
            "ml_run": ml.run_id, "rule_run": rule.run_id}
