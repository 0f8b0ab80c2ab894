"""The crash campaign (tests/hummingbot_crash.py): 50+ SIGKILLs of a live trading process at random
points between intent, send, acknowledgement and record, each followed by a restart and reconciliation,
on DCA-sized BTC orders and whole-number DOGE orders against the Hummingbot double."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hummingbot_crash import STAGES, run_campaign


@pytest.mark.slow
def test_crash_campaign_when_killed_50_times_then_each_intent_at_venue_once_fills_once_and_ledger_equals_venue(
    tmp_path: Path,
) -> None:
    res = run_campaign(tmp_path, n_orders=200, min_kills=50, seed=7)
    assert res.kills.total() >= 50 and set(res.kills) == set(STAGES), res.kills
    assert res.doubles == 0 and res.unknown_orders == 0  # every venue order is one intent's, once
    assert 0 < res.venue_orders <= res.intents
    assert res.skipped == 1  # the below-minimum order: a skip, never journalled or sent
    assert res.trades > 0 and res.fills_journalled == res.trades  # every fill booked once
    assert res.holdings_diff == {"BTC": pytest.approx(0.0, abs=1e-12), "DOGE": pytest.approx(0.0, abs=1e-9)}
