"""Polygon (Massive since 2025) crypto wire formats, kept at the edge in the source's own shape.

- WebSocket, crypto aggregates per minute (channel `XA`): every frame is a JSON array of events;
  status events `{"ev":"status","status":...,"message":...}` and aggregates
  `{"ev":"XA","pair":"BTC-USD","o","c","h","l","v","vw","z","s","e"}` with s/e the window start/end
  in Unix milliseconds. https://massive.com/docs/websocket/crypto/aggregates-per-minute
- REST aggregates: `GET /v2/aggs/ticker/X:BTCUSD/range/1/minute/{from}/{to}` ->
  `{"ticker","status","resultsCount","results":[{"o","c","h","l","v","vw","t","n"}],"next_url"}` with t
  the window start in Unix ms. https://massive.com/docs/rest/crypto/aggregates/custom-bars

Symbol mapping (quote = settings.data.quote): symbol BTC <-> pair "BTC-<quote>" <-> ticker "X:BTC<quote>".
Parsing never raises on bad input: it counts and drops what it cannot use (see ParseCounters).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import polars as pl

from core.boundary import is_process_control
from core.domain import CANDLE_SCHEMA
from core.plausibility import (
    INT_OVERFLOW,
    Bounds,
    RejectLog,
    fits_int64,
    preview,
)

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
XA_FIELDS = ("o", "h", "l", "c", "v", "s")  # required for a candle; vw, z, e are informative only
REST_FIELDS = ("o", "h", "l", "c", "v", "t")
# Without a subscription list a base must at least look like a symbol: upper-case letters and digits.
_SYMBOL = re.compile(r"[A-Z0-9]{1,20}")
_DEFAULT_BOUNDS = Bounds()


def pair_for(symbol: str, quote: str) -> str:
    return f"{symbol}-{quote}"


def ticker_for(symbol: str, quote: str) -> str:
    return f"X:{symbol}{quote}"


def symbol_from_pair(pair: str, quote: str, symbols: Collection[str] | None = None) -> str | None:
    """BTC-USD -> BTC; None when the pair is not `<symbol>-<quote>` for a subscribed symbol (`symbols`),
    or, without a subscription list, for something shaped like a symbol (so never `btc` or `BTC-ETH`)."""
    base, sep, q = pair.rpartition("-")
    if not sep or q != quote:
        return None
    if symbols is not None:
        return base if base in symbols else None
    return base if _SYMBOL.fullmatch(base) else None


def symbol_from_ticker(ticker: str, quote: str) -> str | None:
    """X:BTCUSD -> BTC; None when the ticker is not a crypto ticker quoted in `quote`."""
    if not ticker.startswith("X:") or not ticker.endswith(quote) or len(ticker) <= 2 + len(quote):
        return None
    return ticker[2 : -len(quote)]


@dataclass(frozen=True)
class PolygonStatus:
    status: str  # connected | auth_success | auth_failed | success | error | ...
    message: str


# The counters that are rejections (bad input dropped), by kind.
REJECT_KINDS = (
    "malformed_json", "too_deep", "wrong_type", "int_overflow", "invalid_values", "implausible_ts",
    "implausible_price", "implausible_volume", "unknown_event", "unknown_pair", "boundary_errors",
)


@dataclass
class ParseCounters:
    """Metrics of everything that reached the parser; exposed by the stream client."""

    messages: int = 0
    events: int = 0
    statuses: int = 0
    aggregates: int = 0  # usable XA events turned into candle rows
    malformed_json: int = 0
    too_deep: int = 0  # JSON nested deeper than the decoder's recursion limit
    wrong_type: int = 0  # an event or field of the wrong JSON type
    int_overflow: int = 0  # an integer outside int64 or a number outside the float range
    invalid_values: int = 0  # right types, impossible candle (high < low, off-grid ts, ...)
    implausible_ts: int = 0  # open time before data.earliest_bar or after now + one bar
    implausible_price: int = 0  # a price non-finite or outside [data.min_price, data.max_price]
    implausible_volume: int = 0  # volume non-finite, negative or above data.max_volume
    unknown_event: int = 0
    unknown_pair: int = 0  # a pair not `<subscribed symbol>-<quote>`
    boundary_errors: int = 0  # anything else the parser raised, caught at the frame boundary
    rejects: RejectLog = field(default_factory=lambda: RejectLog(log), repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rejects"}

    def bad_by_kind(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in REJECT_KINDS if getattr(self, k)}

    def reject(self, kind: str, n: int = 1, example: str = "") -> None:
        """Count n dropped inputs of `kind`; logged once per kind per interval (never per event)."""
        setattr(self, kind, getattr(self, kind) + n)
        self.rejects.reject(kind, n, example)


@dataclass(frozen=True)
class ParsedMessage:
    statuses: list[PolygonStatus]
    candles: pl.DataFrame  # CANDLE_SCHEMA, timeframe 1m


def _is_number(x: Any) -> bool:
    # bool is an int subclass in Python; JSON true/false is never a price.
    return (type(x) is float or type(x) is int) and x is not True and x is not False


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def _row(values: list[Any], ts_field: str, counters: ParseCounters, raw: Any) -> list[Any] | None:
    """Typed, range-checked numbers of one event (prices/volume as float, ts as an int64), or None."""
    *numbers, ts = values
    if not all(_is_number(x) for x in values) or type(ts) is not int:
        counters.reject("wrong_type", 1, f"missing or wrongly typed fields: {preview(raw)}")
        return None
    if not fits_int64(ts):
        counters.reject(INT_OVERFLOW, 1, f"{ts_field} outside int64: {preview(raw)}")
        return None
    try:
        floats = [float(x) for x in numbers]  # an int beyond 1.8e308 raises OverflowError
    except OverflowError:
        counters.reject(INT_OVERFLOW, 1, f"number outside the float range: {preview(raw)}")
        return None
    return [*floats, ts]


def rows_to_candles(
    symbols: list[str], cols: dict[str, list[Any]], ts_field: str, counters: ParseCounters,
    bounds: Bounds | None = None, now: datetime | None = None,
) -> pl.DataFrame:
    """Columns of checked numbers -> CANDLE_SCHEMA rows, dropping (and counting by kind) implausible
    and impossible candles. The epoch is checked before it becomes a datetime (no overflow panic)."""
    if not symbols:
        return empty_candles()
    bounds = bounds or _DEFAULT_BOUNDS
    now = now or datetime.now(UTC)
    frame = pl.DataFrame(
        {
            "symbol": symbols,
            "ts_ms": cols[ts_field],
            "open": cols["o"],
            "high": cols["h"],
            "low": cols["l"],
            "close": cols["c"],
            "volume": cols["v"],
        },
        schema={"symbol": pl.Utf8, "ts_ms": pl.Int64, "open": pl.Float64, "high": pl.Float64,
                "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64},
    )
    o, h, lo, c = (pl.col(x) for x in ("open", "high", "low", "close"))
    impossible = (
        (h < pl.max_horizontal(o, c))
        | (lo > pl.min_horizontal(o, c))
        | (pl.col("ts_ms") % MINUTE_MS != 0)  # the store keys bars by their minute open time
    )
    checked = frame.with_columns(
        pl.coalesce(bounds.reason(now, MINUTE_MS), pl.when(impossible).then(pl.lit("invalid_values"))).alias("_bad")
    )
    bad = checked.filter(pl.col("_bad").is_not_null())
    if not bad.is_empty():
        for kind, rows in bad.group_by("_bad", maintain_order=True):
            first = rows.drop("_bad").row(0, named=True)
            counters.reject(str(kind[0]), len(rows), f"first: {preview(first)}")
    return (
        checked.filter(pl.col("_bad").is_null())
        .select(
            "symbol",
            pl.lit("1m").alias("timeframe"),
            pl.from_epoch("ts_ms", time_unit="ms").dt.replace_time_zone("UTC").dt.cast_time_unit("us").alias("ts"),
            "open", "high", "low", "close", "volume",
        )
    )


def _contain(counters: ParseCounters, exc: BaseException, raw: Any) -> None:
    """Count what escaped the parser: too deep, overflow, or anything else (native panics included)."""
    if is_process_control(exc):
        raise exc
    kind = "too_deep" if isinstance(exc, RecursionError) else (
        INT_OVERFLOW if isinstance(exc, OverflowError) else "boundary_errors")
    counters.reject(kind, 1, f"{type(exc).__name__}: {str(exc)[:120]}; frame {preview(raw)}")


def parse_ws_message(
    raw: str | bytes, quote: str, counters: ParseCounters, *, symbols: Collection[str] | None = None,
    bounds: Bounds | None = None, now: datetime | None = None,
) -> ParsedMessage:
    """One WebSocket frame -> status events and candle rows. Never raises on bad input: whatever the
    parsing raises (RecursionError, OverflowError, a polars panic, ...) becomes a counted bad message.

    `symbols`: the subscribed symbols; pairs of any other symbol are dropped (unknown_pair)."""
    counters.messages += 1
    try:
        return _parse_ws(raw, quote, counters, symbols, bounds, now)
    except BaseException as exc:  # noqa: BLE001 - the boundary: see core.boundary (process control re-raised)
        _contain(counters, exc, raw)
        return ParsedMessage([], empty_candles())


def _parse_ws(
    raw: str | bytes, quote: str, counters: ParseCounters, symbols: Collection[str] | None,
    bounds: Bounds | None, now: datetime | None,
) -> ParsedMessage:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        counters.reject("malformed_json", 1, f"malformed JSON frame ({str(exc)[:80]}): {preview(raw)}")
        return ParsedMessage([], empty_candles())
    events = payload if isinstance(payload, list) else [payload]  # Polygon sends arrays; accept one object
    statuses: list[PolygonStatus] = []
    rows_symbols: list[str] = []
    cols: dict[str, list[Any]] = {k: [] for k in XA_FIELDS}
    for ev in events:  # per-event dispatch: the frame mixes event kinds
        counters.events += 1
        if not isinstance(ev, dict):
            counters.reject("wrong_type", 1, f"event is not an object: {preview(ev)}")
            continue
        kind = ev.get("ev")
        if kind == "XA":
            pair = ev.get("pair")
            if not isinstance(pair, str):
                counters.reject("wrong_type", 1, f"XA event without a string pair: {preview(ev)}")
                continue
            symbol = symbol_from_pair(pair, quote, symbols)
            if symbol is None:  # checked first: the cheapest way to drop a flood of foreign pairs
                counters.reject("unknown_pair", 1, f"pair {preview(pair)} is not a subscribed <symbol>-{quote}")
                continue
            row = _row([ev.get(k) for k in XA_FIELDS], "s", counters, ev)
            if row is None:
                continue
            rows_symbols.append(symbol)
            for k, x in zip(XA_FIELDS, row, strict=True):
                cols[k].append(x)
        elif kind == "status":
            status, message = ev.get("status"), ev.get("message", "")
            if not isinstance(status, str):
                counters.reject("wrong_type", 1, f"status event without a string status: {preview(ev)}")
                continue
            counters.statuses += 1
            statuses.append(PolygonStatus(status, message if isinstance(message, str) else preview(message)))
        else:
            counters.reject("unknown_event", 1, f"unknown event type {preview(kind)}")
    candles = rows_to_candles(rows_symbols, cols, "s", counters, bounds, now)
    counters.aggregates += len(candles)
    return ParsedMessage(statuses, candles)


def parse_rest_results(
    results: Any, symbol: str, counters: ParseCounters, bounds: Bounds | None = None, now: datetime | None = None,
) -> pl.DataFrame:
    """The `results` array of one REST aggregates page -> candle rows (bad rows counted, dropped).
    Never raises on bad input (same boundary as parse_ws_message)."""
    try:
        return _parse_rest(results, symbol, counters, bounds, now)
    except BaseException as exc:  # noqa: BLE001 - the boundary: see core.boundary (process control re-raised)
        _contain(counters, exc, results)
        return empty_candles()


def _parse_rest(
    results: Any, symbol: str, counters: ParseCounters, bounds: Bounds | None, now: datetime | None
) -> pl.DataFrame:
    if results is None:
        return empty_candles()  # Polygon omits `results` when the range holds no bar
    if not isinstance(results, list):
        counters.reject("wrong_type", 1, f"REST `results` is not a list for {symbol}; page dropped")
        return empty_candles()
    cols: dict[str, list[Any]] = {k: [] for k in REST_FIELDS}
    for item in results:
        counters.events += 1
        if not isinstance(item, dict):
            counters.reject("wrong_type", 1, f"REST aggregate is not an object: {preview(item)}")
            continue
        row = _row([item.get(k) for k in REST_FIELDS], "t", counters, item)
        if row is None:
            continue
        for k, x in zip(REST_FIELDS, row, strict=True):
            cols[k].append(x)
    candles = rows_to_candles([symbol] * len(cols["t"]), cols, "t", counters, bounds, now)
    counters.aggregates += len(candles)
    return candles


def candles_to_xa_json(candles: pl.DataFrame, quote: str) -> pl.Series:
    """Candle rows -> one XA event JSON object per row (the replay server's wire format).

    The shipped candles have no VWAP or average trade size: vw is the typical price (h+l+c)/3 and z is 0.
    """
    s_ms = pl.col("ts").dt.epoch("ms")
    return candles.select(
        pl.struct(
            pl.lit("XA").alias("ev"),
            (pl.col("symbol") + f"-{quote}").alias("pair"),
            pl.col("volume").alias("v"),
            ((pl.col("high") + pl.col("low") + pl.col("close")) / 3).alias("vw"),
            pl.lit(0).alias("z"),
            pl.col("open").alias("o"),
            pl.col("close").alias("c"),
            pl.col("high").alias("h"),
            pl.col("low").alias("l"),
            s_ms.alias("s"),
            (s_ms + MINUTE_MS).alias("e"),
        ).struct.json_encode().alias("json")
    ).to_series()
