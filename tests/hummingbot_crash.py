"""The crash campaign: a trading process is SIGKILLed at random points between intent, send,
acknowledgement and record, restarted, reconciled, and killed again, against the Hummingbot double.

Each run is a child process forked from a forkserver that imported everything once (so 50+
restarts stay fast, and no child inherits the test process's thread pools) that opens the DuckDB journal, reconciles, and works through the plan: DCA-sized BTC limit and
market buys (~$40 at ~$60k, 0.00066 BTC, with identical twins to tempt a wrong match) and
whole-number DOGE orders; it books fills as it goes. The kill lands at one of:
  after_intent    the intent is journalled, nothing sent
  at_venue        the server tracked the order, the ack is not yet sent (killed from the server thread)
  after_ack       the ack arrived, nothing recorded
  after_record    the order and its outcome are recorded
  in_fills        fills were read from the venue, not yet journalled
Between runs the market moves (resting buys fill) and some orders fill partially while no process
is alive. At the end one clean run reconciles; `check` compares the journal with the venue.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow  # noqa: F401 (the journal's writes load it lazily: pay it once, before forking)

from core.domain import Order, OrderType
from core.reconcile import reconcile
from core.storage.duckdb_store import DuckDBStore
from core.venues.hummingbot import HummingbotVenue, OrderInDoubtError
from core.venues.order_journal import OrderJournal
from core.venues.trading_rules import BelowMinimumError
from tests.hummingbot_server import (
    ExchangeState,
    HummingbotTestServer,
    make_order,
    settings_for,
)

STAGES = ("after_intent", "at_venue", "after_ack", "after_record", "in_fills")
BTC_MARK, DOGE_MARK = 60_000.0, 0.15


def plan(n: int, seed: int) -> list[Order]:
    rng = random.Random(seed)
    out: list[Order] = []
    for i in range(n):
        if i % 10 == 5 and out:  # an identical twin of the previous order under another id
            out.append(out[-1].model_copy(update={"client_order_id": f"o{i:03d}"}))
        elif i % 3 == 0:  # whole-number DOGE
            out.append(make_order(f"o{i:03d}", symbol="DOGE", qty=float(rng.randint(1, 5) * 100),
                                  price=round(DOGE_MARK * rng.uniform(0.97, 1.01), 7)))
        elif i % 7 == 0:
            out.append(make_order(f"o{i:03d}", qty=40 / BTC_MARK, price=None, order_type=OrderType.MARKET))
        elif i == 13:  # below Kraken's minimum: a skipped decision, never journalled
            out.append(make_order(f"o{i:03d}", qty=0.00001, price=BTC_MARK))
        else:  # a $40 DCA level, some above the mark (they fill at once), most resting below it
            px = BTC_MARK * rng.uniform(0.95, 1.005)
            out.append(make_order(f"o{i:03d}", qty=40 / px, price=px))
    return out


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def child(url_settings: Any, db: str, orders: list[Order], stage: str | None, nth: int) -> None:
    """One process lifetime: reconcile, then work through the plan; die at the `nth` `stage`."""
    store = DuckDBStore(Path(db))
    journal = OrderJournal(store)
    venue = HummingbotVenue(url_settings, journal, sleep=lambda s: None)
    counts: Counter[str] = Counter()

    def hook(name: str, fn: Any, before: bool = False, when: Any = None) -> Any:
        def wrapped(*a: Any, **k: Any) -> Any:
            hit = stage == name and (when is None or when(*a, **k))
            if hit:
                counts[name] += 1
            if hit and before and counts[name] == nth:
                _kill_self()
            out = fn(*a, **k)
            if hit and not before and counts[name] == nth:
                _kill_self()
            return out
        return wrapped

    journal.record_intent = hook("after_intent", journal.record_intent)  # type: ignore[method-assign]
    venue._place_once = hook("after_ack", venue._place_once)  # type: ignore[method-assign]
    journal.resolve_intent = hook(  # type: ignore[method-assign]
        "after_record", journal.resolve_intent, when=lambda cid, outcome, *r: outcome in ("acknowledged", "adopted")
    )
    journal.record_fills = hook("in_fills", journal.record_fills, before=True,  # type: ignore[method-assign]
                                when=lambda fills: bool(fills))
    reconcile(venue, journal, settle=timedelta(0))  # the restart: settle what the last life left
    for i, order in enumerate(orders):
        if journal.intent(order.client_order_id) or journal.order(order.client_order_id):
            continue  # handled in an earlier life (placed, adopted, absent or in doubt)
        try:
            venue.submit(order)
        except BelowMinimumError:
            journal.store.put_records("campaign_skip", [(order.client_order_id, {"reason": "below_min"})])
        except OrderInDoubtError:
            pass  # reconciliation at the next start settles it
        if i % 4 == 3:
            venue.fills_since()
    venue.fills_since()
    venue.close()
    store.close()
    os._exit(0)


@dataclass
class CampaignResult:
    runs: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    intents: int = 0
    skipped: int = 0
    venue_orders: int = 0
    doubles: int = 0
    unknown_orders: int = 0
    trades: int = 0
    fills_journalled: int = 0
    holdings_diff: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def run_campaign(
    tmp: Path, *, n_orders: int = 200, min_kills: int = 50, seed: int = 7, max_runs: int = 200
) -> CampaignResult:
    rng = random.Random(seed)
    # forkserver: children fork from a clean server process that imported this module once (fast
    # restarts), never from the test process, whose polars/arrow thread pools a fork would deadlock.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.hummingbot_crash"])
    orders = plan(n_orders, seed)
    db = str(tmp / "campaign.duckdb")
    res = CampaignResult()
    t0 = time.perf_counter()
    state = ExchangeState(marks={"BTC-USD": BTC_MARK, "DOGE-USD": DOGE_MARK}, balances={"USD": 1_000_000.0})
    with HummingbotTestServer(state) as hb:
        settings = settings_for(hb, max_retries=1, timeout_seconds=5.0)
        victim: dict[str, int] = {}

        def at_venue(_oid: str) -> None:
            victim["seen"] = victim.get("seen", 0) + 1
            if victim.get("stage") == 1 and victim["seen"] == victim["nth"]:
                os.kill(victim["pid"], signal.SIGKILL)

        state.on_placed = at_venue
        while True:
            final = res.kills.total() >= min_kills or res.runs >= max_runs
            stage = None if final else rng.choice(STAGES)
            nth = rng.randint(1, 2)
            proc = ctx.Process(target=child, args=(settings, db, orders, None if stage == "at_venue" else stage, nth))
            victim.clear()
            proc.start()
            victim.update(pid=proc.pid or 0, nth=nth, stage=1 if stage == "at_venue" else 0)
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
                raise RuntimeError("a campaign run hung")
            res.runs += 1
            if proc.exitcode == -signal.SIGKILL and stage is not None:
                res.kills[stage] += 1
            elif proc.exitcode != 0:
                raise RuntimeError(f"a campaign run failed with exit code {proc.exitcode}")
            if final:
                break
            # While no process is alive the market moves: some resting buys fill, one fills in part.
            state.settle()
            with state.lock:
                resting = [o for o in state.orders.values() if o["status"] in ("OPEN", "PARTIALLY_FILLED")]
            if resting and res.runs % 3 == 0:
                o = rng.choice(resting)
                state.fill(o["order_id"], o["amount"] / 2)
            if res.runs % 5 == 0:
                state.set_mark("BTC-USD", BTC_MARK * rng.uniform(0.96, 1.0))
                state.set_mark("DOGE-USD", DOGE_MARK * rng.uniform(0.97, 1.0))
            state.marks["BTC-USD"], state.marks["DOGE-USD"] = BTC_MARK, DOGE_MARK
        state.settle()
        res.seconds = time.perf_counter() - t0
        check(res, db, state, orders)
    return res


def check(res: CampaignResult, db: str, state: ExchangeState, orders: list[Order]) -> None:
    """Fill the result's counts from the journal and the venue (the caller asserts on them)."""
    store = DuckDBStore(Path(db))
    journal = OrderJournal(store)
    by_venue: Counter[str] = Counter(o.venue_order_id for o in journal.orders() if o.venue_order_id)
    at_venue = state.orders_at_venue()
    res.intents = len(journal.intents())
    res.skipped = len(store.get_records("campaign_skip"))
    res.venue_orders = len(at_venue)
    res.doubles = sum(n - 1 for n in by_venue.values() if n > 1)
    res.unknown_orders = sum(1 for o in at_venue if o["order_id"] not in by_venue)
    res.trades = len(state.trades)
    fills = journal.fills()
    res.fills_journalled = len(fills)
    assert {f.fill_id for f in fills} == {t["trade_id"] for t in state.trades}, "journal fills != venue trades"
    held = journal.net_holdings()
    res.holdings_diff = {
        sym: held.get(sym, 0.0) - state.balances.get(sym, 0.0) for sym in ("BTC", "DOGE")
    }
    store.close()


__all__ = ["STAGES", "CampaignResult", "plan", "run_campaign"]
