"""Write a backtest's artifacts under <reports_dir>/<run_id>/ with fixed names, and render its tables.

Files: summary.json, by_strategy.csv, by_symbol.csv, trades.parquet, trades.csv, decisions.parquet,
fills.parquet, equity.parquet, regime_changes.parquet, equity.png (equity + drawdown), report.html (self-contained: the PNG is
embedded as base64 next to the tables).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from core.backtest.engine import BacktestResult
from core.backtest.metrics import group_table, summary
from core.backtest.plots import equity_drawdown_png
from core.settings import Settings

ARTIFACTS = (
    "summary.json", "by_strategy.csv", "by_symbol.csv", "trades.parquet", "trades.csv", "decisions.parquet",
    "fills.parquet", "equity.parquet", "regime_changes.parquet", "equity.png", "report.html",
)


@dataclass(frozen=True)
class Report:
    run_id: str
    directory: Path
    summary: dict
    by_strategy: pl.DataFrame
    by_symbol: pl.DataFrame


def build_report(result: BacktestResult, settings: Settings) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    cap = settings.risk.capital
    summ = summary(result.trades, result.equity, cap, result.start, result.end)
    summ |= {
        "timeframe": result.timeframe,
        "symbols": len(result.symbols),
        "bars": result.bars,
        "signals": result.signals,
        "decisions_taken": int(result.decisions.get_column("taken").sum()) if result.decisions.height else 0,
        "settings_fingerprint": result.settings_fingerprint,
        "scoring": _scoring_source(result.decisions),
        "skips_by_code": skips_by_code(result.decisions),
        "seconds": round(result.seconds, 3),
    }
    by_strategy = group_table(result.trades, "strategy", cap, result.start, result.end)
    by_symbol = group_table(result.trades, "symbol", cap, result.start, result.end)
    return summ, by_strategy, by_symbol


def skips_by_code(decisions: pl.DataFrame) -> dict[str, int]:
    """Skipped signals per core.domain.ReasonCode, most first."""
    if decisions.height == 0:
        return {}
    counts = decisions.filter(~pl.col("taken")).group_by("reason").len().sort(["len", "reason"], descending=[True, False])
    return {str(r): int(n) for r, n in counts.iter_rows()}


def _scoring_source(decisions: pl.DataFrame) -> str:
    if decisions.height == 0:
        return "no decisions"
    if decisions.get_column("rule_only").all():
        return "rule-only defaults (no champion model)"
    versions = sorted(v for v in decisions.get_column("model_version").unique().to_list() if v)
    return f"model {', '.join(versions)}"


def write_report(result: BacktestResult, settings: Settings, run_id: str) -> Report:
    out = settings.reports_dir / run_id
    out.mkdir(parents=True, exist_ok=True)
    summ, by_strategy, by_symbol = build_report(result, settings)
    (out / "summary.json").write_text(json.dumps(summ | {"run_id": run_id}, indent=2, default=str) + "\n")
    by_strategy.write_csv(out / "by_strategy.csv")
    by_symbol.write_csv(out / "by_symbol.csv")
    result.trades.write_parquet(out / "trades.parquet")
    result.trades.write_csv(out / "trades.csv")
    result.decisions.write_parquet(out / "decisions.parquet")
    result.fills.write_parquet(out / "fills.parquet")
    result.equity.write_parquet(out / "equity.parquet")
    result.regime_changes.write_parquet(out / "regime_changes.parquet")
    png = equity_drawdown_png(result.equity, settings.risk.capital, out / "equity.png", f"backtest {run_id}")
    (out / "report.html").write_text(_html(run_id, summ, by_strategy, by_symbol, png.read_bytes()))
    return Report(run_id, out, summ, by_strategy, by_symbol)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.2f}"
    return str(v)


def _table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in frame.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _html(run_id: str, summ: dict, by_strategy: pl.DataFrame, by_symbol: pl.DataFrame, png: bytes) -> str:
    img = base64.b64encode(png).decode()
    items = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summ.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>backtest {html.escape(run_id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}</style></head>
<body><h1>Backtest {html.escape(run_id)}</h1>
<h2>Summary</h2><table>{items}</table>
<h2>Equity and drawdown</h2><img alt="equity and drawdown" src="data:image/png;base64,{img}">
<h2>Per strategy</h2>{_table(by_strategy)}
<h2>Per coin</h2>{_table(by_symbol)}
</body></html>
"""


def summary_lines(report: Report) -> list[str]:
    """A short plain-text rendering for logs."""
    s = report.summary
    return [
        f"run {report.run_id}: {s['trades']} trades, P&L {s['pnl']:.2f}, return {s['total_return']:.2%}, "
        f"max DD {s['max_drawdown']:.2%}, Sharpe {_fmt(s['sharpe'])} [{s['scoring']}]",
        f"artifacts in {report.directory}",
    ]
