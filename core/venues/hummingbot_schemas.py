"""Raw request/response shapes of the Hummingbot API (hummingbot/hummingbot-api), named after the source.

Routes used (all under HTTP basic auth):
  POST /trading/orders                                              HummingbotOrderRequest -> HummingbotOrderAck
  POST /trading/{account}/{connector}/orders/{client_order_id}/cancel  -> {"message": ...}
  POST /trading/orders/active    HummingbotOrderFilter -> HummingbotPage of HummingbotOrder
  POST /trading/orders/search    HummingbotOrderFilter -> HummingbotPage of HummingbotOrder (newest first)
  POST /trading/trades           HummingbotTradeFilter -> HummingbotPage of HummingbotTrade
  POST /portfolio/state          HummingbotPortfolioFilter -> {account: {connector: [HummingbotTokenBalance]}}
  GET  /connectors/{connector}/trading-rules                   -> {pair: rule} (core.venues.trading_rules)
  GET  /accounts/{account}/credentials                          -> [connector names with API keys]

Only this module and core/venues/hummingbot.py know these shapes; the rest of the project sees
core.domain types. Mapping to domain types happens here, at the edge.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
)

from core.domain import OrderStatus, OrderType, Side


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    # The API adds fields over time (and "_cursor_id" on some rows): ignore what we do not use.
    model_config = ConfigDict(extra="ignore", frozen=True)


def _aware(v: Any) -> Any:
    """Hummingbot writes ISO timestamps, sometimes without an offset (its DB stores naive UTC)."""
    if isinstance(v, str):
        v = datetime.fromisoformat(v)  # Python 3.11 reads "Z" and offsets
    if isinstance(v, int | float):
        v = datetime.fromtimestamp(v / 1000 if v > 1e11 else v, tz=UTC)
    if isinstance(v, datetime) and v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    return v


class HummingbotOrderRequest(_Request):
    """TradeRequest of routers/trading.py (POST /trading/orders)."""

    account_name: str
    connector_name: str
    trading_pair: str
    trade_type: Literal["BUY", "SELL"]
    amount: float = Field(gt=0)
    order_type: Literal["LIMIT", "MARKET", "LIMIT_MAKER"] = "LIMIT"
    price: float | None = None
    position_action: Literal["OPEN", "CLOSE"] = "OPEN"


class HummingbotOrderAck(_Response):
    """TradeResponse: order_id is the client order id the connector assigned (not ours; numeric on
    Kraken). amount and price are Decimals, sent as strings, and echo the REQUEST (not what the
    connector quantized): the venue's values are read from its order rows."""

    order_id: str
    account_name: str
    connector_name: str
    trading_pair: str
    trade_type: str
    amount: Decimal
    order_type: str
    price: Decimal | None = None
    status: str = "submitted"


class HummingbotOrder(_Response):
    """One row of /trading/orders/active and /trading/orders/search (the standardized order shape)."""

    order_id: str
    account_name: str
    connector_name: str
    trading_pair: str
    trade_type: str
    order_type: str
    amount: float
    price: float | None = None
    status: str
    filled_amount: float = 0.0
    average_fill_price: float | None = None
    fee_paid: float | None = None
    fee_currency: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    exchange_order_id: str | None = None
    error_message: str | None = None

    @field_validator("created_at", "updated_at", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> Any:
        return _aware(v)


class HummingbotTrade(_Response):
    """One row of /trading/trades (trade_repository.to_dict: fee_paid and fee_currency, the fee in the
    quote token; timestamp naive ISO, UTC on a server running in UTC)."""

    trade_id: str
    order_id: str | None = None
    account_name: str | None = None
    connector_name: str | None = None
    trading_pair: str
    trade_type: str
    amount: float
    price: float
    fee: float = Field(default=0.0, validation_alias=AliasChoices("fee", "fee_paid"))
    fee_currency: str | None = None
    timestamp: datetime

    @field_validator("timestamp", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> Any:
        return _aware(v)


class HummingbotPagination(_Response):
    limit: int = 100
    has_more: bool = False
    next_cursor: str | None = None
    total_count: int | None = None


class HummingbotPage(_Response):
    """PaginatedResponse: rows stay raw dicts here and are parsed by the caller into the row model."""

    data: list[dict[str, Any]]
    pagination: HummingbotPagination = HummingbotPagination()


class HummingbotOrderFilter(_Request):
    """ActiveOrderFilterRequest / OrderFilterRequest (times are Unix milliseconds)."""

    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None
    account_names: list[str] | None = None
    connector_names: list[str] | None = None
    trading_pairs: list[str] | None = None
    status: str | None = None
    start_time: int | None = None
    end_time: int | None = None


class HummingbotTradeFilter(_Request):
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None
    account_names: list[str] | None = None
    connector_names: list[str] | None = None
    trading_pairs: list[str] | None = None
    trade_types: list[str] | None = None
    start_time: int | None = None
    end_time: int | None = None


class HummingbotPortfolioFilter(_Request):
    """PortfolioStateFilterRequest: without refresh=true the server answers its 5-minute cache."""

    account_names: list[str] | None = None
    connector_names: list[str] | None = None
    skip_gateway: bool = False
    refresh: bool = False


class HummingbotTokenBalance(_Response):
    token: str
    units: float
    price: float | None = None
    value: float | None = None
    available_units: float | None = None


# /portfolio/state answers {account_name: {connector_name: [token balances]}}.
HummingbotPortfolioState = TypeAdapter(dict[str, dict[str, list[HummingbotTokenBalance]]])


# --- mapping to and from core.domain, at the edge ---------------------------------------------------

_STATUS: dict[str, OrderStatus] = {
    "SUBMITTED": OrderStatus.OPEN,
    "OPEN": OrderStatus.OPEN,
    "PENDING_CANCEL": OrderStatus.OPEN,  # still able to fill until the exchange confirms
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "COMPLETED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "CANCELED": OrderStatus.CANCELLED,
    "FAILED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
}


def to_order_status(hb_status: str) -> OrderStatus:
    try:
        return _STATUS[hb_status.upper()]
    except KeyError:
        raise ValueError(f"unknown Hummingbot order status {hb_status!r}; known: {sorted(_STATUS)}") from None


def to_side(trade_type: str) -> Side:
    return Side.BUY if trade_type.upper() == "BUY" else Side.SELL


def to_trade_type(side: Side) -> Literal["BUY", "SELL"]:
    return "BUY" if side == Side.BUY else "SELL"


def to_order_type(hb_order_type: str) -> OrderType:
    return OrderType.MARKET if hb_order_type.upper() == "MARKET" else OrderType.LIMIT


def to_hb_order_type(order_type: OrderType) -> Literal["LIMIT", "MARKET"]:
    return "MARKET" if order_type == OrderType.MARKET else "LIMIT"


def trading_pair(symbol: str, quote: str) -> str:
    """Our coin symbol ("BTC") to a Hummingbot trading pair ("BTC-USD")."""
    return f"{symbol.upper()}-{quote.upper()}"


def base_of(pair: str) -> str:
    return pair.split("-", 1)[0]
