"""The backtest task: one call of the engine (core.backtest.session) over stored candles, with its report."""

from __future__ import annotations

from datetime import datetime
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
    from core.scoring import RuleOnlyScorer

    s = rt.settings
    scorer = rt.get_scorer() if use_ml else RuleOnlyScorer(s)
    observe = getattr(scorer, "observe_bars", None)
    _, report = run_session(
        rt.store, s, kind=kind, symbols=symbols, timeframe=timeframe or s.data.detection_timeframe,
        start=start, end=end, exit_timeframe=exit_timeframe, scorer=scorer,
        on_loaded=(lambda inputs: observe(inputs.bars)) if observe else None,
    )
    lines = summary_lines(report)
    get_run_logger().info("backtest %s:\n%s", report.run_id, "\n".join(lines))
    create_markdown_artifact(
        key=f"{kind}-report".replace("_", "-"),
        markdown=f"## {kind} {report.run_id}\n\n```\n" + "\n".join(lines) + f"\n```\n\nReport: `{report.directory}`",
        description=f"{kind} summary ({'ML champion' if use_ml else 'rule-only'})",
    )
    return report
