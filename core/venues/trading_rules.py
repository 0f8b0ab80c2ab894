"""A venue's trading rules (lot step, tick, minimums) and the quantization every order passes before
its intent is journalled.

Kraken (through Hummingbot) floors the amount to the lot step and the price to the tick before it
tracks an order, and refuses an order below the minimum size or notional. Quantizing ourselves first
makes the journalled intent equal to what the venue stores (so a search after an ambiguous failure
finds it), and picks the rounding direction that never worsens the plan: a buy limit rounds DOWN (never
pay more), a sell limit rounds UP (never sell cheaper), the amount always rounds DOWN (never spend more
than sized, never sell more than held). A stop-like trigger would round the protective way (a sell
stop up, a buy stop down); the domain has only LIMIT and MARKET today.

`quantize_order` is pure and returns either the quantized order or a typed `BelowMinimum` (a skipped
decision with its own reason code, not a venue error). `TradingRulesCache` keeps the rules read from
`GET /connectors/{connector}/trading-rules` for a while; an unknown pair is a clear error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum

from core.domain import Order, OrderType, Side
from core.errors import VenueError


class SkipReason(StrEnum):
    """Reason codes of an order skipped by the venue's minimums (merge into core.domain.ReasonCode)."""

    BELOW_MIN_AMOUNT = "below_min_amount"
    BELOW_MIN_NOTIONAL = "below_min_notional"


class BelowMinimumError(VenueError):
    """The order is below the venue's minimum size or notional: skip the decision (`outcome.reason`).
    Raised by a venue's submit when the caller did not check `prepare`/`quantize_order` first."""

    def __init__(self, outcome: BelowMinimum) -> None:
        super().__init__(f"{outcome.client_order_id}: {outcome.reason.value}: {outcome.detail}")
        self.outcome = outcome


class UnknownPairError(VenueError):
    """The venue has no trading rules for this pair: it does not trade it."""


@dataclass(frozen=True)
class TradingRule:
    """One pair's rules, as `GET /connectors/{c}/trading-rules` names them (decimal, never float)."""

    trading_pair: str
    min_order_size: Decimal
    min_price_increment: Decimal
    min_base_amount_increment: Decimal
    min_notional_size: Decimal = Decimal(0)

    @classmethod
    def from_api(cls, pair: str, raw: Mapping[str, object]) -> TradingRule:
        def dec(key: str) -> Decimal:
            value = raw.get(key)
            if value is None:
                return Decimal(0)
            return Decimal(str(value))  # str(): 1e-08 stays exactly 1E-8, not a binary float

        rule = cls(
            trading_pair=pair,
            min_order_size=dec("min_order_size"),
            min_price_increment=dec("min_price_increment"),
            min_base_amount_increment=dec("min_base_amount_increment"),
            min_notional_size=dec("min_notional_size"),
        )
        if rule.min_price_increment <= 0 or rule.min_base_amount_increment <= 0:
            raise VenueError(f"trading rules of {pair} have no tick or lot step: {dict(raw)}")
        return rule


@dataclass(frozen=True)
class BelowMinimum:
    """An order the venue would refuse: skip the decision with `reason`."""

    client_order_id: str
    reason: SkipReason
    detail: str


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def quantize_price(price: float, side: Side, rule: TradingRule) -> Decimal:
    """The tick-aligned limit price that never worsens the plan (buy down, sell up)."""
    p = Decimal(repr(price))
    step = rule.min_price_increment
    return floor_to(p, step) if side is Side.BUY else ceil_to(p, step)


def quantize_amount(quantity: float, rule: TradingRule) -> Decimal:
    return floor_to(Decimal(repr(quantity)), rule.min_base_amount_increment)


def quantize_order(order: Order, rule: TradingRule, reference_price: float | None = None) -> Order | BelowMinimum:
    """`order` with its amount and price on the venue's grid, or why the venue would refuse it.

    `reference_price` values a market order's notional (the venue uses its own last price)."""
    qty = quantize_amount(order.quantity, rule)
    price = order.price
    if order.order_type is OrderType.LIMIT and order.price is not None:
        price = float(quantize_price(order.price, order.side, rule))
    if qty <= 0 or qty < rule.min_order_size:
        return BelowMinimum(
            order.client_order_id,
            SkipReason.BELOW_MIN_AMOUNT,
            f"{order.symbol} amount {order.quantity} rounds to {qty}, below the minimum {rule.min_order_size}",
        )
    valued_at = price if order.order_type is OrderType.LIMIT else reference_price
    if valued_at is not None and rule.min_notional_size > 0:
        notional = qty * Decimal(repr(valued_at))
        if notional < rule.min_notional_size:
            return BelowMinimum(
                order.client_order_id,
                SkipReason.BELOW_MIN_NOTIONAL,
                f"{order.symbol} notional {notional:.8f} is below the minimum {rule.min_notional_size}",
            )
    return order.model_copy(update={"quantity": float(qty), "price": price})


class TradingRulesCache:
    """Pair -> TradingRule, loaded by `fetch` (all pairs at once) and kept for `ttl` seconds."""

    def __init__(
        self,
        fetch: Callable[[], Mapping[str, TradingRule]],
        *,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._rules: dict[str, TradingRule] = {}
        self._loaded_at: float | None = None
        self.loads = 0

    def rule(self, pair: str) -> TradingRule:
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at > self._ttl:
            self._rules = dict(self._fetch())
            self._loaded_at = now
            self.loads += 1
        try:
            return self._rules[pair]
        except KeyError:
            known = ", ".join(sorted(self._rules)[:10])
            raise UnknownPairError(
                f"the venue has no trading rules for {pair!r} (it does not trade it); known pairs include: {known}"
            ) from None


def rules_from_mapping(rules: Mapping[str, Mapping[str, float]]) -> dict[str, TradingRule]:
    """Settings' {symbol: {min_order_size, min_price_increment, ...}} as TradingRules."""
    return {sym.upper(): TradingRule.from_api(sym.upper(), dict(r)) for sym, r in rules.items()}


__all__ = [
    "BelowMinimum",
    "BelowMinimumError",
    "SkipReason",
    "TradingRule",
    "TradingRulesCache",
    "UnknownPairError",
    "ceil_to",
    "floor_to",
    "quantize_amount",
    "quantize_order",
    "quantize_price",
    "rules_from_mapping",
]
