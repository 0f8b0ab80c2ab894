"""The main job's flow (the offline-session deployment) end to end on a small scale: 3 coins, one
simulated day replayed hour by hour as scan-and-trade subflow runs, rule-only (no training), then the
out-of-sample backtests and the report files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from core.settings import load_settings

SYMBOLS = ["BTC", "ETH", "SOL"]


def test_offline_session_when_one_day_replayed_then_24_scans_and_a_report(prefect_harness: str, tmp_path: Path) -> None:
    from flows.offline_session import offline_session
    from tasks.runtime import open_runtime

    settings = load_settings(data={"var_dir": tmp_path, "symbols": SYMBOLS}, ml={"train_end": "2025-03-01"})
    with open_runtime(settings) as rt:
        out = offline_session(days=1, train="never", runtime=rt)
        # Assert: one scan per simulated hour; every replayed bar is in the store; the report exists
        # and compares the two backtests over the same window.
        assert out["paper"]["scan flow runs"] == 24
        first, last = (datetime.strptime(x.strip(), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
                       for x in out["paper"]["window"].removesuffix(" UTC").split(".."))
        replayed = rt.store.read_many(SYMBOLS, "1h", first, last)
        assert replayed.group_by("symbol").len()["len"].to_list() == [24, 24, 24]
        html = Path(out["html"])
        assert html.is_file() and Path(out["png"]).is_file()
        data = json.loads((html.parent / "comparison.json").read_text())
        rows = {r["metric"]: r for r in data["comparison"]}
        assert rows["start"]["ml"] == rows["start"]["rule_only"] and rows["end"]["ml"] == rows["end"]["rule_only"]
        assert rows["signals"]["ml"] == rows["signals"]["rule_only"]
        # Buy-and-hold BTC over the same window is in the artifact's table beside ML and rule-only.
        bh = rows["total_return"]["buy_and_hold_btc"]
        assert bh is not None and "| total_return | " in out["markdown"]
        assert out["markdown"].splitlines()[2] == "| metric | ML | rule-only | buy-and-hold BTC |"
        assert f"{bh:.2%} |" in next(line for line in out["markdown"].splitlines() if line.startswith("| total_return"))
