"""Trading tasks: each wraps one core.trading call and adds what orchestration owns (retries, logs,
alerts). The scan: detect (core.trading.universe) -> regime (core.trading.regime_state) -> plan
(core.trading.scan.plan_scan: score, decide, size, orders built once) -> record the regime (alert on a
change) -> submit (core.trading.account.Account.execute). Management: core.trading.manage.manage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.alerts import AlertKind
from core.domain import Regime, Signal
from core.errors import StoreError
from core.trading.scan import ScanPlan
from core.trading.universe import ScanUniverse
from tasks.runtime import Runtime


def _store_errors_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a run that touches the venue only for store errors: the venue adapter already retried its
    own temporary errors (core.retry), so a Prefect retry on top would multiply them."""
    try:
        state.result()
    except StoreError:
        return True
    except Exception:  # noqa: BLE001 - venue and data errors are not retried here
        return False
    return False


COMPUTE: dict[str, Any] = {"retries": 1, "retry_delay_seconds": 1, "cache_policy": NO_CACHE}
IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [1, 5, 15], "cache_policy": NO_CACHE}
VENUE_IO: dict[str, Any] = {**IO_RETRIES, "retry_condition_fn": _store_errors_only}


@task(name="scan_universe", cache_policy=NO_CACHE)
def scan_universe(rt: Runtime, symbols: list[str] | None) -> ScanUniverse:
    """The traded coins, the regime's market coins and how many bars the scan loads."""
    from core.trading.universe import scan_universe as universe

    return universe(rt.settings, symbols)


@task(name="detect_signals", **COMPUTE)
def detect_signals(rt: Runtime, bars: pl.DataFrame, passed: list[str]) -> list[Signal]:
    """Signals on each gate-passed symbol's last loaded (closed) bar."""
    from core.trading.universe import detect_latest

    return detect_latest(bars, passed, rt.settings)


@task(name="assess_regime", **COMPUTE)
def assess_regime(rt: Runtime, market_bars: pl.DataFrame, now: datetime) -> tuple[Regime, str]:
    """The circuit breaker as of `now`."""
    from core.trading.regime_state import regime_reading

    return regime_reading(market_bars, rt.settings, now)


@task(name="plan_scan", **COMPUTE)
def plan_scan(rt: Runtime, signals: list[Signal], bars: pl.DataFrame, regime: tuple[Regime, str], now: datetime) -> ScanPlan:
    """core.trading.scan.plan_scan with this runtime's scorer, book (valued at the scan's last closes)
    and the stored regime state."""
    from core.scoring import ObservesBars
    from core.trading.regime_state import load_regime_state
    from core.trading.scan import plan_scan as plan
    from core.trading.universe import latest_marks

    scorer = rt.get_scorer()
    if signals and isinstance(scorer, ObservesBars):
        scorer.observe_bars(bars)  # coin/market context features at the scan's last bars
    account = rt.account
    view = account.sizing_view(latest_marks(bars)) if signals else account.book.view(latest_marks(bars))
    return plan(signals, view, account.book.decisions, regime, load_regime_state(rt.store), scorer, rt.settings, now)


@task(name="record_regime", **IO_RETRIES)
def record_regime(rt: Runtime, plan: ScanPlan) -> bool:
    """Store the regime when it changed, and alert (the plan says whether it changed)."""
    from core.trading.regime_state import save_regime_state

    if not plan.regime_changed:
        return False
    was = plan.previous_regime.value if plan.previous_regime else "none"
    now = plan.regime.regime.value
    get_run_logger().warning("regime change %s -> %s: %s", was, now, plan.regime.reason)
    rt.alerter.send(AlertKind.REGIME_CHANGE, f"regime {was} -> {now}", [plan.regime.reason])
    save_regime_state(rt.store, plan.regime)
    return True


# No Prefect retries: the venue retries its temporary errors itself (core.retry), and a retry here would
# run on top of those. The intents are stored before the venue sees them, and submit is idempotent per
# client_order_id, so the next scan (or manage_positions' resubmit) sends what a failure left pending.
@task(name="submit_orders", cache_policy=NO_CACHE)
def submit_orders(rt: Runtime, plan: ScanPlan) -> list[str]:
    """Store the scan's skipped decisions, then open the taken entries with the orders the plan built."""
    return rt.account.execute(plan.skipped, plan.entries)


@task(name="publish_book", cache_policy=NO_CACHE)
def publish_book(rt: Runtime, bars: pl.DataFrame, now: datetime) -> dict[str, float]:
    """The book after this run, marked at each coin's last close, as the `paper-book` (or `live-book`)
    artifacts: a markdown summary and a table of the open and pending positions."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    marks = dict(bars.group_by("symbol").agg(pl.col("close").sort_by("ts").last()).iter_rows()) if bars.height else {}
    totals, rows = rt.account.book.snapshot(marks)
    key = f"{rt.settings.execution.mode}-book"
    lines = [f"# {rt.settings.execution.mode} book at {now:%Y-%m-%d %H:%M} UTC", "| | |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v:,.2f} |" for k, v in totals.items()]
    lines.append(f"\n{len(rows)} open or pending positions (table artifact `{key}-positions`)")
    create_markdown_artifact(key=key, markdown="\n".join(lines), description=f"book at {now:%Y-%m-%d %H:%M} UTC")
    create_table_artifact(key=f"{key}-positions", table=rows or [{"position": "none open"}],
                          description="Open and pending positions at the marks")
    return totals


@dataclass
class ManageSummary:
    bars_applied: int = 0
    fills: int = 0
    exits: list[str] = field(default_factory=list)
    open_positions: int = 0
    equity: float = 0.0


@task(name="manage_positions", **VENUE_IO)
def manage_positions(rt: Runtime, now: datetime, timeframe: str | None = None) -> ManageSummary:
    """Apply every closed bar since each open position last saw one (core.trading.manage.manage: the
    account's driver, simulated or live), then alert on fills and exits."""
    from core.backtest.session import store_reader
    from core.trading.manage import manage

    out = manage(rt.account, store_reader(rt.store), now, timeframe)
    for sym, ev in out.fills:
        rt.alerter.send(AlertKind.FILL, f"{sym} filled {ev.quantity:.6g} @ {ev.price:.6g} ({ev.client_order_id})")
    for sym, ev in out.exits:
        rt.alerter.send(AlertKind.EXIT, f"{sym} exit ({ev.reason.value}) @ {ev.price:.6g}".strip())
    for sym, ev in out.exits_sent:
        rt.alerter.send(AlertKind.EXIT, f"{sym} exit ({ev.reason.value}) sent to {rt.account.venue.name}")
    summary = ManageSummary(
        bars_applied=out.bars_applied, fills=len(out.fills),
        exits=[f"{sym} {ev.reason.value} @ {ev.price:.6g}".strip() for sym, ev in out.exits],
        open_positions=out.open_positions, equity=out.equity,
    )
    get_run_logger().info(
        "managed %s positions: %d bars, %d fills, exits %s, %d open, equity %.2f", rt.account.mode.value,
        summary.bars_applied, summary.fills, summary.exits, summary.open_positions, summary.equity,
    )
    return summary


@task(name="reconcile_orders", **VENUE_IO)
def reconcile_orders(rt: Runtime, venue: Any = None, now: datetime | None = None) -> dict[str, Any]:
    """Bring the order journal in line with the venue before trading on (core.reconcile; read-only at
    the venue: it adopts orders placed but never recorded and never places one). In paper mode the
    book is the venue's state: Account.load already resubmitted stored intents idempotently."""
    from core.trading.driver import Mode

    s = rt.settings
    if venue is None and s.execution.mode != Mode.LIVE:
        return {"mode": "paper", "open_orders": len(rt.account.venue.open_orders()), "clean": True}
    from core.reconcile import reconcile
    from core.venues.base import JournalledVenue
    from core.venues.factory import build_venue
    from core.venues.order_journal import OrderJournal

    venue = venue or (rt.account.venue if rt.account.mode is Mode.LIVE else build_venue(s, rt.store, rt.venue_alert))
    journal = venue.journal if isinstance(venue, JournalledVenue) else OrderJournal(rt.store)
    report = reconcile(venue, journal, now=now)
    logger = get_run_logger()
    (logger.info if report.clean else logger.warning)("reconciliation: %s", report.summary())
    return {"mode": s.execution.mode, "clean": report.clean, "summary": report.summary(), "report": report}


@task(name="reset_paper_book", cache_policy=NO_CACHE)
def reset_paper_book(rt: Runtime) -> int:
    """The replay re-trades history: an earlier replay's paper book (and regime state) goes first."""
    from core.errors import ConfigError
    from core.trading.driver import Mode
    from core.trading.journal import reset_journal
    from core.trading.regime_state import reset_regime_state

    if rt.settings.execution.mode != Mode.PAPER:  # replaying history must never reach a real venue
        raise ConfigError("the offline session replays history on the paper book only; set execution.mode=paper")
    removed = reset_journal(rt.store) + reset_regime_state(rt.store)
    rt.drop_account()
    return removed


@task(name="paper_summary", cache_policy=NO_CACHE)
def paper_summary(rt: Runtime, start: datetime, end: datetime, steps: int, seconds: float) -> dict[str, Any]:
    """The paper replay's book, for the main job's report (skips counted by reason code)."""
    from core.manager import skips_by_code

    book = rt.account.book
    decisions = list(book.decisions.values())
    return {
        "window": f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC",
        "scan flow runs": steps,
        "decisions": len(decisions),
        "taken": sum(d.taken for d in decisions),
        "skips by code": skips_by_code(decisions),
        "closed trades": len(book.trades),
        "open positions": len(book.open_positions()),
        "realised P&L": round(book.realised_pnl, 2),
        "fees": round(book.fees_paid, 2),
        "equity": round(book.equity(), 2),
        "replay seconds": round(seconds, 1),
    }
