"""The backtest task: one call of the engine (core.backtest.session) over stored candles, with its report."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.runtime import Runtime


class HistoricalContextScorer:
    """Gives each historical signal the coin/market context AT ITS OWN BAR before the champion scores
    it (models.features.context_features uses bars <= t only). Without it a backtest would score every
    signal with the context of the window's last bar, i.e. with information from its future."""

    def __init__(self, inner: Any, bars: pl.DataFrame, settings: Any) -> None:
        from models.features import context_features

        ctx = context_features(bars, settings)
        names = [c for c in ctx.columns if c not in ("symbol", "ts")]
        self._inner = inner
        self._names = names
        self._ctx = {(r[0], r[1]): dict(zip(names, r[2:], strict=True)) for r in ctx.select("symbol", "ts", *names).iter_rows()}

    def _at(self, symbol: str, ts: Any) -> dict[str, float]:
        """The context at that bar; a missing value stays missing (NaN), never the scorer's latest context."""
        row = self._ctx.get((symbol, ts), {})
        return {n: math.nan if row.get(n) is None else float(row[n]) for n in self._names}

    def score(self, signals: list[Any]) -> list[Any]:
        enriched = [
            s.model_copy(update={"features": {**self._at(s.symbol, s.ts), **s.features}})
            for s in signals
        ]
        return self._inner.score(enriched)


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
    holder: dict[str, Any] = {}

    class _Deferred:
        """Built once the session has loaded its bars (the context needs them)."""

        def score(self, signals: list[Any]) -> list[Any]:
            return holder["scorer"].score(signals)

    def on_loaded(inputs: Any) -> None:
        holder["scorer"] = HistoricalContextScorer(rt.get_scorer(), inputs.bars, s) if use_ml else RuleOnlyScorer(s)

    _, report = run_session(
        rt.store, s, kind=kind, symbols=symbols, timeframe=timeframe or s.data.detection_timeframe,
        start=start, end=end, exit_timeframe=exit_timeframe, scorer=_Deferred(), on_loaded=on_loaded,
    )
    lines = summary_lines(report)
    get_run_logger().info("backtest %s:\n%s", report.run_id, "\n".join(lines))
    create_markdown_artifact(
        key=f"{kind}-report".replace("_", "-"),
        markdown=f"## {kind} {report.run_id}\n\n```\n" + "\n".join(lines) + f"\n```\n\nReport: `{report.directory}`",
        description=f"{kind} summary ({'ML champion' if use_ml else 'rule-only'})",
    )
    return report
