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
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from core.domain import CANDLE_SCHEMA

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
XA_FIELDS = ("o", "h", "l", "c", "v", "s")  # required for a candle; vw, z, e are informative only
REST_FIELDS = ("o", "h", "l", "c", "v", "t")


def pair_for(symbol: str, quote: str) -> str:
    return f"{symbol}-{quote}"


def ticker_for(symbol: str, quote: str) -> str:
    return f"X:{symbol}{quote}"


def symbol_from_pair(pair: str, quote: str) -> str | None:
    """BTC-USD -> BTC; None when the pair is not quoted in `quote`."""
    base, sep, q = pair.rpartition("-")
    return base if sep and base and q == quote else None


def symbol_from_ticker(ticker: str, quote: str) -> str | None:
    """X:BTCUSD -> BTC; None when the ticker is not a crypto ticker quoted in `quote`."""
    if not ticker.startswith("X:") or not ticker.endswith(quote) or len(ticker) <= 2 + len(quote):
        return None
    return ticker[2 : -len(quote)]


@dataclass(frozen=True)
class PolygonStatus:
    status: str  # connected | auth_success | auth_failed | success | error | ...
    message: str


@dataclass
class ParseCounters:
    """Metrics of everything that reached the parser; exposed by the stream client."""

    messages: int = 0
    events: int = 0
    statuses: int = 0
    aggregates: int = 0  # usable XA events turned into candle rows
    malformed_json: int = 0
    wrong_type: int = 0  # an event or field of the wrong JSON type
    invalid_values: int = 0  # right types, impossible candle (price <= 0, high < low, off-grid ts, ...)
    unknown_event: int = 0
    unknown_pair: int = 0  # a pair not quoted in the configured quote currency

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParsedMessage:
    statuses: list[PolygonStatus]
    candles: pl.DataFrame  # CANDLE_SCHEMA, timeframe 1m


def _is_number(x: Any) -> bool:
    # bool is an int subclass in Python; JSON true/false is never a price.
    return (type(x) is float or type(x) is int) and x is not True and x is not False


def empty_candles() -> pl.DataFrame:
    return pl.DataFrame(schema=CANDLE_SCHEMA)


def rows_to_candles(symbols: list[str], cols: dict[str, list[Any]], ts_field: str, counters: ParseCounters) -> pl.DataFrame:
    """Columns of raw numbers -> CANDLE_SCHEMA rows, dropping (and counting) impossible candles."""
    if not symbols:
        return empty_candles()
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
    o, h, lo, c, v = (pl.col(x) for x in ("open", "high", "low", "close", "volume"))
    prices = [o, h, lo, c]
    valid = (
        pl.all_horizontal([p.is_finite() & (p > 0) for p in prices])
        & (h >= pl.max_horizontal(o, c))
        & (lo <= pl.min_horizontal(o, c))
        & v.is_finite()
        & (v >= 0)
        & (pl.col("ts_ms") % MINUTE_MS == 0)  # the store keys bars by their minute open time
    )
    checked = frame.with_columns(valid.alias("_ok"))
    bad = checked.filter(~pl.col("_ok"))
    if not bad.is_empty():
        counters.invalid_values += len(bad)
        log.warning("dropped %d impossible aggregate(s), first: %s", len(bad), bad.row(0, named=True))
    return (
        checked.filter(pl.col("_ok"))
        .select(
            "symbol",
            pl.lit("1m").alias("timeframe"),
            pl.from_epoch("ts_ms", time_unit="ms").dt.replace_time_zone("UTC").dt.cast_time_unit("us").alias("ts"),
            "open", "high", "low", "close", "volume",
        )
    )


def parse_ws_message(raw: str | bytes, quote: str, counters: ParseCounters) -> ParsedMessage:
    """One WebSocket frame -> status events and candle rows. Never raises on bad input."""
    counters.messages += 1
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        counters.malformed_json += 1
        log.warning("malformed JSON frame dropped (%s): %.120r", exc, raw)
        return ParsedMessage([], empty_candles())
    events = payload if isinstance(payload, list) else [payload]  # Polygon sends arrays; accept one object
    statuses: list[PolygonStatus] = []
    symbols: list[str] = []
    cols: dict[str, list[Any]] = {k: [] for k in XA_FIELDS}
    for ev in events:  # per-event dispatch: the frame mixes event kinds
        counters.events += 1
        if not isinstance(ev, dict):
            counters.wrong_type += 1
            log.warning("event is not an object, dropped: %.120r", ev)
            continue
        kind = ev.get("ev")
        if kind == "XA":
            pair = ev.get("pair")
            values = [ev.get(k) for k in XA_FIELDS]
            if not isinstance(pair, str) or not all(_is_number(x) for x in values) or type(ev["s"]) is not int:
                counters.wrong_type += 1
                log.warning("XA event with missing or wrongly typed fields dropped: %.200r", ev)
                continue
            symbol = symbol_from_pair(pair, quote)
            if symbol is None:
                counters.unknown_pair += 1
                log.warning("XA event for pair %r not quoted in %s dropped", pair, quote)
                continue
            symbols.append(symbol)
            for k, x in zip(XA_FIELDS, values, strict=True):
                cols[k].append(x)
        elif kind == "status":
            status, message = ev.get("status"), ev.get("message", "")
            if not isinstance(status, str):
                counters.wrong_type += 1
                log.warning("status event without a string status dropped: %.120r", ev)
                continue
            counters.statuses += 1
            statuses.append(PolygonStatus(status, str(message)))
        else:
            counters.unknown_event += 1
            log.warning("unknown event type %r dropped", kind)
    candles = rows_to_candles(symbols, cols, "s", counters)
    counters.aggregates += len(candles)
    return ParsedMessage(statuses, candles)


def parse_rest_results(results: Any, symbol: str, counters: ParseCounters) -> pl.DataFrame:
    """The `results` array of one REST aggregates page -> candle rows (bad rows counted, dropped)."""
    if results is None:
        return empty_candles()  # Polygon omits `results` when the range holds no bar
    if not isinstance(results, list):
        counters.wrong_type += 1
        log.warning("REST `results` is not a list for %s, page dropped", symbol)
        return empty_candles()
    cols: dict[str, list[Any]] = {k: [] for k in REST_FIELDS}
    for row in results:
        counters.events += 1
        values = [row.get(k) for k in REST_FIELDS] if isinstance(row, dict) else None
        if values is None or not all(_is_number(x) for x in values) or type(row["t"]) is not int:
            counters.wrong_type += 1
            log.warning("REST aggregate with missing or wrongly typed fields dropped: %.200r", row)
            continue
        for k, x in zip(REST_FIELDS, values, strict=True):
            cols[k].append(x)
    candles = rows_to_candles([symbol] * len(cols["t"]), cols, "t", counters)
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
