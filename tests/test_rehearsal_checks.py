"""The rehearsal's end checks (bench/rehearse.py) catch what they claim to: a lost, a doubled, an extra
and a wrongly valued candle against the replayed source (real recorded 1m bars), and a fault with no
alert naming it after its time."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from bench.rehearse import Fault, alert_delay, candle_diff
from core.data_import import load_shipped
from core.settings import load_settings


def _src() -> pl.DataFrame:
    s = load_settings()
    bars = load_shipped(s.data.data_dir, "1m", ["BTC", "ETH"])
    return bars.sort("ts", "symbol").head(200).select("symbol", "ts", "close")


def test_candle_diff_when_store_equals_source_then_all_zero() -> None:
    src = _src()
    got = src.sample(fraction=1.0, shuffle=True, seed=1)
    assert candle_diff(src, got) == {"replayed_closed": 200, "stored": 200, "missing": 0, "extra": 0, "doubled": 0,
                                     "wrong_close": 0}


def test_candle_diff_when_one_lost_one_doubled_one_shifted_one_wrong_then_each_counted() -> None:
    src = _src()
    shifted, wrong = src.row(20), src.row(30)  # row 3 is lost, row 10 doubled
    got = pl.concat([
        src.with_row_index().filter(~pl.col("index").is_in([3, 20])).drop("index"),
        src.slice(10, 1),  # stored twice
        pl.DataFrame([{"symbol": shifted[0], "ts": shifted[1] + timedelta(days=1), "close": shifted[2]}],
                     schema=src.schema),  # under another minute: lost where it belongs, extra where it is
    ]).with_columns(close=pl.when((pl.col("symbol") == wrong[0]) & (pl.col("ts") == wrong[1]))
                    .then(pl.col("close") * 1.01).otherwise(pl.col("close")))
    out = candle_diff(src, got)
    assert (out["missing"], out["doubled"], out["extra"], out["wrong_close"]) == (2, 1, 1, 1)


def test_alert_delay_when_alert_names_fault_after_it_then_delay_else_none() -> None:
    fault = Fault("serve_kill", at=100.0)
    alerts = [(99.0, "mlcrypto up: serve exited with code -9"),  # before the fault: another one
              (100.5, "mlcrypto up: stream exited with code -9"),  # after, but not this fault
              (101.25, ":x: [flow_failure] mlcrypto up: serve exited with code -9: restart 1 in 1.0s")]
    assert alert_delay(fault, alerts) == 1.2  # rounded to 0.1 s
    assert alert_delay(fault, alerts[:2]) is None
    assert alert_delay(Fault("venue_errors", at=0.0), [(5.0, "flow scan-and-trade Failed: VenueError ...")]) == 5.0
