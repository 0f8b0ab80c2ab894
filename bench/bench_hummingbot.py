"""Live-venue overheads against the local Hummingbot API double (loopback HTTP, DuckDB journal).

What the venue adds on top of the real API's own latency: journal writes before/after each send,
the order search after an ambiguous failure, and a start-up reconciliation over many orders.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.common import BenchResult
from core.reconcile import reconcile
from core.storage.duckdb_store import DuckDBStore
from core.venues.hummingbot import HummingbotVenue
from core.venues.order_journal import OrderJournal
from tests.hummingbot_server import PAIR, ExchangeState, HummingbotTestServer, make_order, settings_for

N_SUBMITS = 200
N_RECONCILE = 300


def _submit_latencies(venue: HummingbotVenue, prefix: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        venue.submit(make_order(f"{prefix}-{i}", price=30_000.0 + i))
        out.append((time.perf_counter() - t0) * 1000)
    return out


def run() -> list[BenchResult]:
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory() as tmp, HummingbotTestServer(ExchangeState(marks={PAIR: 40_000.0})) as hb:
        store = DuckDBStore(Path(tmp) / "bench.duckdb")
        journal = OrderJournal(store)
        venue = HummingbotVenue(settings_for(hb), journal, sleep=lambda s: None)

        lat = _submit_latencies(venue, "fresh", N_SUBMITS)
        results.append(BenchResult("hummingbot.submit_p50_ms (journal 0-200 orders)", statistics.median(lat), "ms", "<= 50"))
        lat = _submit_latencies(venue, "more", N_SUBMITS)
        results.append(BenchResult("hummingbot.submit_p50_ms (journal 200-400 orders)", statistics.median(lat), "ms", "<= 50"))

        # Ambiguous failure: a 500 after placing -> search the venue's orders -> adopt.
        t = []
        for i in range(20):
            hb.state.fail_next("place", "500_after")
            t0 = time.perf_counter()
            venue.submit(make_order(f"amb-{i}", price=20_000.0 + i))
            t.append((time.perf_counter() - t0) * 1000)
        results.append(BenchResult("hummingbot.submit_after_500_adopt_p50_ms", statistics.median(t), "ms", "<= 200"))

        # Start-up reconciliation: N intents journalled, the venue got all of them (a crash each time).
        for i in range(N_RECONCILE):
            order = make_order(f"crash-{i}", price=10_000.0 + i)
            journal.record_intent(order)
            hb.state.place({"account_name": hb.state.account, "connector_name": hb.state.connector, "trading_pair": PAIR,
                            "trade_type": "BUY", "amount": order.quantity, "order_type": "LIMIT", "price": order.price})
        t0 = time.perf_counter()
        report = reconcile(venue, journal)
        elapsed = time.perf_counter() - t0
        assert len(report.adopted) == N_RECONCILE, report.summary()
        results.append(BenchResult(f"hummingbot.reconcile_{N_RECONCILE}_crashed_intents_s", elapsed, "s", "<= 10"))
        venue.close()
        store.close()
    return results
