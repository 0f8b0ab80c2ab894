"""The backtest task: one call of the engine (core.backtest.session) over stored candles, with its report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.runtime import Runtime


@task(name="run_backtest", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def run_backtest(
    rt: Runtime,
    symbols: list[str],
    start: datetime,
    end: datetime,
    *,
    kind: str = "backtest",
    use_ml: bool = False,
    exit_timeframe: str | None = "5m",
    timeframe: str | None = None,
) -> Any:
    """Replay [start, end) through detect -> score -> manage -> execute; writes the report files
    (HTML/PNG/parquet under reports_dir/<run-id>/) and returns core.backtest.report.Report."""
    from core.backtest.report import summary_lines
    from core.backtest.session import run_session
    from models.context_scorer import HistoricalContextScorer

    s = rt.settings
    _, report = run_session(
        rt.store, s, kind=kind, symbols=symbols, timeframe=timeframe or s.data.detection_timeframe,
        start=start, end=end, exit_timeframe=exit_timeframe,
        # ML: the champions, each signal with the context at its own bar (built from the loaded bars).
        scorer=(lambda bars: HistoricalContextScorer(rt.get_scorer(), bars, s)) if use_ml else None,
    )
    lines = summary_lines(report)
    get_run_logger().info("backtest %s:\n%s", report.run_id, "\n".join(lines))
    create_markdown_artifact(
        key=f"{kind}-report".replace("_", "-"),
        markdown=f"## {kind} {report.run_id}\n\n```\n" + "\n".join(lines) + f"\n```\n\nReport: `{report.directory}`",
        description=f"{kind} summary ({'ML champion' if use_ml else 'rule-only'})",
    )
    return report


@task(name="plan_replay", cache_policy=NO_CACHE)
def plan_replay(rt: Runtime, symbols: list[str], days: int, end: datetime | None) -> tuple[datetime, datetime]:
    """[start, end) of the replay: `days` before the last hour every traded coin has a bar for."""
    from core.backtest.session import replay_window

    return replay_window(rt.settings, symbols, timedelta(days=days), end)


@task(name="load_replay_tape", cache_policy=NO_CACHE)
def load_replay_tape(rt: Runtime, symbols: list[str], start: datetime, stop: datetime) -> Any:
    """The shipped detection-timeframe bars the replay feeds in, hour by hour (core.backtest.session.ReplayTape)."""
    from core.backtest.session import ReplayTape

    return ReplayTape.load(rt.settings, symbols, start, stop)


@task(name="last_window", cache_policy=NO_CACHE)
def last_window(rt: Runtime, symbols: list[str], days: int) -> tuple[datetime, datetime]:
    """The last `days` days up to the newest stored bar of these symbols."""
    from core.backtest.session import last_window as window

    return window(rt.store, symbols, rt.settings.data.detection_timeframe, days)


@task(name="session_report", cache_policy=NO_CACHE)
def session_report(rt: Runtime, ml: Any, rule: Any, paper: dict[str, Any], champions: dict[str, Any]) -> dict[str, Any]:
    """The main job's closing report (core.session_report): ML vs rule-only vs buy-and-hold BTC, the replay."""
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
                    *[f"- {k}: {fmt(k, v)}" for k, v in paper.items()], f"\nReport: `{rep.html}`"])
    return {"html": str(rep.html), "png": str(rep.png), "comparison": rep.comparison, "paper": paper, "markdown": md,
            "ml_run": ml.run_id, "rule_run": rule.run_id}
