"""Gate results: per-symbol verdicts, the report of one gate run, and where they go (store, Slack)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.alerts import AlertKind, SlackAlerter

RECORD_KIND = "gate_result"


@dataclass(frozen=True)
class GateResult:
    symbol: str
    passed: bool
    failed_expectations: tuple[str, ...] = ()
    # expectation name -> {"rows": unexpected rows of this symbol, "first_ts": first offending bar}
    details: dict[str, Any] = field(default_factory=dict)

    def as_payload(self, report: GateReport) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "timeframe": report.timeframe,
            "checked_at": report.now.isoformat(),
            "passed": self.passed,
            "failed_expectations": list(self.failed_expectations),
            "details": self.details,
            "rows": report.rows,
        }


@dataclass(frozen=True)
class GateReport:
    timeframe: str
    now: datetime
    results: tuple[GateResult, ...]
    rows: int
    seconds: float

    @property
    def passed_symbols(self) -> list[str]:
        return [r.symbol for r in self.results if r.passed]

    @property
    def failed_symbols(self) -> list[str]:
        return [r.symbol for r in self.results if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failed_symbols

    def result(self, symbol: str) -> GateResult:
        return next(r for r in self.results if r.symbol == symbol)


def record_key(report: GateReport, symbol: str) -> str:
    return f"{report.timeframe}:{symbol}:{report.now.isoformat()}"


def store_report(store: Any, report: GateReport) -> int:
    """One 'gate_result' record per symbol and run (the health command reads the latest per symbol)."""
    return store.put_records(RECORD_KIND, [(record_key(report, r.symbol), r.as_payload(report)) for r in report.results])


def alert_report(alerter: SlackAlerter, report: GateReport) -> bool:
    """A data-health alert naming each failing symbol and why; nothing is sent when all passed."""
    if report.passed:
        return False
    lines = [
        f"{r.symbol}: " + ", ".join(f"{name} ({d.get('rows', '?')} rows from {d.get('first_ts', '?')})"
                                    for name, d in r.details.items())
        for r in report.results if not r.passed
    ]
    title = f"data gate failed for {len(report.failed_symbols)} symbol(s) on {report.timeframe}; left out of the scan"
    return alerter.send(AlertKind.DATA_HEALTH, title, lines[:30])
