"""The main job's closing report: ML vs rule-only vs buy-and-hold BTC on the same out-of-sample window,
plus the paper replay that ran as Prefect flow runs. One self-contained HTML page with a PNG comparing the
equity curves; each backtest keeps its own full report directory (core.backtest.report).

Buy-and-hold BTC (core.backtest.buy_and_hold) uses the same window (the ML backtest's start/end), capital
and detection-timeframe BTC bars: given as `btc_bars`, else read from the shipped files of
settings.data.data_dir; without BTC bars the column is empty and a note says why.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from core.backtest.buy_and_hold import BENCHMARK_SYMBOL, BuyAndHold, buy_and_hold
from core.errors import DataQualityError
from core.settings import Settings

ROWS = ("start", "end", "symbols", "signals", "decisions_taken", "trades", "win_rate", "pnl", "fees",
        "total_return", "sharpe", "max_drawdown", "exposure", "final_equity", "scoring", "skips_by_code")
PCT = {"win_rate", "total_return", "max_drawdown", "exposure"}


@dataclass(frozen=True)
class SessionReport:
    directory: Path
    html: Path
    png: Path
    comparison: list[dict[str, Any]]
    paper: dict[str, Any]


def fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2%}" if key in PCT else f"{v:,.2f}"
    if isinstance(v, dict):  # skips per reason code
        return ", ".join(f"{k} {n}" for k, n in v.items()) or "none"
    return str(v)


BH_ROWS = {"start", "end", "trades", "fees", "total_return", "sharpe", "max_drawdown", "final_equity"}


def comparison_rows(ml: dict[str, Any], rule: dict[str, Any], bh: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per metric: ML, rule-only and (the metrics it has) buy-and-hold BTC."""
    bh = bh or {}
    return [{"metric": k, "ml": ml.get(k), "rule_only": rule.get(k), "buy_and_hold_btc": bh.get(k) if k in BH_ROWS else None}
            for k in ROWS]


def buy_and_hold_btc(
    summary: dict[str, Any], settings: Settings, btc_bars: pl.DataFrame | None = None, capital: float | None = None
) -> BuyAndHold | str:
    """Buy-and-hold BTC over the window of a backtest summary (start, end, timeframe), or why not."""
    start, end = datetime.fromisoformat(summary["start"]), datetime.fromisoformat(summary["end"])
    tf = summary.get("timeframe") or settings.data.detection_timeframe
    try:
        if btc_bars is None:
            from core.data_import import load_shipped

            btc_bars = load_shipped(settings.data.data_dir, tf, [BENCHMARK_SYMBOL], start, end)
        return buy_and_hold(btc_bars.filter(pl.col("timeframe") == tf), settings, start, end, capital=capital)
    except (DataQualityError, OSError) as exc:
        return f"buy-and-hold {BENCHMARK_SYMBOL} not computed: {exc}"


def equity_comparison_png(curves: dict[str, pl.DataFrame], capital: float, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, eq in curves.items():
        if eq.height:
            ax.plot(eq["ts"].to_list(), eq["equity"].to_list(), lw=1.0, drawstyle="steps-post", label=label)
    ax.axhline(capital, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("equity (USDT)")
    ax.set_title(title)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_session_report(
    directory: Path,
    *,
    ml_report: Any,
    rule_report: Any,
    paper: dict[str, Any],
    capital: float,
    notes: list[str],
    settings: Settings | None = None,
    btc_bars: pl.DataFrame | None = None,
) -> SessionReport:
    """ml_report/rule_report: core.backtest.report.Report of the two headline backtests. Buy-and-hold BTC
    runs on `btc_bars` (else the shipped files) with `settings`' fees (default: load_settings())."""
    from core.settings import load_settings

    directory.mkdir(parents=True, exist_ok=True)
    curves = {
        "ML (champion models)": pl.read_parquet(ml_report.directory / "equity.parquet"),
        "rule-only": pl.read_parquet(rule_report.directory / "equity.parquet"),
    }
    settings = settings or load_settings()
    bh = buy_and_hold_btc(ml_report.summary, settings, btc_bars, capital)
    if isinstance(bh, str):
        notes = [*notes, bh]
        bh_stats: dict[str, Any] = {}
    else:
        curves[f"buy-and-hold {BENCHMARK_SYMBOL}"] = bh.equity
        bh_stats = bh.stats
    png = equity_comparison_png(curves, capital, directory / "equity_ml_vs_rule.png",
                                "ML-filtered vs rule-only vs buy-and-hold BTC, same bars")
    rows = comparison_rows(ml_report.summary, rule_report.summary, bh_stats)
    comparison = {"comparison": rows, "paper": paper, "notes": notes}
    (directory / "comparison.json").write_text(json.dumps(comparison, indent=2, default=str) + "\n")
    table = "".join(
        f"<tr><td>{html.escape(r['metric'])}</td><td>{html.escape(fmt(r['metric'], r['ml']))}</td>"
        f"<td>{html.escape(fmt(r['metric'], r['rule_only']))}</td>"
        f"<td>{html.escape(fmt(r['metric'], r['buy_and_hold_btc']))}</td></tr>"
        for r in rows
    )
    paper_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(fmt(k, v))}</td></tr>" for k, v in paper.items())
    img = base64.b64encode(png.read_bytes()).decode()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlcrypto session report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>mlcrypto session report</h1>
<h2>Out-of-sample backtest: ML vs rule-only vs buy-and-hold BTC</h2>
<table><tr><th>metric</th><th>ML</th><th>rule-only</th><th>buy-and-hold BTC</th></tr>{table}</table>
<p><img alt="equity curves" src="data:image/png;base64,{img}" style="max-width:100%"></p>
<p>Full reports: <a href="../{html.escape(ml_report.run_id)}/report.html">ML</a> ·
<a href="../{html.escape(rule_report.run_id)}/report.html">rule-only</a></p>
<h2>Paper replay through Prefect flow runs</h2><table>{paper_rows}</table>
<h2>Notes</h2><ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes)}</ul>
</body></html>"""
    page_path = directory / "index.html"
    page_path.write_text(page)
    return SessionReport(directory, page_path, png, rows, paper)
