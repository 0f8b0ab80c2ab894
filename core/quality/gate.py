"""Great Expectations gate on the candles a scan will use: failing symbols are left out of the scan.

One GX run covers the whole multi-symbol frame: the per-symbol quantities (previous close, gap to
the previous bar, age of the last bar) are computed in polars first, then a single ExpectationSuite
checks every row, and failures are attributed to symbols from the unexpected row indices. That is one
validation per scan, not one per symbol.

Expectations (thresholds from settings.data): no null or NaN field; all prices > 0;
high >= max(open, close); low <= min(open, close); volume >= 0; (symbol, ts) unique; the last bar
closed at most `freshness_bars` bars before `now`; at most `gap_tolerance_bars` missing bars between
consecutive bars; |close-to-close return| <= `max_abs_return`.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from typing import Any

import polars as pl

from core.domain import timeframe_duration
from core.errors import DataQualityError
from core.quality.results import GateReport, GateResult
from core.settings import Settings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics leave this machine

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import (  # noqa: E402
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

log = logging.getLogger(__name__)

REQUIRED = ["symbol", "ts", "open", "high", "low", "close", "volume"]
FLOATS = ["open", "high", "low", "close", "volume"]
NO_BARS = "has_bars"
MISSING_SYMBOL = "<missing symbol>"


def _suite(settings: Settings) -> list[tuple[str, Any]]:
    d = settings.data
    between = gxe.ExpectColumnValuesToBeBetween
    exps: list[tuple[str, Any]] = [
        # One computed column (null or NaN fields per row) instead of seven expectations: GX's cost is
        # per expectation, and the scan's budget is one second for 99 symbols.
        ("no_nulls", between(column="null_fields", max_value=0)),
        ("positive_prices", between(column="min_price", min_value=0, strict_min=True)),
        ("high_ge_open_close", gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="high", column_B="max_oc", or_equal=True)),
        ("low_le_open_close", gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="min_oc", column_B="low", or_equal=True)),
        ("volume_non_negative", between(column="volume", min_value=0)),
        ("unique_symbol_ts", gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "ts"])),
        ("fresh", between(column="stale_bars", max_value=d.freshness_bars)),
        ("no_gaps", between(column="gap_bars", max_value=d.gap_tolerance_bars)),
        ("returns_bounded", between(column="abs_return", max_value=d.max_abs_return)),
    ]
    for name, exp in exps:
        exp.meta = {"name": name}
    return exps


class CandleGate:
    """Holds the GX context and suite, built once; validate() is called every scan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        asset = self.context.data_sources.add_pandas("candles").add_dataframe_asset("scan_bars")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
        self.suite = self.context.suites.add(gx.ExpectationSuite(name="candles_for_scan"))
        self.names: list[str] = []
        for name, exp in _suite(settings):
            self.suite.add_expectation(exp)
            self.names.append(name)

    def derived(self, bars: pl.DataFrame, now: datetime) -> pl.DataFrame:
        """The per-row and per-symbol quantities the suite checks, computed in polars (no look-ahead:
        each row only uses itself and the previous bar of its symbol)."""
        missing = [c for c in REQUIRED if c not in bars.columns]
        if missing:
            raise DataQualityError(f"gate input lacks columns {missing}; it has {bars.columns}")
        timeframes = bars["timeframe"].drop_nulls().unique().to_list() if "timeframe" in bars.columns else []
        if len(timeframes) != 1:
            raise DataQualityError(f"gate input must hold one timeframe, got {timeframes}")
        step = timeframe_duration(timeframes[0])
        step_us = int(step.total_seconds() * 1_000_000)
        o, h, lo, c = (pl.col(x) for x in ("open", "high", "low", "close"))
        prev_ts = pl.col("ts").shift(1).over("symbol")
        return (
            bars.sort("symbol", "ts", nulls_last=True)
            .with_columns(
                max_oc=pl.max_horizontal(o, c),
                min_oc=pl.min_horizontal(o, c),
                min_price=pl.min_horizontal(o, h, lo, c),
                null_fields=pl.sum_horizontal(
                    [pl.col(x).is_null().cast(pl.Int32) for x in ("symbol", "ts")]
                    + [(pl.col(x).is_null() | pl.col(x).is_nan()).fill_null(True).cast(pl.Int32) for x in FLOATS]
                ),
                abs_return=(c / c.shift(1).over("symbol") - 1).abs(),
                gap_bars=(pl.col("ts") - prev_ts).dt.total_microseconds() / step_us - 1,
                stale_bars=pl.when(pl.int_range(pl.len()).over("symbol") == pl.len().over("symbol") - 1)
                .then((pl.lit(now) - pl.col("ts") - pl.lit(step)).dt.total_microseconds() / step_us)
                .otherwise(None),
            )
            .with_columns(pl.col("symbol").fill_null(MISSING_SYMBOL).alias("_owner"))
        )

    def validate(
        self, bars: pl.DataFrame, now: datetime, symbols: list[str] | None = None, timeframe: str | None = None
    ) -> GateReport:
        started = time.perf_counter()
        if bars.is_empty():  # nothing to run the suite on: every wanted symbol fails for lack of bars
            return no_bars_report(timeframe, now, symbols or [], time.perf_counter() - started)
        frame = self.derived(bars, now)
        timeframe = frame["timeframe"].drop_nulls()[0]
        owners = frame["_owner"]
        pdf = frame.drop("_owner", "timeframe").to_pandas()
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": pdf})
        outcome = batch.validate(self.suite, result_format={"result_format": "COMPLETE"})
        failures: dict[str, dict[str, Any]] = {}
        for res in outcome.results:
            if res.success:
                continue
            cfg = res.expectation_config
            name = (cfg.meta or {}).get("name", cfg.type) if cfg is not None else "unnamed expectation"
            idx = res.result.get("unexpected_index_list") or []
            if res.exception_info and res.exception_info.get("raised_exception"):
                raise DataQualityError(f"gate expectation {name} could not run: {res.exception_info}")
            hit = frame.select("_owner", "ts")[[int(i) for i in idx]] if idx else frame.select("_owner", "ts").clear()
            per_symbol = hit.group_by("_owner").agg(rows=pl.len(), first_ts=pl.col("ts").min())
            for row in per_symbol.iter_rows(named=True):
                first = row["first_ts"].isoformat() if row["first_ts"] is not None else None
                failures.setdefault(row["_owner"], {})[name] = {"rows": row["rows"], "first_ts": first}
        present = owners.unique(maintain_order=True).to_list()
        present_set = set(present)
        results = []
        for symbol in dict.fromkeys((symbols or []) + present):
            detail = dict(failures.get(symbol, {}))
            if symbol not in present_set:
                detail[NO_BARS] = {"rows": 0, "first_ts": None}
            results.append(GateResult(symbol, not detail, tuple(detail), detail))
        report = GateReport(timeframe, now, tuple(results), len(frame), time.perf_counter() - started)
        if report.failed_symbols:
            log.warning("gate failed for %s", {r.symbol: r.failed_expectations for r in report.results if not r.passed})
        return report


def no_bars_report(timeframe: str | None, now: datetime, symbols: list[str], seconds: float = 0.0) -> GateReport:
    """The report of an empty window: every symbol FAILS with the reason `has_bars` (no bars at all)."""
    detail = {NO_BARS: {"rows": 0, "first_ts": None, "reason": f"no {timeframe or ''} bars in the store".replace("  ", " ")}}
    results = tuple(GateResult(s, False, (NO_BARS,), dict(detail)) for s in dict.fromkeys(symbols))
    report = GateReport(timeframe or "?", now, results, 0, seconds)
    if results:
        log.warning("gate failed: no %s bars for %s", timeframe, list(dict.fromkeys(symbols)))
    return report


def run_gate(bars: pl.DataFrame, settings: Settings, now: datetime, *, symbols: list[str] | None = None,
             gate: CandleGate | None = None, timeframe: str | None = None) -> GateReport:
    """Validate the scan's candles; pass a long-lived CandleGate to skip rebuilding the GX context."""
    if bars.is_empty():  # no GX context needed to say that nothing is there
        return no_bars_report(timeframe, now, symbols or [])
    return (gate or CandleGate(settings)).validate(bars, now, symbols, timeframe)


def apply_gate(bars: pl.DataFrame, settings: Settings, now: datetime, *, store: Any = None, alerter: Any = None,
               symbols: list[str] | None = None, gate: CandleGate | None = None,
               timeframe: str | None = None) -> tuple[pl.DataFrame, GateReport]:
    """Gate a scan: store the per-symbol results, alert on failures, return only the passing symbols' bars.
    An empty window (a symbol or timeframe without bars) is a FAIL of every wanted symbol, never an error."""
    from core.quality.results import alert_report, store_report

    report = run_gate(bars, settings, now, symbols=symbols, gate=gate, timeframe=timeframe)
    if store is not None:
        store_report(store, report)
    if alerter is not None:
        alert_report(alerter, report)
    return bars.filter(pl.col("symbol").is_in(report.passed_symbols)), report
