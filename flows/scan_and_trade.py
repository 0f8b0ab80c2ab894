"""scan_and_trade: load -> gate -> detect -> regime -> plan (score, decide, size: core.trading.scan) ->
record the regime -> submit (every 5 minutes).

A symbol that fails the data gate is left out of this scan only; the others trade. Each run publishes
one markdown artifact (signals, decisions with reason codes, skips by code, orders, the MLflow model
versions used) and a table artifact of the decisions; a deployed run also publishes the book it leaves
(`paper-book` / `live-book`: totals at the last closes, and a table of the open positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed

from flows.common import flow_runtime, parse_when, utcnow
from flows.hooks import ALERT_HOOKS
from tasks.alerts import send_alert
from tasks.data import derive_candles, ingest_bars, load_candles, validate_candles
from tasks.runtime import Runtime
from tasks.trading import (
    assess_regime,
    detect_signals,
    manage_positions,
    plan_scan,
    publish_book,
    record_regime,
    scan_universe,
    submit_orders,
)


@dataclass
class ScanResult:
    now: datetime
    regime: str
    gate_failed: list[str] = field(default_factory=list)
    signals: int = 0
    decisions: list[dict[str, Any]] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    skips_by_code: dict[str, int] = field(default_factory=dict)


@flow(name="scan-and-trade", validate_parameters=False, log_prints=False, on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def scan_and_trade(
    symbols: list[str] | None = None,
    now: datetime | str | None = None,
    derive: bool = False,
    manage: bool = False,
    ingest: pl.DataFrame | None = None,
    runtime: Runtime | None = None,
) -> ScanResult:
    """One scan of the monitored coins at `now` (default: the wall clock). `derive` first resamples the
    streamed 1m bars into the detection timeframe (the deployed path). The offline replay passes the
    bars that closed in this hour as `ingest` (upserted first) and `manage=True` (positions see those
    bars before the scan decides), so one flow run per simulated hour covers ingest -> manage -> scan."""
    when = parse_when(now) or utcnow()
    with flow_runtime(runtime, ledger=True) as rt:
        u = scan_universe(rt, symbols)
        if ingest is not None:
            ingest_bars(rt, ingest)
        if derive:
            derive_candles(rt, u.everyone, when - timedelta(hours=6), when)
        if manage:
            manage_positions(rt, when)
        bars = load_candles(rt, u.everyone, u.timeframe, u.history_bars, when)
        scan_bars = u.scan_bars(bars)
        gate = validate_candles(rt, scan_bars, u.wanted, when)
        if not gate.passed_symbols and runtime is None:  # deployed run: no coin tradable is not "fine"
            send_alert(rt, "data_health", f"scan at {when:%Y-%m-%d %H:%M} UTC: the data gate failed "
                       f"for every symbol; nothing traded", [f"failed: {', '.join(gate.failed_symbols)}"])
            return Failed(message=f"data gate failed for all {len(u.wanted)} symbols; nothing traded")  # type: ignore[return-value]
        signals = detect_signals(rt, scan_bars, gate.passed_symbols)
        regime = assess_regime(rt, u.market_bars(bars), when)
        plan = plan_scan(rt, signals, bars, regime, when)
        record_regime(rt, plan)  # alerts when the plan says the regime changed
        opened = submit_orders(rt, plan)
        out = ScanResult(
            now=when, regime=plan.regime.regime.value, gate_failed=gate.failed_symbols, signals=len(plan.signals),
            decisions=[_decision_row(d) for d in plan.decisions], opened=opened, orders=plan.order_rows(),
            skips_by_code=plan.skips_by_code,
        )
        _publish(rt, out, plan.signals, plan.scores)
        if runtime is None:  # a deployed run shows the book it leaves (the offline replay reports at its end)
            publish_book(rt, scan_bars, when)
        return out


def _decision_row(d: Any) -> dict[str, Any]:
    return {
        "symbol": d.symbol, "strategy": d.strategy.value, "taken": d.taken,
        "confidence": round(d.confidence, 3) if d.confidence is not None else None,
        "ev": round(d.expected_value, 4) if d.expected_value is not None else None,
        "notional": round(d.notional, 2), "reason": d.reason.value, "detail": d.detail,
        "scoring": d.scores.source if d.scores else "",
    }


def _model_links(rt: Runtime, signals: list[Any], scores: list[Any]) -> list[str]:
    """Model versions that scored this run, linked to the MLflow UI; rule-only where none scored."""
    base = rt.settings.schedule.mlflow_ui_url.rstrip("/")
    used = sorted({sc.model_version for sc in scores if sc.model_version})
    lines = []
    for v in used:
        name, _, version = v.rpartition("/")
        lines.append(f"- [{v}]({base}/#/models/{name}/versions/{version})")
    rule = sorted({sig.strategy.value for sig, sc in zip(signals, scores, strict=True) if sc.rule_only})
    if rule:
        lines.append(f"- rule-only defaults (no champion model) for: {', '.join(rule)}")
    return lines or ["- no signals scored in this run"]


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_"
    cols = list(rows[0])
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    body = "\n".join("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |" for r in rows)
    return f"{head}\n{body}"


def _publish(rt: Runtime, out: ScanResult, signals: list[Any], scores: list[Any]) -> None:
    sig_rows = [
        {"symbol": s.symbol, "strategy": s.strategy.value, "bar": f"{s.ts:%Y-%m-%d %H:%M}", "price": s.price,
         "confidence": round(sc.confidence, 3), "tp": round(sc.take_profit_pct, 4), "sl": round(sc.stop_loss_pct, 4)}
        for s, sc in zip(signals, scores, strict=True)
    ]
    md = "\n\n".join([
        f"# Scan at {out.now:%Y-%m-%d %H:%M} UTC",
        f"Regime **{out.regime}** · settings `{rt.settings.fingerprint()}` · gate failed: {out.gate_failed or 'none'}",
        "## Signals\n" + _md_table(sig_rows),
        "## Decisions\n" + _md_table(out.decisions),
        "## Skips by reason code\n" + _md_table([{"reason": k, "signals": n} for k, n in out.skips_by_code.items()]),
        "## Orders\n" + _md_table(out.orders),
        "## Models\n" + "\n".join(_model_links(rt, signals, scores)),
    ])
    create_markdown_artifact(key="scan-report", markdown=md, description=f"scan {out.now:%Y-%m-%d %H:%M} UTC")
    if out.decisions:
        create_table_artifact(key="scan-decisions", table=out.decisions, description="Decisions with reasons")


__all__ = ["ScanResult", "scan_and_trade"]
