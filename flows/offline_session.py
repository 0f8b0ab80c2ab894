"""offline_session: the main job (`mlcrypto run`), offline on a fresh machine.

1. init the store, import the shipped 1h (and 5m, for exits) candles up to the replay start;
2. train the models on the history before `ml.train_end` (weekly_retrain as a subflow: labels ->
   train -> evaluate -> register challenger -> promote), or keep the champions already registered;
3. replay the last `replay_days` of the shipped 1h bars hour by hour: each step upserts the bars that
   closed (ingest), then runs manage-positions and scan-and-trade as Prefect flow runs at that
   simulated time, so the paper book trades exactly as the deployed flows would;
4. the headline: the same engine over the whole out-of-sample window [train_end, replay end), once
   with the champion models and once rule-only, and the comparison report (terminal, HTML, PNG).

The replay window ends where every traded coin still has bars (some coins' history stops earlier;
see the data README), so no coin is gate-failed for merely having no data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from core.domain import timeframe_duration
from flows.common import flow_runtime, parse_when
from flows.scan_and_trade import scan_and_trade
from flows.weekly_retrain import weekly_retrain
from tasks.backtest import run_backtest
from tasks.data import import_history, ingest_bars, init_store
from tasks.ml import model_versions
from tasks.runtime import Runtime
from tasks.trading import manage_positions, reconcile_orders


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
    from tasks.trading import REGIME_KIND

    removed = reset_paper_ledger(rt.store)
    keys = [k for k, _ in rt.store.get_records(REGIME_KIND)]
    if keys:
        removed += rt.store.delete_records(REGIME_KIND, keys)
    rt.drop_portfolio()
    return removed


@task(name="load_replay_tape", cache_policy=NO_CACHE)
def load_replay_tape(rt: Runtime, symbols: list[str], start: datetime, end: datetime) -> pl.DataFrame:
    """The recorded bars the replay feeds in, hour by hour."""
    from core.data_import import load_shipped

    return load_shipped(rt.settings.data.data_dir, rt.settings.data.detection_timeframe, symbols, start, end)


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


@flow(name="offline-session", validate_parameters=False)
def offline_session(
    days: int | None = None,
    step_hours: int | None = None,
    symbols: list[str] | None = None,
    end: datetime | str | None = None,
    train: str = "auto",
    reset: bool = True,
    runtime: Runtime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """train: auto (train when a strategy has no champion) | always | never (rule-only defaults).
    `progress(stage, done, total)` is for the CLI's terminal (in-process callers only)."""
    import time

    logger = get_run_logger()
    with flow_runtime(runtime, exclusive=True) as rt:
        s = rt.settings
        syms = list(symbols or s.data.symbols)
        tf = s.data.detection_timeframe
        dur = timeframe_duration(tf)
        step = timedelta(hours=step_hours or s.schedule.replay_step_hours)
        init_store(rt)
        if reset:
            reset_paper_book(rt)
        tell = progress or (lambda stage, done, total: None)
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
        logger.info("champion models: %s", champions)

        tape = load_replay_tape(rt, syms, start, stop)
        began = time.perf_counter()
        now, steps = start, 0
        reconcile_orders(rt, now=start)
        total = -((start - stop) // step)  # ceil: the last step may be shorter
        while now < stop:
            tell("replay", steps, total)
            nxt = min(now + step, stop)
            ingest_bars(rt, tape.filter((pl.col("ts") >= now) & (pl.col("ts") + dur <= nxt)))
            # Management as a task of this flow (the deployed every-minute flow wraps the same task),
            # scan-and-trade as its own flow run: one flow run per simulated step keeps the overhead low.
            manage_positions(rt, nxt)
            scan_and_trade(symbols=syms, now=nxt, runtime=rt)
            now, steps = nxt, steps + 1
        paper = paper_summary(rt, start, stop, steps, time.perf_counter() - began)
        tell("backtest", 0, 2)
        ml = run_backtest(rt, syms, oos_start, stop, kind="ml", use_ml=True)
        tell("backtest", 1, 2)
        rule = run_backtest(rt, syms, oos_start, stop, kind="rule", use_ml=False)
        out = _report(rt, ml, rule, paper, champions)
        create_markdown_artifact(key="session-report", markdown=out["markdown"], description="Main job: ML vs rule-only")
        return out


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
    lines = ["| metric | ML | rule-only |", "|---|---|---|"] + [
        f"| {r['metric']} | {fmt(r['metric'], r['ml'])} | {fmt(r['metric'], r['rule_only'])} |" for r in rep.comparison
    ]
    md = "\n".join(["# Main job", "## Out-of-sample backtest", *lines, "## Paper replay (Prefect flow runs)",
                    *[f"- {k}: {v}" for k, v in paper.items()], f"\nReport: `{rep.html}`"])
    return {"html": str(rep.html), "png": str(rep.png), "comparison": rep.comparison, "paper": paper, "markdown": md,
            "ml_run": ml.run_id, "rule_run": rule.run_id}
