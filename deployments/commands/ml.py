"""ML commands: `mlcrypto train`, `evaluate`, `promote`, `evidence`, `mlflow-ui`.

train    = walk-forward evaluation + OOS backtest + final fit, logged to MLflow and registered as the
           `challenger` of each strategy (add --promote to run the promotion rule right after);
evaluate = the same evaluation, printed only (nothing logged);
promote  = champion <- challenger when its OOS backtest beats the champion's on the same window;
evidence = edge or no edge per strategy with intervals (models.evidence), the README headline.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.errors import TradingSystemError
from deployments.commands.data import EndOpt, StartOpt, SymbolsOpt, _fail, _settings, _split, _when

console = Console()
StrategyOpt = Annotated[
    list[str] | None, typer.Option("--strategy", help="dca, swing or channel (repeat); default: all three.")
]
_SHOWN = ("n", "base_rate", "auc", "brier", "brier_base", "precision_at_threshold", "taken_share")


def _strategies(values: list[str] | None) -> tuple[str, ...]:
    from models.dataset import STRATEGIES

    chosen = tuple(v.strip().lower() for x in (values or STRATEGIES) for v in x.split(",") if v.strip())
    bad = [s for s in chosen if s not in STRATEGIES]
    if bad:
        raise typer.BadParameter(f"unknown strategy {bad}; use {list(STRATEGIES)}", param_hint="--strategy")
    return chosen


def _fmt(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.3f}" if isinstance(v, float) else str(v)


def _int(v: Any) -> str:
    return "-" if v is None else str(int(v))


def _print_reports(reports: list[Any]) -> None:
    t = Table("strategy", "events", *_SHOWN, "MAE TP", "MAE SL", title="walk-forward, pooled out-of-sample")
    b = Table("strategy", "window", "ML return", "rule return", "B&H BTC return", "ML sharpe", "rule sharpe",
              "B&H sharpe", "ML max DD", "rule max DD", "B&H max DD", "ML trades", "rule trades", "version",
              title="out-of-sample backtest: ML-filtered vs rule-only vs buy-and-hold BTC (same bars, window, capital)")
    for r in reports:
        if r.walk_forward is None:
            t.add_row(r.strategy, str(r.n_events), *["-"] * (len(_SHOWN) + 2))
            console.print(f"[yellow]{r.strategy}: skipped: {r.skipped}[/yellow]")
            continue
        p = r.walk_forward.pooled
        t.add_row(r.strategy, str(r.n_events), _int(p.get("n")), *(_fmt(p.get(k)) for k in _SHOWN[1:]),
                  _fmt(p.get("mae_take_profit_pct")), _fmt(p.get("mae_stop_loss_pct")))
        bt = r.backtest
        if bt:
            ml, rule, bh = bt.get("ml", {}), bt.get("rule", {}), bt.get("bh", {})
            b.add_row(r.strategy, " .. ".join(s[:10] for s in bt["window"]),
                      *(_fmt(x.get("total_return")) for x in (ml, rule, bh)), *(_fmt(x.get("sharpe")) for x in (ml, rule, bh)),
                      *(_fmt(x.get("max_drawdown")) for x in (ml, rule, bh)),
                      _int(ml.get("trades")), _int(rule.get("trades")), r.version or "-")
    console.print(t)
    console.print(b)


def _run(strategy: list[str] | None, symbols: list[str] | None, start: str | None, end: str | None,
         *, log: bool, backtest: bool) -> list[Any]:
    from models.dataset import load_history
    from models.pipeline import train_all

    settings = _settings()
    chosen = _strategies(strategy)
    try:
        bars = load_history(settings, _split(symbols), None, _when(start, "--start"), _when(end, "--end"))
        console.print(f"{bars.height:,} bars of {bars['symbol'].n_unique()} symbols, "
                      f"{bars['ts'].min():%Y-%m-%d} .. {bars['ts'].max():%Y-%m-%d}")
        return train_all(settings, chosen, bars, log=log, backtest=backtest)
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None


def train(strategy: StrategyOpt = None, symbols: SymbolsOpt = None, start: StartOpt = None, end: EndOpt = None,
          backtest: Annotated[bool, typer.Option(help="Run the OOS ML-vs-rule backtest.")] = True,
          promote_after: Annotated[bool, typer.Option("--promote", help="Run the promotion rule afterwards.")] = False) -> None:
    """Train each strategy's models on the shipped history, log to MLflow, register the challenger."""
    reports = _run(strategy, symbols, start, end, log=True, backtest=backtest)
    _print_reports(reports)
    if promote_after:
        promote(strategy)


def evaluate(strategy: StrategyOpt = None, symbols: SymbolsOpt = None, start: StartOpt = None,
             end: EndOpt = None) -> None:
    """Walk-forward metrics and the OOS ML-vs-rule backtest, printed only (nothing is logged)."""
    _print_reports(_run(strategy, symbols, start, end, log=False, backtest=True))


def promote(strategy: StrategyOpt = None) -> None:
    """Move `champion` to the challenger where its OOS backtest beats the champion's on the same window."""
    from models.promotion import promote as promote_one

    settings = _settings()
    t = Table("strategy", "promoted", "champion", "challenger", "reason", title="promotion")
    for s in _strategies(strategy):
        d = promote_one(s, settings)
        t.add_row(s, "yes" if d.promoted else "no", d.champion or "-", d.challenger or "-", d.reason)
    console.print(t)


def mlflow_ui(port: Annotated[int, typer.Option(help="Port to serve on.")] = 5000,
              host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1") -> None:
    """Run `mlflow ui` on the configured tracking store (settings.mlflow_tracking_uri)."""
    from models.tracking import tracking_uri

    uri = tracking_uri(_settings())
    console.print(f"MLflow UI for {uri} on http://{host}:{port}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd))


def evidence(
    strategy: StrategyOpt = None, symbols: SymbolsOpt = None, start: StartOpt = None, end: EndOpt = None,
    n_trials: Annotated[int | None, typer.Option(help="Configurations tried, for the Deflated Sharpe; default: "
                                                 "the 6 compared (2 decision rules x 3 input sets).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples per interval.")] = 1000,
    out: Annotated[str, typer.Option(help="Folder for evidence.md and evidence.json.")] = "var/reports/evidence",
    tracking_uri: Annotated[str | None, typer.Option(help="Log the report to this MLflow store.")] = None,
    log: Annotated[bool, typer.Option("--log", help="Log the report to the configured MLflow store.")] = False,
    books: Annotated[bool, typer.Option("--books", help="Also print every book's row (trades, exposure).")] = False,
    readme: Annotated[str | None, typer.Option(help="Rewrite this README's headline block (between the "
                                               "<!-- evidence:start/end --> markers).")] = None,
) -> None:
    """Edge or no edge: walk-forward AUC/Brier and OOS books (ML, rule-only, BTC at the same exposure) with
    95% intervals, the Deflated Sharpe and a verdict per strategy; prints the README headline markdown."""
    from pathlib import Path

    from models.dataset import load_history
    from models.evidence import evidence_report, log_evidence, markdown, markdown_books, replace_headline, write_report
    from models.tracking import MlflowTarget

    settings = _settings()
    try:
        bars = load_history(settings, _split(symbols), None, _when(start, "--start"), _when(end, "--end"))
        report = evidence_report(bars, settings, _strategies(strategy), n_trials=n_trials, n_boot=n_boot)
    except (TradingSystemError, ValueError) as exc:
        raise _fail(exc) from None
    md, js = write_report(report, Path(out))
    print(markdown(report))
    if books:
        print(markdown_books(report))
    if readme:
        path = Path(readme)
        path.write_text(replace_headline(path.read_text(), markdown(report)))
        console.print(f"rewrote the headline block of {path}", style="dim")
    console.print(f"{report.seconds:.0f} s; wrote {md} and {js}", style="dim")
    if tracking_uri or log:
        target = MlflowTarget(tracking_uri, tracking_uri) if tracking_uri else MlflowTarget.from_settings(settings)
        console.print(f"MLflow run {log_evidence(report, target)} on {target.tracking_uri}")


def register(app: typer.Typer) -> None:
    app.command("evidence")(evidence)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("promote")(promote)
    app.command("mlflow-ui")(mlflow_ui)
