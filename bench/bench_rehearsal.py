"""The deployed stack rehearsed under faults (bench/rehearse.py): `mlcrypto up` offline with the
replay-as-live stream, live trading against the Hummingbot double, and kill -9 of the serving process
mid-scan, the feed dropped, the MLflow server killed and venue 500s/timeouts, one every 4 minutes.

MLCRYPTO_BENCH_REHEARSAL_MINUTES sets the length (default 16: every fault once; the README quotes a
30-minute run). Figures: time from `mlcrypto up` to the first gated decision, faults injected and
alerted, candles lost or doubled against the replayed source, orders doubled, ledger vs venue.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from bench.common import BenchResult
from bench.rehearse import ROOT, rehearse, report


def run() -> list[BenchResult]:
    minutes = float(os.environ.get("MLCRYPTO_BENCH_REHEARSAL_MINUTES", "16"))
    var = ROOT / "var" / "rehearsal" / datetime.now(UTC).strftime("bench-%Y%m%dT%H%M%S")  # kept: logs, alerts, JSON
    r = rehearse(minutes, 240.0, var, log=lambda m: print("   " + m, flush=True))
    print("   " + report(r).replace("\n", "\n   "))
    unalerted = sum(f.alerted_after_s is None for f in r.faults)
    orders_doubled = r.orders.get("doubled", -1) + r.orders.get("unknown_at_venue", 0)
    first = r.seconds_to_first_decision if r.seconds_to_first_decision is not None else float("inf")
    return [
        BenchResult("rehearsal.minutes_run", minutes, "min", ""),
        BenchResult("rehearsal.faults_injected", len(r.faults), "faults", ">= 4"),
        BenchResult("rehearsal.faults_not_alerted", unalerted, "faults", "<= 0"),
        BenchResult("rehearsal.candles_replayed_closed", r.candles.get("replayed_closed", 0), "candles", ""),
        BenchResult("rehearsal.candles_lost", r.candles.get("missing", -1) + r.candles.get("wrong_close", 0), "candles", "<= 0"),
        BenchResult("rehearsal.candles_doubled", r.candles.get("doubled", -1) + r.candles.get("extra", 0), "candles", "<= 0"),
        BenchResult("rehearsal.orders_sent", r.orders.get("venue_orders", 0), "orders", ""),
        BenchResult("rehearsal.orders_doubled", orders_doubled, "orders", "<= 0"),
        BenchResult("rehearsal.ledger_vs_venue_mismatches", 0 if r.checks.get("ledger = venue") else 1, "", "<= 0"),
        BenchResult("up.first_gated_decision.seconds", first, "s", "<= 900"),
    ]
