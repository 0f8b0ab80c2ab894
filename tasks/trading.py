"""Trading tasks: detect -> score -> regime -> decide -> size -> submit, and position management.

Thin wraps of core: detection is core.strategies.registry.scan_latest, scoring the runtime's Scorer
(champion models, rule-only defaults without one), decisions core.manager.StrategyManager, positions
and orders core.portfolio.Portfolio (intent stored before the venue sees it; idempotent per signal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.alerts import AlertKind
from core.domain import Decision, Regime, Scores, Signal, timeframe_duration
from core.errors import TemporaryVenueError
from core.live_book import is_live
from core.manager import ManagerResult, StrategyManager
from core.positions import Bar, Exited, Filled, open_position
from core.risk import Holding, PortfolioView
from tasks.runtime import Runtime

COMPUTE = dict(retries=1, retry_delay_seconds=1, cache_policy=NO_CACHE)
IO_RETRIES = dict(retries=3, retry_delay_seconds=[1, 5, 15], cache_policy=NO_CACHE)
REGIME_KIND = "regime_state"


def _only_temporary(task: Any, task_run: Any, state: Any) -> bool:
    """Retry an order submission only on errors that are safe to retry (timeouts, 5xx, 429): the
    intent is already stored and submit is idempotent by client_order_id, so a retry never doubles."""
    try:
        state.result()
    except TemporaryVenueError:
        return True
    except Exception:  # noqa: BLE001 - anything else needs a person, not a retry
        return False
    return False


@task(name="detect_signals", **COMPUTE)
def detect_signals(rt: Runtime, bars: pl.DataFrame, passed: list[str], now: datetime) -> list[Signal]:
    """Signals on each gate-passed symbol's last CLOSED bar; a signal already decided in an earlier
    scan (the 5-minute schedule sees the same hourly bar 12 times) is not decided again."""
    from core.strategies.registry import scan_latest

    ok = bars.filter(pl.col("symbol").is_in(passed))
    if ok.is_empty():
        return []
    tf = timeframe_duration(rt.settings.data.detection_timeframe)
    decided = rt.portfolio.decisions
    return [s for s in scan_latest(ok, rt.settings) if s.ts + tf <= now and s.signal_id not in decided]


@task(name="score_signals", **COMPUTE)
def score_signals(rt: Runtime, signals: list[Signal], bars: pl.DataFrame) -> list[Scores]:
    """One batch through the scorer (the champion per strategy; rule-only defaults where none)."""
    if not signals:
        return []
    scorer = rt.get_scorer()
    observe = getattr(scorer, "observe_bars", None)
    if observe is not None:
        observe(bars)  # coin/market context features at the scan's last bars
    return scorer.score(signals)


@task(name="assess_regime", **COMPUTE)
def assess_regime(rt: Runtime, market_bars: pl.DataFrame, now: datetime) -> tuple[Regime, str]:
    """The circuit breaker as of `now`; a change from the last stored regime is logged and alerted."""
    from core.regime import regime_at, regime_frame

    regime, reason = regime_at(regime_frame(market_bars, rt.settings), now) if market_bars.height else (Regime.NORMAL, "no market bars")
    previous = dict(rt.store.get_records(REGIME_KIND)).get("current")
    if previous is None or previous.get("regime") != regime.value:
        was = previous.get("regime") if previous else "none"
        get_run_logger().warning("regime change %s -> %s: %s", was, regime.value, reason)
        rt.alerter.send(AlertKind.REGIME_CHANGE, f"regime {was} -> {regime.value}", [reason])
        rt.store.put_records(REGIME_KIND, [("current", {"regime": regime.value, "reason": reason, "since": now.isoformat()})])
    return regime, reason


def portfolio_view(rt: Runtime, marks: dict[str, float]) -> PortfolioView:
    """What risk and sizing see: equity at the marks and every open or pending position's notional."""
    pf = rt.portfolio
    m = {**pf.marks, **marks}
    holdings = [
        Holding(p.symbol, p.strategy, p.quantity * m.get(p.symbol, p.avg_price) + p.resting_notional, p.quantity == 0)
        for p in pf.open_positions()
    ]
    return PortfolioView(pf.equity(m), holdings)


@task(name="decide", **COMPUTE)
def decide(
    rt: Runtime, signals: list[Signal], scores: list[Scores], regime: Regime, marks: dict[str, float], now: datetime
) -> ManagerResult:
    """The manager's decisions (taken or skipped, each with its reason) and the sized entries."""
    return StrategyManager(rt.settings).decide(signals, scores, portfolio_view(rt, marks), regime, now)


@dataclass
class OrderPlan:
    decisions: list[Decision]
    entries: list[Any]  # core.manager.Entry
    orders: list[dict[str, Any]] = field(default_factory=list)  # the planned entry orders, for the artifact


@task(name="size_orders", **COMPUTE)
def size_orders(rt: Runtime, result: ManagerResult) -> OrderPlan:
    """Turn each taken entry into its entry orders (a DCA grid of limit buys, or one market buy) with
    core.positions.open_position, so the artifact shows exactly what submit_orders will place."""
    orders = []
    for e in result.entries:
        pos = open_position(e.signal, e.scores, e.notional, rt.settings, position_id=f"pos:{e.signal.signal_id}")
        for lv in pos.entry_levels:
            orders.append({
                "client_order_id": lv.client_order_id, "symbol": pos.symbol, "strategy": pos.strategy.value,
                "type": pos.entry_type.value, "price": round(lv.price, 8), "quantity": lv.quantity,
                "notional": round(lv.price * lv.quantity, 2),
                "expires": pos.expiry_ts.isoformat() if pos.expiry_ts else None,
            })
    return OrderPlan(result.decisions, result.entries, orders)


@task(name="submit_orders", retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=_only_temporary, cache_policy=NO_CACHE)
def submit_orders(rt: Runtime, plan: OrderPlan) -> list[str]:
    """Store every decision, then open the taken positions: Portfolio.open writes the order intents
    with our ids BEFORE the venue sees them and is idempotent per signal, so a retry never doubles."""
    pf = rt.portfolio
    taken = {d.signal_id: d for d in plan.decisions if d.taken}
    for d in plan.decisions:
        if not d.taken and d.signal_id not in pf.decisions:
            pf.record_decision(d)
    opened = []
    for e in plan.entries:
        pos = pf.open(e.signal, e.scores, e.notional, taken.get(e.signal.signal_id))
        opened.append(pos.position_id)
    return opened


@dataclass
class ManageSummary:
    bars_applied: int = 0
    fills: int = 0
    exits: list[str] = field(default_factory=list)
    open_positions: int = 0
    equity: float = 0.0


@task(name="manage_positions", **IO_RETRIES)
def manage_positions(rt: Runtime, now: datetime, timeframe: str | None = None) -> ManageSummary:
    """Apply every closed bar since each open position last saw one: resting grid levels fill or expire
    (24h), stops/TP/trailing/max hold/range break exit. Portfolio.on_bar skips bars already applied,
    so running this every minute, or again after a crash, applies each bar once."""
    pf = rt.portfolio
    s = rt.settings
    tf = timeframe or s.data.detection_timeframe
    dur = timeframe_duration(tf)
    bar_duration = None if tf == s.data.detection_timeframe else dur
    out = ManageSummary()
    if is_live(pf):
        return _manage_live(rt, now, tf, dur, bar_duration, out)
    active = pf.open_positions()
    if active:
        bars = _closed_bars(rt, active, tf, dur, now)
        for sym, o, h, lo, c, ts in bars.select("symbol", "open", "high", "low", "close", "ts").iter_rows():
            events = pf.on_bar(sym, Bar(ts, o, h, lo, c, bar_duration))
            out.bars_applied += 1
            for ev in events:
                if isinstance(ev, Filled):
                    out.fills += 1
                    rt.alerter.send(AlertKind.FILL, f"{sym} filled {ev.quantity:.6g} @ {ev.price:.6g}")
                elif isinstance(ev, Exited):
                    out.exits.append(f"{sym} {ev.reason.value} @ {ev.price:.6g}")
                    rt.alerter.send(AlertKind.EXIT, f"{sym} exit ({ev.reason.value}) @ {ev.price:.6g}")
    return _summarise(pf, out, "managed positions")


def _summarise(pf: Any, out: ManageSummary, what: str) -> ManageSummary:
    out.open_positions = len(pf.open_positions())
    out.equity = pf.equity()
    get_run_logger().info(
        "%s: %d bars, %d fills, exits %s, %d open, equity %.2f",
        what, out.bars_applied, out.fills, out.exits, out.open_positions, out.equity,
    )
    return out


def _closed_bars(rt: Runtime, active: list[Any], tf: str, dur: Any, now: datetime) -> pl.DataFrame:
    since = min((p.last_bar_ts + dur) if p.last_bar_ts else p.created_ts for p in active)
    symbols = sorted({p.symbol for p in active})
    return rt.store.read_many(symbols, tf, since, now).filter(pl.col("ts") + dur <= now)  # closed bars only


def _manage_live(rt: Runtime, now: datetime, tf: str, dur: Any, bar_duration: Any, out: ManageSummary) -> ManageSummary:
    """Live book: resend unacknowledged intents, book the venue's fills, apply the closed bars (expiry
    cancels and exit decisions sent to the venue), then book the fills those exits got."""
    from core.live_book import apply_bar_live, apply_venue_fills

    pf = rt.portfolio
    pf.resubmit_pending()
    events = apply_venue_fills(pf, pf.venue.fills_since())
    active = pf.open_positions()
    if active:
        bars = _closed_bars(rt, active, tf, dur, now)
        for sym, o, h, lo, c, ts in bars.select("symbol", "open", "high", "low", "close", "ts").iter_rows():
            sent = apply_bar_live(pf, sym, Bar(ts, o, h, lo, c, bar_duration))
            out.bars_applied += 1
            for ev in sent:
                if isinstance(ev, Exited):
                    rt.alerter.send(AlertKind.EXIT, f"{sym} exit ({ev.reason.value}) sent to {pf.venue.name}")
        if out.bars_applied:
            events += apply_venue_fills(pf, pf.venue.fills_since())
    for ev in events:
        if isinstance(ev, Filled):
            out.fills += 1
            rt.alerter.send(AlertKind.FILL, f"filled {ev.quantity:.6g} @ {ev.price:.6g} ({ev.client_order_id})")
        elif isinstance(ev, Exited):
            out.exits.append(f"{ev.reason.value} @ {ev.price:.6g}")
    return _summarise(pf, out, "managed live positions")


@task(name="reconcile_orders", **IO_RETRIES)
def reconcile_orders(rt: Runtime, venue: Any = None, now: datetime | None = None) -> dict[str, Any]:
    """Bring the order journal in line with the venue before trading on (core.reconcile; read-only at
    the venue: it adopts orders placed but never recorded and never places one). In paper mode the
    ledger is the venue's state: Portfolio.load already resubmitted stored intents idempotently."""
    s = rt.settings
    if venue is None and s.execution.mode != "live":
        pf = rt.portfolio
        return {"mode": "paper", "open_orders": len(pf.venue.open_orders()), "clean": True}
    from core.reconcile import reconcile
    from core.venues.factory import build_venue
    from core.venues.order_journal import OrderJournal

    venue = venue or (rt.portfolio.venue if is_live(rt.portfolio) else build_venue(s, rt.store))
    journal = getattr(venue, "journal", None) or OrderJournal(rt.store)
    report = reconcile(venue, journal, now=now)
    logger = get_run_logger()
    (logger.info if report.clean else logger.warning)("reconciliation: %s", report.summary())
    return {"mode": s.execution.mode, "clean": report.clean, "summary": report.summary(), "report": report}
