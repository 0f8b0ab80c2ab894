"""Property-based fuzzing (Hypothesis) of every input boundary: the Polygon frame parser, the REST
parser, the candle validator of the store and the settings loader. Random and adversarial inputs never
raise out of the boundary, and every bar that gets through is plausible."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ConfigError, DataQualityError
from core.feeds.polygon_schemas import (
    ParseCounters,
    parse_rest_results,
    parse_ws_message,
)
from core.plausibility import Bounds
from core.settings import load_settings
from core.storage.validation import normalise_candles

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
BOUNDS = Bounds()
SUBSCRIBED = frozenset({"BTC", "ETH"})

# Numbers an attacker would send: ordinary, huge, tiny, negative, non-finite, off the int64 edge.
ADVERSARIAL_INT = st.one_of(
    st.integers(), st.integers(min_value=2**63 - 5, max_value=2**63 + 5), st.integers(min_value=-(2**63) - 5,
                                                                                      max_value=-(2**63) + 5),
    st.just(10**400), st.just(9_300_000_000_000_000), st.just(4_102_444_800_000), st.just(-31_536_000_000),
)
ADVERSARIAL_NUM = st.one_of(ADVERSARIAL_INT, st.floats(allow_nan=True, allow_infinity=True),
                            st.floats(min_value=1, max_value=1e6), st.booleans(), st.none(), st.text(max_size=5))
MINUTE_TS = st.integers(min_value=(NOW_MS - 10 * 86_400_000) // 60_000, max_value=NOW_MS // 60_000).map(
    lambda m: m * 60_000)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def bar_event(draw: Any, ts_key: str) -> dict[str, Any]:
    """A mostly valid aggregate with some fields replaced by adversarial values."""
    o = draw(st.floats(min_value=0.001, max_value=1e6))
    c = draw(st.floats(min_value=0.001, max_value=1e6))
    ev: dict[str, Any] = {"o": o, "c": c, "h": max(o, c) * 1.01, "l": min(o, c) * 0.99, "v": 5.0,
                          ts_key: draw(MINUTE_TS)}
    if ts_key == "s":
        ev |= {"ev": "XA", "pair": draw(st.sampled_from(["BTC-USD", "ETH-USD", "FOO-USD", "btc-USD", "BTC-ETH-USD",
                                                         "BTC-USDT", "", "-USD"]))}
    for key in draw(st.lists(st.sampled_from(["o", "h", "l", "c", "v", ts_key]), max_size=3, unique=True)):
        ev[key] = draw(ADVERSARIAL_NUM)
    return ev


def _encode(events: list[Any]) -> str:
    # Python's json writes NaN/Infinity and arbitrarily large ints, as a hostile peer may.
    return json.dumps(events)


def assert_plausible(candles: pl.DataFrame, symbols: frozenset[str] | None = None) -> None:
    """Every accepted bar is plausible and a consistent candle."""
    if candles.is_empty():
        return
    ts_ms = candles["ts"].dt.epoch("ms")
    assert ts_ms.min() >= BOUNDS.earliest_ms and ts_ms.max() <= NOW_MS + 60_000  # type: ignore[operator]
    assert (ts_ms % 60_000 == 0).all()
    for col in ("open", "high", "low", "close"):
        values = candles[col]
        assert values.is_finite().all() and values.min() >= BOUNDS.min_price and values.max() <= BOUNDS.max_price  # type: ignore[operator]
    assert (candles["high"] >= candles[["open", "close"]].max_horizontal()).all()
    assert (candles["low"] <= candles[["open", "close"]].min_horizontal()).all()
    assert candles["volume"].is_finite().all() and (candles["volume"] >= 0).all()
    if symbols is not None:
        assert set(candles["symbol"]) <= symbols


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), JSON.map(json.dumps)))
def test_parse_ws_message_when_random_input_then_never_raises(raw: Any) -> None:
    counters = ParseCounters()
    parsed = parse_ws_message(raw, "USD", counters, symbols=SUBSCRIBED, now=NOW)
    assert_plausible(parsed.candles, SUBSCRIBED)
    assert counters.messages == 1


@FUZZ
@given(st.lists(st.one_of(bar_event("s"), JSON), max_size=20), st.integers(min_value=0, max_value=3000))
def test_parse_ws_message_when_adversarial_events_then_only_plausible_bars_accepted(events: list[Any], depth: int) -> None:
    counters = ParseCounters()
    raw = _encode(events)
    if depth > 1000:  # sometimes wrapped in absurd nesting
        raw = "[" * depth + raw + "]" * depth
    parsed = parse_ws_message(raw, "USD", counters, symbols=SUBSCRIBED, now=NOW)
    assert_plausible(parsed.candles, SUBSCRIBED)
    bad = sum(counters.bad_by_kind().values())
    assert counters.aggregates + bad >= min(1, len(events))  # everything was either kept or counted


@FUZZ
@given(st.one_of(st.lists(st.one_of(bar_event("t"), JSON), max_size=20), JSON))
def test_parse_rest_results_when_adversarial_page_then_never_raises_and_only_plausible(results: Any) -> None:
    counters = ParseCounters()
    # Round trip through JSON text as the HTTP body would (NaN/huge ints included).
    decoded = json.loads(json.dumps(results))
    candles = parse_rest_results(decoded, "BTC", counters, now=NOW)
    assert_plausible(candles)


@st.composite
def candle_frames(draw: Any) -> pl.DataFrame:
    n = draw(st.integers(min_value=1, max_value=6))
    floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=0.01, max_value=1e5))
    ts_us = st.one_of(st.integers(min_value=-(2**62), max_value=2**62),
                      st.integers(min_value=0, max_value=NOW_MS // 3_600_000).map(lambda h: h * 3_600_000_000))
    data = {
        "symbol": draw(st.lists(st.sampled_from(["BTC", "ETH", ""]), min_size=n, max_size=n)),
        "timeframe": draw(st.lists(st.sampled_from(["1h", "1m", "7m"]), min_size=n, max_size=n)),
        "ts": draw(st.lists(ts_us, min_size=n, max_size=n)),
        **{c: draw(st.lists(floats, min_size=n, max_size=n)) for c in ("open", "high", "low", "close", "volume")},
    }
    frame = pl.DataFrame(data, schema_overrides={"ts": pl.Int64})
    return frame.with_columns(pl.from_epoch("ts", "us").dt.replace_time_zone("UTC"))


@FUZZ
@given(candle_frames())
def test_normalise_candles_when_adversarial_frame_then_data_quality_error_or_plausible(frame: pl.DataFrame) -> None:
    try:
        out = normalise_candles(frame, BOUNDS, NOW)
    except DataQualityError:
        return
    ts_ms = out["ts"].dt.epoch("ms")
    step = {"1h": 3_600_000, "1m": 60_000}
    assert all(BOUNDS.earliest_ms <= t <= NOW_MS + step[tf] for t, tf in zip(ts_ms, out["timeframe"], strict=True))
    for col in ("open", "high", "low", "close"):
        assert all(math.isfinite(x) and BOUNDS.min_price <= x <= BOUNDS.max_price for x in out[col])


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLCRYPTO_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(values)
    try:
        yield
    finally:
        for k in values:
            os.environ.pop(k, None)
        os.environ.update(saved)


FIELDS = ["MLCRYPTO_RISK__CAPITAL", "MLCRYPTO_RISK__ALLOCATION", "MLCRYPTO_STRATEGY__DCA__LOOKBACK",
          "MLCRYPTO_STRATEGY__SWING__MAX_HOLD", "MLCRYPTO_EXECUTION__CONFIRM_LIVE", "MLCRYPTO_EXECUTION__MODE",
          "MLCRYPTO_FEED__RECONNECT_MAX_SECONDS", "MLCRYPTO_DATA__MAX_PRICE", "MLCRYPTO_DATA__EARLIEST_BAR",
          "MLCRYPTO_DATA__SYMBOLS", "MLCRYPTO_EXECUTON__MODE", "MLCRYPTO_ML__EMBARGO", "MLCRYPTO_EXECUTION"]
VALUES = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1", "0", "PT0S", "-PT4H", "P1D", "yes", "on",
                     "1", "true", "FALSE", "live", "paper", "2100-01-01T00:00:00Z", "[", "{}", '{"dca": NaN}',
                     '{"dca": 0.4, "swing": 0.3, "channel": 0.3}', '{"mode": "live", "hummingbot_password": "Zz9pw"}']),
    st.text(max_size=12).filter(lambda s: "\x00" not in s),
)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4))
def test_load_settings_when_adversarial_env_then_config_error_or_meaningful_settings(env: dict[str, str]) -> None:
    with _env(env):
        try:
            s = load_settings()
        except ConfigError as exc:
            assert "Zz9pw" not in str(exc)
            return
    assert math.isfinite(s.risk.capital) and all(math.isfinite(v) for v in s.risk.allocation.values())
    assert s.strategy.dca.lookback > timedelta(0) and s.ml.embargo > timedelta(0)
    assert "MLCRYPTO_EXECUTON__MODE" not in env
    if "MLCRYPTO_EXECUTION__CONFIRM_LIVE" in env:
        assert env["MLCRYPTO_EXECUTION__CONFIRM_LIVE"].strip().lower() in {"true", "false"}
    assert s.execution.mode == "paper" or s.execution.confirm_live
