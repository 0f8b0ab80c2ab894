"""core.venues.trading_rules: quantization that never worsens the plan, minimums as typed skips, the
rules cache; and the paper venue applying the same rules as the live one."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain import OrderType, Side
from core.settings import load_settings
from core.venues.paper import PaperVenue
from core.venues.trading_rules import (
    BelowMinimum,
    BelowMinimumError,
    SkipReason,
    TradingRule,
    TradingRulesCache,
    UnknownPairError,
    quantize_order,
)
from tests.hummingbot_server import kraken_rule, make_order

BTC = TradingRule.from_api("BTC-USD", kraken_rule("BTC-USD"))


def test_rule_when_read_from_the_api_floats_then_exact_decimals() -> None:
    assert BTC.min_base_amount_increment == Decimal("1E-8") and BTC.min_price_increment == Decimal("0.1")


@settings(max_examples=300, deadline=None)
@given(
    qty=st.floats(min_value=0.0001, max_value=5.0, allow_nan=False),
    price=st.floats(min_value=10_000.0, max_value=200_000.0, allow_nan=False),
    side=st.sampled_from([Side.BUY, Side.SELL]),
)
def test_quantize_when_any_limit_order_then_on_grid_never_worse_and_idempotent(qty: float, price: float, side: Side) -> None:
    out = quantize_order(make_order(side=side, qty=qty, price=price), BTC)
    assert not isinstance(out, BelowMinimum)
    assert out.quantity <= qty and qty - out.quantity < 1e-8 + 1e-15  # never more than sized, < one lot less
    assert (Decimal(repr(out.quantity)) / BTC.min_base_amount_increment) % 1 == 0
    assert (Decimal(repr(out.price)) / BTC.min_price_increment) % 1 == 0
    if side is Side.BUY:
        assert out.price <= price and price - out.price < 0.1 + 1e-9  # never pay more
    else:
        assert out.price >= price and out.price - price < 0.1 + 1e-9  # never sell cheaper
    assert quantize_order(out, BTC) == out


def test_quantize_when_dca_level_then_kraken_amount_and_tick() -> None:
    out = quantize_order(make_order(qty=40 / 61_234.56, price=61_234.56), BTC)
    assert not isinstance(out, BelowMinimum)
    assert (out.quantity, out.price) == (0.00065322, 61_234.5)


def test_quantize_when_below_minimum_size_or_notional_then_typed_skip_with_reason() -> None:
    tiny = quantize_order(make_order(qty=0.000049999), BTC)
    cheap = quantize_order(make_order(qty=0.00005, price=9_000.0), BTC)  # 0.45 USD < 0.5
    market = quantize_order(make_order(qty=0.00005, price=None, order_type=OrderType.MARKET), BTC, reference_price=9_000.0)
    assert isinstance(tiny, BelowMinimum) and tiny.reason is SkipReason.BELOW_MIN_AMOUNT
    assert isinstance(cheap, BelowMinimum) and cheap.reason is SkipReason.BELOW_MIN_NOTIONAL
    assert isinstance(market, BelowMinimum) and market.reason is SkipReason.BELOW_MIN_NOTIONAL


def test_cache_when_asked_many_times_then_fetched_once_per_ttl_and_unknown_pair_refused() -> None:
    now = [0.0]
    cache = TradingRulesCache(lambda: {"BTC-USD": BTC}, ttl=60, clock=lambda: now[0])
    assert cache.rule("BTC-USD") is BTC and cache.rule("BTC-USD") is BTC and cache.loads == 1
    now[0] = 61
    cache.rule("BTC-USD")
    assert cache.loads == 2
    with pytest.raises(UnknownPairError, match="ZZZ-USD.*BTC-USD"):
        cache.rule("ZZZ-USD")


def test_paper_venue_when_rules_configured_then_quantizes_and_skips_like_live() -> None:
    s = load_settings(execution={"paper_trading_rules": {"BTC": {
        "min_order_size": 0.00005, "min_price_increment": 0.1, "min_base_amount_increment": 1e-8,
        "min_notional_size": 0.5}}})
    venue = PaperVenue(s, cash=1_000.0, quote="USD")
    placed = venue.submit(make_order(qty=40 / 61_234.56, price=61_234.56))
    assert (placed.quantity, placed.price) == (0.00065322, 61_234.5)
    with pytest.raises(BelowMinimumError) as err:
        venue.submit(make_order("small", qty=0.00001))
    assert err.value.outcome.reason is SkipReason.BELOW_MIN_AMOUNT and venue.get_order("small") is None
    # A symbol without rules passes unchanged (the default: no paper rules configured).
    eth = venue.submit(make_order("eth", symbol="ETH", qty=0.123456789123, price=2_000.123))
    assert (eth.quantity, eth.price) == (0.123456789123, 2_000.123)
