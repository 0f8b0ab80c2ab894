"""Live-venue overheads against the local Hummingbot API double (loopback HTTP, DuckDB journal).

- submit p50 of DCA-sized orders with unrounded amounts and prices: the trading-rules lookup (cached
  after the first GET) and the quantization, the journal writes and the POST;
- submit after an ambiguous 500 (the search of active orders, history and trades, then adoption);
- start-up reconciliation of 2,000 crashed intents whose orders are in the venue's history, read by
  time windows (the history route's cursor is broken and it reads only limit*2 rows);
- the crash campaign (tests/hummingbot_crash.py): kills, intents, orders at the venue, doubles.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import BenchResult
from core.reconcile import reconcile
from core.storage.duckdb_store import DuckDBStore
from core.venues.hummingbot import HummingbotVenue
from core.venues.order_journal import OrderJournal
from tests.hummingbot_crash import run_campaign
from tests.hummingbot_server import (
    PAIR,
    ExchangeState,
    HummingbotTestServer,
    ManualClock,
    make_order,
    settings_for,
)

N_SUBMITS = 200
N_HISTORY = 2_000


def _submit_latencies(venue: HummingbotVenue, prefix: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        price = 58_000.0 + i * 1.234567  # off the 0.1 tick: quantized on the way
        t0 = time.perf_counter()
        venue.submit(make_order(f"{prefix}-{i}", qty=40 / price, price=price))
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _submits(results: list[BenchResult], tmp: str) -> None:
    with HummingbotTestServer(ExchangeState(marks={PAIR: 50_000.0})) as hb:
        store = DuckDBStore(Path(tmp) / "bench.duckdb")
        venue = HummingbotVenue(settings_for(hb), OrderJournal(store), sleep=lambda s: None)
        lat = _submit_latencies(venue, "dca", N_SUBMITS)
        results.append(BenchResult("hummingbot.submit_p50_ms (quantize + cached rules, DCA $40)",
                                   statistics.median(lat), "ms", "<= 50"))
        results.append(BenchResult("hummingbot.trading_rules_fetches_per_200_submits",
                                   float(venue.rules.loads), "count", "<= 1"))
        t = []
        for i in range(20):
            hb.state.fail_next("place", "500_after")
            t0 = time.perf_counter()
            venue.submit(make_order(f"amb-{i}", qty=40 / 20_000.0, price=20_000.0 + i))
            t.append((time.perf_counter() - t0) * 1000)
        results.append(BenchResult("hummingbot.submit_after_500_search_adopt_p50_ms", statistics.median(t), "ms", "<= 200"))
        venue.close()
        store.close()


def _reconcile_history(results: list[BenchResult], tmp: str) -> None:
    sim = ManualClock(datetime.now(UTC) - timedelta(hours=3))
    with HummingbotTestServer(ExchangeState(marks={PAIR: 60_000.0}, clock=sim)) as hb:
        store = DuckDBStore(Path(tmp) / "reconcile.duckdb")
        journal = OrderJournal(store)
        for i in range(N_HISTORY):  # each intent journalled, its order placed, then a crash: never recorded
            order = make_order(f"crash-{i}", qty=0.001, price=30_000.0 + i)
            journal.record_intent(order, recorded_ts=sim())
            hb.state.place({"account_name": hb.state.account, "connector_name": hb.state.connector,
                            "trading_pair": PAIR, "trade_type": "BUY", "amount": 0.001, "order_type": "LIMIT",
                            "price": order.price})
            hb.state.settle()
            hb.state.forget_tracking(hb.state.orders_at_venue()[-1]["order_id"])  # history only
            sim.advance(2)
        venue = HummingbotVenue(settings_for(hb), journal, sleep=lambda s: None)
        before = len(hb.state.requests)
        t0 = time.perf_counter()
        report = reconcile(venue, journal, settle=timedelta(0))
        elapsed = time.perf_counter() - t0
        assert len(report.adopted) == N_HISTORY, report.summary()
        searches = sum(1 for _, p in hb.state.requests[before:] if p == "/trading/orders/search")
        results.append(BenchResult(f"hummingbot.reconcile_{N_HISTORY}_history_orders_s", elapsed, "s", "<= 30"))
        results.append(BenchResult("hummingbot.reconcile_history_search_requests", float(searches), "count", "<= 6"))
        venue.close()
        store.close()


def _campaign(results: list[BenchResult], tmp: str) -> None:
    res = run_campaign(Path(tmp), n_orders=200, min_kills=50, seed=11)
    results.append(BenchResult("hummingbot.crash_campaign_kills", float(res.kills.total()), "count", ">= 50"))
    results.append(BenchResult("hummingbot.crash_campaign_intents", float(res.intents), "count", ""))
    results.append(BenchResult("hummingbot.crash_campaign_orders_at_venue", float(res.venue_orders), "count", ""))
    results.append(BenchResult("hummingbot.crash_campaign_doubles", float(res.doubles + res.unknown_orders), "count", "<= 0"))
    results.append(BenchResult("hummingbot.crash_campaign_fills_journalled_vs_trades",
                               float(res.fills_journalled - res.trades), "count", "<= 0"))
    results.append(BenchResult("hummingbot.crash_campaign_s", res.seconds, "s", "<= 120"))


def run() -> list[BenchResult]:
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        _submits(results, tmp)
        _reconcile_history(results, tmp)
        _campaign(results, tmp)
    return results
