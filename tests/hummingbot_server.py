"""A Hummingbot API double with a Kraken-like connector: a real HTTP server (stdlib, in a thread).

Built from the source of hummingbot/hummingbot-api (commit ee7ce5c), reproducing its BEHAVIOUR, not
only its wire format (file references are to that repository):

- Trading rules (`GET /connectors/{c}/trading-rules`, routers/connectors.py + services/market_data_service
  .py): lot step, tick, minimum size and notional per pair, floats in the JSON; an unknown connector 404.
- Placing (`POST /trading/orders`, routers/trading.py + services/accounts_service.py place_trade): account
  404 -> connector (500 "Unexpected error placing trade: ..." when it has no credentials or does not
  exist, e.g. `kraken_paper_trade`) -> price required (400) -> rules loaded (503) -> pair known (400) ->
  amount floored to the lot, below `min_order_size` 400 -> notional below `min_notional_size` 400.
  The connector floors the price to the tick too (hummingbot's quantize_order_price). The ack echoes
  the REQUEST's amount and price as decimal strings (TradeResponse has Decimal fields), status
  "submitted", and a numeric client order id (Kraken's connector uses numeric ids).
- Asynchronous effects: the connector tracks the order at once (active orders, status SUBMITTED,
  i.e. PENDING_CREATE) but the exchange's creation, the history row (services/orders_recorder.py writes
  it on the OrderCreated event, created_at = the DB's now()) and a market order's fill happen AFTER the
  acknowledgement: queued with `latency` and applied by the first request at or after that time (or by
  `settle()`). Cancels answer "Order cancellation initiated" and take effect the same way.
- The stale connector clock: the connector's current_timestamp is set at start and then only by the
  5-minute account-state loop (services/unified_connector_service.py `_set_current_timestamp`), so an
  active order's `created_at` is up to 5 minutes old.
- `/trading/orders/search`: the repository returns only the newest `limit*2` rows (order_repository.py)
  and the router builds `_cursor_id` from keys the rows lack, so every row's cursor is "0:" and
  `next_cursor` is always "0:" (models/pagination.py paginate_by_cursor, reproduced here). Trades page
  by a working cursor but are capped at `limit*2` rows as well.
- Trades carry `fee_paid` and `fee_currency` (trade_repository.py to_dict); timestamps are naive ISO.
- `/portfolio/state` answers the cached account state, refreshed by the 5-minute loop, unless the
  request says `refresh: true` (routers/portfolio.py).
- Errors: FastAPI's 422 with `detail` a list of validation errors; 401 for bad basic auth.

The clock is injectable (`clock`, a callable returning an aware datetime) so tests move time instead
of sleeping. Injected failures (`fail_next(route, mode)`), consumed one request at a time:
  "timeout_after_place"  handle the request, then answer only after `delay` seconds
  "500_before"           answer 500 without doing anything
  "500_after"            do the work, then answer 500
  "429"                  answer 429 (Retry-After: 0) without doing anything
  "401"                  answer 401 whatever the credentials
  "bad_ack"              do the work, then answer 201 with a body that is not the documented shape
Routes: "place", "cancel", "active", "search", "trades", "state", "rules", "credentials".
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field, ValidationError

from core.domain import Order, OrderType, Side, StrategyName

PAIR = "BTC-USD"
IN_FLIGHT = {"SUBMITTED", "OPEN", "PARTIALLY_FILLED", "PENDING_CANCEL"}
MAKER_FEE, TAKER_FEE = 0.0025, 0.0040
STATE_LOOP = timedelta(minutes=5)  # account_update_interval (minutes) * 60 in services/accounts_service.py

# Kraken-like rules (lot 1e-8 everywhere; ticks and minimums as Kraken lists them for USD pairs).
KRAKEN_RULES: dict[str, dict[str, float]] = {
    "BTC-USD": {"min_order_size": 0.00005, "min_price_increment": 0.1, "min_notional_size": 0.5},
    "ETH-USD": {"min_order_size": 0.002, "min_price_increment": 0.01, "min_notional_size": 0.5},
    "SOL-USD": {"min_order_size": 0.02, "min_price_increment": 0.01, "min_notional_size": 0.5},
    "XRP-USD": {"min_order_size": 2.0, "min_price_increment": 0.00001, "min_notional_size": 0.5},
    "DOGE-USD": {"min_order_size": 20.0, "min_price_increment": 0.0000001, "min_notional_size": 0.5},
    "ADA-USD": {"min_order_size": 5.0, "min_price_increment": 0.000001, "min_notional_size": 0.5},
    "BNB-USD": {"min_order_size": 0.01, "min_price_increment": 0.01, "min_notional_size": 0.5},
    "OP-USD": {"min_order_size": 1.0, "min_price_increment": 0.0001, "min_notional_size": 0.5},
}
LOT = 1e-8


def kraken_rule(pair: str) -> dict[str, Any]:
    """The full rule dict the real route returns for one pair (market_data_service.get_trading_rules)."""
    base = KRAKEN_RULES.get(pair, {"min_order_size": 0.0001, "min_price_increment": 0.0001, "min_notional_size": 0.5})
    return {
        "min_order_size": base["min_order_size"],
        "max_order_size": None,
        "min_price_increment": base["min_price_increment"],
        "min_base_amount_increment": LOT,
        "min_quote_amount_increment": base["min_price_increment"],
        "min_notional_size": base["min_notional_size"],
        "min_order_value": 0.0,
        "max_price_significant_digits": 8.0,
        "supports_limit_orders": True,
        "supports_market_orders": True,
        "buy_order_collateral_token": pair.split("-")[1],
        "sell_order_collateral_token": pair.split("-")[1],
    }


def _dec(x: float | str) -> Decimal:
    return Decimal(str(x))


def _floor(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def wall_clock() -> datetime:
    return datetime.now(UTC)


class ManualClock:
    """A clock tests move by hand (no sleeping)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


# --- the request models of the real server (models/trading.py, models/pagination.py) ----------------


class TradeRequest(BaseModel):
    account_name: str
    connector_name: str
    trading_pair: str
    trade_type: Literal["BUY", "SELL"]
    amount: Decimal = Field(gt=0)
    order_type: Literal["LIMIT", "MARKET", "LIMIT_MAKER"] = "LIMIT"
    price: Decimal | None = None
    position_action: Literal["OPEN", "CLOSE"] = "OPEN"


class TradeResponse(BaseModel):
    order_id: str
    account_name: str
    connector_name: str
    trading_pair: str
    trade_type: str
    amount: Decimal
    order_type: str
    price: Decimal | None
    status: str = "submitted"


class _Paged(BaseModel):
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None
    account_names: list[str] | None = None
    connector_names: list[str] | None = None
    trading_pairs: list[str] | None = None


class ActiveOrderFilterRequest(_Paged):
    pass


class OrderFilterRequest(_Paged):
    start_time: int | None = None
    end_time: int | None = None
    status: str | None = None


class TradeFilterRequest(_Paged):
    start_time: int | None = None
    end_time: int | None = None
    trade_types: list[str] | None = None


class PortfolioStateFilterRequest(BaseModel):
    account_names: list[str] | None = None
    connector_names: list[str] | None = None
    skip_gateway: bool = False
    refresh: bool = False


class HttpError(Exception):
    def __init__(self, code: int, detail: Any) -> None:
        super().__init__(f"HTTP {code}")
        self.code, self.detail = code, detail


def paginate_by_cursor(
    items: list[dict[str, Any]], cursor: str | None, limit: int, sort_key: Callable[[dict[str, Any]], Any] | None = None,
    reverse: bool = False,
) -> dict[str, Any]:
    """models/pagination.py, line for line in behaviour."""
    items.sort(key=sort_key if sort_key is not None else (lambda x: x.get("_cursor_id", "")), reverse=reverse)
    start = 0
    if cursor:
        for i, item in enumerate(items):
            if item.get("_cursor_id") == cursor:
                start = i + 1
                break
    end = start + limit
    page = items[start:end]
    has_more = end < len(items)
    next_cursor = page[-1].get("_cursor_id") if page and has_more else None
    for item in page:
        item.pop("_cursor_id", None)
    return {"data": page, "pagination": {"limit": limit, "has_more": has_more, "next_cursor": next_cursor,
                                         "total_count": len(items)}}


def _iso_naive(ts: datetime) -> str:
    """datetime.fromtimestamp(ts).isoformat() on a server running in UTC: no offset."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat()


def _ms(ts: datetime) -> float:
    return ts.timestamp() * 1000


@dataclass
class ExchangeState:
    account: str = "master_account"
    connector: str = "kraken"
    username: str = "admin"
    password: str = "s3cret"
    credentials: set[str] = field(default_factory=lambda: {"kraken"})  # connectors with keys on the account
    rules: dict[str, dict[str, Any]] | None = None  # pair -> rule dict; None: Kraken-like for every marked pair
    rules_loaded: bool = True
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # the exchange's truth, by client id
    db_orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # the orders table (written async)
    trades: list[dict[str, Any]] = field(default_factory=list)  # the trades table
    balances: dict[str, float] = field(default_factory=lambda: {"USD": 10_000.0})  # the exchange's truth
    marks: dict[str, float] = field(default_factory=dict)
    failures: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    delay: float = 2.5
    latency: timedelta = timedelta(0)  # exchange round trip: creation/cancel land this long after the ack
    requests: list[tuple[str, str]] = field(default_factory=list)
    place_requests: int = 0
    on_place: Callable[[dict[str, Any]], None] | None = None  # called as a place request arrives
    on_placed: Callable[[str], None] | None = None  # called with the new id after tracking, before the ack
    clock: Callable[[], datetime] = wall_clock
    lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _pending: list[tuple[datetime, int, Callable[[], None]]] = field(default_factory=list)
    _tracked: dict[str, dict[str, Any]] = field(default_factory=dict)  # connector.in_flight_orders
    _started: datetime | None = None
    _cache: dict[str, list[dict[str, Any]]] | None = None
    _cache_tick: int = -1

    def __post_init__(self) -> None:
        self._started = self.clock()
        self._refresh_cache()  # the account state read at start (the loop's first pass)
        self._cache_tick = 0

    # --- time ------------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock()

    def _tick(self, at: datetime) -> int:
        assert self._started is not None
        return max(0, int((at - self._started) / STATE_LOOP))

    def connector_now(self) -> datetime:
        """The connector's current_timestamp: set at start and by each 5-minute state loop only."""
        assert self._started is not None
        return self._started + self._tick(self.now()) * STATE_LOOP

    # --- test controls ---------------------------------------------------------------------------
    def fail_next(self, route: str, *modes: str) -> None:
        with self.lock:
            self.failures[route].extend(modes)

    def _take_failure(self, route: str) -> str | None:
        with self.lock:
            q = self.failures.get(route)
            return q.popleft() if q else None

    def rule(self, pair: str) -> dict[str, Any] | None:
        if self.rules is not None:
            return self.rules.get(pair)
        return kraken_rule(pair) if pair in self.marks or pair in KRAKEN_RULES else None

    def all_rules(self) -> dict[str, dict[str, Any]]:
        if self.rules is not None:
            return dict(self.rules)
        return {p: kraken_rule(p) for p in sorted(set(self.marks) | set(KRAKEN_RULES))}

    def settle(self) -> None:
        """Apply every queued asynchronous effect now, whatever the clock says."""
        self._run_due(None)

    def _run_due(self, at: datetime | None) -> None:
        with self.lock:
            due = [p for p in self._pending if at is None or p[0] <= at]
            self._pending = [p for p in self._pending if not (at is None or p[0] <= at)]
            for _, _, effect in sorted(due, key=lambda p: (p[0], p[1])):
                effect()

    def _later(self, effect: Callable[[], None]) -> None:
        self._pending.append((self.now() + self.latency, next(self._ids), effect))

    def set_mark(self, pair: str, price: float) -> None:
        """Move the market; resting limit orders the price crosses fill in full."""
        with self.lock:
            self.marks[pair] = price
            for o in list(self.orders.values()):
                if o["trading_pair"] != pair or o["status"] not in ("OPEN", "PARTIALLY_FILLED"):
                    continue
                if o["order_type"] == "MARKET":
                    continue
                crossed = price <= o["price"] if o["trade_type"] == "BUY" else price >= o["price"]
                if crossed:
                    self.fill(o["order_id"], o["amount"] - o["filled_amount"], o["price"])

    def fill(self, order_id: str, qty: float, price: float | None = None) -> dict[str, Any]:
        """Fill `qty` of an order (a partial fill when less than what remains), as the exchange does;
        the recorder writes the trade and updates the orders table (services/orders_recorder.py)."""
        with self.lock:
            o = self.orders[order_id]
            if o["status"] == "SUBMITTED":
                self._created(order_id)  # the exchange cannot fill an order before it accepted it
            left = _dec(o["amount"]) - _dec(o["filled_amount"])
            q = min(_floor(_dec(qty), _dec(LOT)), left)
            if q <= 0:
                return {}  # nothing left to fill (it filled meanwhile): no trade
            px = price if price is not None else (o["price"] or self.marks[o["trading_pair"]])
            fee = float(q) * px * (TAKER_FEE if o["order_type"] == "MARKET" else MAKER_FEE)
            base, quote = o["trading_pair"].split("-")
            sign = 1 if o["trade_type"] == "BUY" else -1
            self.balances[base] = self.balances.get(base, 0.0) + sign * float(q)
            self.balances[quote] = self.balances.get(quote, 0.0) - sign * float(q) * px - fee
            now = self.now()
            filled = _dec(o["filled_amount"]) + q
            o["filled_amount"] = float(filled)
            o["average_fill_price"] = px
            o["fee_paid"] = (o["fee_paid"] or 0.0) + fee
            o["status"] = "FILLED" if filled >= _dec(o["amount"]) else "PARTIALLY_FILLED"
            o["updated_at"] = now.isoformat()
            n = next(self._ids)
            trade = {
                "trade_id": f"{order_id}_T{n:08d}",  # f"{order_id}_{exchange_trade_id}" as the recorder names it
                "order_id": order_id,
                "account_name": o["account_name"],
                "connector_name": o["connector_name"],
                "trading_pair": o["trading_pair"],
                "trade_type": o["trade_type"],
                "amount": float(q),
                "price": px,
                "fee_paid": fee,
                "fee_currency": quote,
                "timestamp": _iso_naive(now),
            }
            row = self.db_orders.get(order_id)
            if row is not None:  # update_order_fill: accumulate, last price as "average", status by amount
                row["filled_amount"] = float(_dec(row["filled_amount"]) + q)
                row["average_fill_price"] = px
                row["fee_paid"] = (row["fee_paid"] or 0.0) + fee
                row["fee_currency"] = quote
                row["status"] = "FILLED" if _dec(row["filled_amount"]) >= _dec(row["amount"]) else "PARTIALLY_FILLED"
                row["updated_at"] = now.isoformat()
            self.trades.append(trade)
            tracked = self._tracked.get(order_id)
            if tracked is not None:
                tracked["filled_amount"] = o["filled_amount"]
                tracked["average_fill_price"] = px
                tracked["fee_paid"] = o["fee_paid"]
                tracked["status"] = o["status"]
                tracked["updated_at"] = now.isoformat()
                if o["status"] == "FILLED":
                    del self._tracked[order_id]  # the connector stops tracking a completed order
            return trade

    def place(self, req: dict[str, Any]) -> dict[str, Any]:
        """The accounts service's place_trade and the connector's buy/sell (checks already passed)."""
        with self.lock:
            rule = self.rule(req["trading_pair"]) or kraken_rule(req["trading_pair"])
            n = next(self._ids)
            order_id = str(1_700_000_000 + n)  # Kraken's connector: numeric client order ids (userref)
            amount = _floor(_dec(req["amount"]), _dec(rule["min_base_amount_increment"]))
            price = req.get("price")
            qprice = float(_floor(_dec(price), _dec(rule["min_price_increment"]))) if price is not None else None
            order_type = req.get("order_type", "LIMIT")
            created = self.connector_now()  # InFlightOrder.creation_timestamp = connector.current_timestamp
            o = {
                "order_id": order_id,
                "account_name": req["account_name"],
                "connector_name": req["connector_name"],
                "trading_pair": req["trading_pair"],
                "trade_type": req["trade_type"],
                "order_type": order_type,
                "amount": float(amount),
                "price": qprice if order_type != "MARKET" else None,
                "status": "SUBMITTED",
                "filled_amount": 0.0,
                "average_fill_price": None,
                "fee_paid": None,
                "fee_currency": None,
                "created_at": created.isoformat(),
                "updated_at": created.isoformat(),
                "exchange_order_id": None,
                "error_message": None,
            }
            self.orders[order_id] = o
            self._tracked[order_id] = dict(o)
            self._later(lambda: self._created(order_id))
            if self.on_placed is not None:
                self.on_placed(order_id)
            ack = TradeResponse(
                order_id=order_id,
                account_name=req["account_name"],
                connector_name=req["connector_name"],
                trading_pair=req["trading_pair"],
                trade_type=req["trade_type"],
                amount=_dec(req["amount"]),
                order_type=order_type,
                price=_dec(price) if price is not None else None,
            )
            return ack.model_dump(mode="json")  # Decimal -> "0.000653225784": strings, the request's values

    def _created(self, order_id: str) -> None:
        """The exchange accepted the order: OrderCreated -> the recorder writes the history row."""
        o = self.orders[order_id]
        if o["status"] != "SUBMITTED":
            return
        n = next(self._ids)
        o["status"] = "OPEN"
        o["exchange_order_id"] = f"O{n:05d}-KRKN-{order_id[-5:]}"
        now = self.now()
        row = dict(o)
        row["created_at"] = now.isoformat()  # server_default=func.now(): the DB's time, not the connector's
        row["updated_at"] = now.isoformat()
        self.db_orders[order_id] = row
        if order_id in self._tracked:
            self._tracked[order_id].update(status="OPEN", exchange_order_id=o["exchange_order_id"])
        pair = o["trading_pair"]
        if o["order_type"] == "MARKET":
            self.fill(order_id, o["amount"], self.marks[pair])
        elif pair in self.marks:
            self.set_mark(pair, self.marks[pair])

    def cancel(self, order_id: str) -> None:
        with self.lock:
            self._tracked[order_id]["status"] = "PENDING_CANCEL"
            self._later(lambda: self._cancelled(order_id))

    def _cancelled(self, order_id: str) -> None:
        o = self.orders[order_id]
        if o["status"] not in ("SUBMITTED", "OPEN", "PARTIALLY_FILLED"):
            return  # filled meanwhile
        now = self.now().isoformat()
        o["status"], o["updated_at"] = "CANCELLED", now
        if order_id in self.db_orders:
            self.db_orders[order_id].update(status="CANCELLED", updated_at=now)
        self._tracked.pop(order_id, None)

    def _refresh_cache(self, connectors: list[str] | None = None) -> None:
        """accounts_state: token balances as the state loop (or refresh: true) last read them."""
        with self.lock:
            tokens = [
                {"token": t, "units": u, "price": 1.0 if "USD" in t else self.marks.get(f"{t}-USD", 0.0),
                 "value": u * (1.0 if "USD" in t else self.marks.get(f"{t}-USD", 0.0)),
                 "available_units": u - self._locked(t)}
                for t, u in sorted(self.balances.items()) if u != 0
            ]
            if self._cache is None:
                self._cache = {}
            for c in connectors or sorted(self.credentials):
                if c in self.credentials:
                    self._cache[c] = [dict(t) for t in tokens]

    def portfolio_state(self, refresh: bool, connectors: list[str] | None) -> dict[str, list[dict[str, Any]]]:
        with self.lock:
            tick = self._tick(self.now())
            if tick != self._cache_tick:  # the 5-minute loop ran since the last look
                self._refresh_cache()
                self._cache_tick = tick
            if refresh:
                self._refresh_cache(connectors)
            return {c: [dict(t) for t in ts] for c, ts in (self._cache or {}).items()}

    def _locked(self, token: str) -> float:
        locked = 0.0
        for o in self.orders.values():
            if o["status"] not in IN_FLIGHT:
                continue
            base, quote = o["trading_pair"].split("-")
            left = o["amount"] - o["filled_amount"]
            if o["trade_type"] == "BUY" and quote == token:
                locked += left * (o["price"] or 0.0)
            elif o["trade_type"] == "SELL" and base == token:
                locked += left
        return locked

    def forget_tracking(self, order_id: str) -> None:
        """The connector stops tracking an order (as after a restart of hummingbot-api): only its
        history row remains."""
        with self.lock:
            self._tracked.pop(order_id, None)

    def forget(self, order_id: str) -> None:
        """The venue loses an order entirely (exchange, connector and history)."""
        with self.lock:
            self.orders.pop(order_id, None)
            self.db_orders.pop(order_id, None)
            self._tracked.pop(order_id, None)

    def orders_at_venue(self, pair: str | None = None) -> list[dict[str, Any]]:
        """The exchange's own view of every order (for assertions)."""
        with self.lock:
            return [dict(o) for o in self.orders.values() if pair is None or o["trading_pair"] == pair]

    def tracked_rows(self) -> list[dict[str, Any]]:
        """connector.in_flight_orders in the standardized shape of /trading/orders/active."""
        with self.lock:
            rows = []
            for oid, t in self._tracked.items():
                row = dict(t)
                row["fee_currency"] = None
                row["_cursor_id"] = oid
                rows.append(row)
            return rows


_CANCEL = re.compile(r"^/trading/([^/]+)/([^/]+)/orders/([^/]+)/cancel$")
_RULES = re.compile(r"^/connectors/([^/]+)/trading-rules$")
_CREDS = re.compile(r"^/accounts/([^/]+)/credentials$")


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    """FastAPI's RequestValidationError body: detail is a LIST of errors located in the body."""
    return [
        {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"], "input": e.get("input")}
        for e in exc.errors(include_url=False)
    ]


class _Handler(BaseHTTPRequestHandler):
    state: ExchangeState  # set on the subclass built per server

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body, default=str).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout, or it was killed): the state change already happened

    def _authorised(self) -> bool:
        expected = base64.b64encode(f"{self.state.username}:{self.state.password}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def do_GET(self) -> None:
        self._handle("GET", {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) or b"{}"
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(422, {"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]})
            return
        self._handle("POST", body)

    def _handle(self, method: str, body: Any) -> None:
        st = self.state
        parts = urlsplit(self.path)
        path = parts.path
        with st.lock:
            st.requests.append((method, path))
        st._run_due(st.now())  # effects due by now land before this request is served
        route = self._route(method, path)
        failure = st._take_failure(route) if route else None
        if failure == "401" or not self._authorised():
            self._send(401, {"detail": "Incorrect username or password"}, {"WWW-Authenticate": "Basic"})
            return
        if failure == "429":
            self._send(429, {"detail": "Too many requests"}, {"Retry-After": "0"})
            return
        if failure == "500_before":
            self._send(500, {"detail": "Unexpected error placing trade: connector busy"})
            return
        if route is None:
            self._send(404 if method == "POST" else 405, {"detail": "Not Found"})
            return
        try:
            code, out = getattr(self, f"_{route}")(path, body, parse_qs(parts.query))
        except HttpError as exc:
            code, out = exc.code, {"detail": exc.detail}
        except ValidationError as exc:
            code, out = 422, {"detail": _validation_detail(exc)}
        if failure == "timeout_after_place":
            time.sleep(st.delay)
        if failure == "bad_ack":
            self._send(201, {"unexpected": "shape"})
            return
        if failure == "500_after":
            self._send(500, {"detail": "Unexpected error placing trade: lost the exchange's answer"})
            return
        self._send(code, out)

    @staticmethod
    def _route(method: str, path: str) -> str | None:
        if method == "GET":
            if _RULES.match(path):
                return "rules"
            return "credentials" if _CREDS.match(path) else None
        fixed = {
            "/trading/orders": "place",
            "/trading/orders/active": "active",
            "/trading/orders/search": "search",
            "/trading/trades": "trades",
            "/portfolio/state": "state",
        }
        if path in fixed:
            return fixed[path]
        return "cancel" if _CANCEL.match(path) else None

    # --- routes ----------------------------------------------------------------------------------
    def _connector(self, account: str, connector: str, what: str) -> None:
        st = self.state
        if account != st.account:
            raise HttpError(404, f"Account '{account}' not found")
        if connector not in st.credentials:
            # get_trading_connector fails (no keys / no such exchange connector); the router wraps it.
            raise HttpError(500, f"{what}: Connector '{connector}' is not configured for account '{account}'")

    def _rules(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        st = self.state
        (connector,) = _RULES.match(path).groups()  # type: ignore[union-attr]
        if connector.endswith("_paper_trade") or connector not in {"kraken", "binance", "coinbase_advanced_trade",
                                                                     *st.credentials}:
            raise HttpError(404, f"Connector '{connector}' not found or error: No connector available for {connector}")
        rules = st.all_rules()
        wanted = query.get("trading_pairs")
        if not wanted:
            return 200, rules
        return 200, {p: rules.get(p, {"error": f"Trading pair {p} not found"}) for p in wanted}

    def _credentials(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        (account,) = _CREDS.match(path).groups()  # type: ignore[union-attr]
        if account != self.state.account:
            raise HttpError(404, f"Account '{account}' not found")
        return 200, sorted(self.state.credentials)

    def _place(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        st = self.state
        with st.lock:
            st.place_requests += 1
        if st.on_place is not None:
            st.on_place(body)
        req = TradeRequest.model_validate(body)
        self._connector(req.account_name, req.connector_name, "Unexpected error placing trade")
        if req.order_type in ("LIMIT", "LIMIT_MAKER") and req.price is None:
            raise HttpError(400, "Price is required for LIMIT and LIMIT_MAKER orders")
        if not st.rules_loaded:
            raise HttpError(503, f"Trading rules not yet loaded for {req.connector_name}. Please try again in a moment.")
        rule = st.rule(req.trading_pair)
        if rule is None:
            pairs = list(st.all_rules())[:10]
            raise HttpError(400, f"Trading pair '{req.trading_pair}' not supported on {req.connector_name}. "
                                 f"Available pairs: {pairs}")
        amount = _floor(req.amount, _dec(rule["min_base_amount_increment"]))
        if amount < _dec(rule["min_order_size"]):
            raise HttpError(400, f"Order amount {amount} is below minimum order size {_dec(rule['min_order_size'])} "
                                 f"for {req.trading_pair}")
        if req.order_type == "MARKET":
            price = _dec(st.marks[req.trading_pair]) if req.trading_pair in st.marks else None
            notional = price * amount if price is not None else Decimal(0)
        else:
            assert req.price is not None
            notional = _floor(req.price, _dec(rule["min_price_increment"])) * amount
        if notional < _dec(rule["min_notional_size"]):
            raise HttpError(400, f"Order notional value {notional} is below minimum notional size "
                                 f"{_dec(rule['min_notional_size'])} for {req.trading_pair}. "
                                 "Increase the amount or price to meet the minimum requirement.")
        return 201, st.place(body)

    def _cancel(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        st = self.state
        account, connector, order_id = _CANCEL.match(path).groups()  # type: ignore[union-attr]
        self._connector(account, connector, "Error cancelling order")
        with st.lock:
            if order_id not in st._tracked:
                raise HttpError(404, f"Order '{order_id}' not found in active orders")
            st.cancel(order_id)
        return 200, {"message": f"Order cancellation initiated for {order_id}"}

    def _active(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        st = self.state
        f = ActiveOrderFilterRequest.model_validate(body)
        rows = [
            r for r in st.tracked_rows()
            if (not f.account_names or r["account_name"] in f.account_names)
            and (not f.connector_names or r["connector_name"] in f.connector_names)
            and (not f.trading_pairs or r["trading_pair"] in f.trading_pairs)
        ]
        return 200, paginate_by_cursor(rows, f.cursor, f.limit)

    @staticmethod
    def _window(rows: list[dict[str, Any]], key: str, start: int | None, end: int | None) -> list[dict[str, Any]]:
        def ms(r: dict[str, Any]) -> float:
            ts = datetime.fromisoformat(r[key])
            return _ms(ts if ts.tzinfo else ts.replace(tzinfo=UTC))

        return [r for r in rows if (not start or ms(r) >= start) and (not end or ms(r) <= end)]

    def _search(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        st = self.state
        f = OrderFilterRequest.model_validate(body)
        with st.lock:
            rows = [dict(r) for r in st.db_orders.values()]
        one_conn = f.connector_names[0] if f.connector_names and len(f.connector_names) == 1 else None
        one_pair = f.trading_pairs[0] if f.trading_pairs and len(f.trading_pairs) == 1 else None
        rows = [
            r for r in rows
            if (not f.account_names or r["account_name"] in f.account_names)
            and (one_conn is None or r["connector_name"] == one_conn)
            and (one_pair is None or r["trading_pair"] == one_pair)
            and (not f.status or r["status"] == f.status)
        ]
        rows = self._window(rows, "created_at", f.start_time, f.end_time)
        rows.sort(key=lambda r: datetime.fromisoformat(r["created_at"]), reverse=True)  # created_at.desc()
        rows = rows[: f.limit * 2]  # .limit(limit * 2): only the newest rows, whatever the cursor
        for r in rows:  # the rows have neither "timestamp" nor "client_order_id": every cursor is "0:"
            r["_cursor_id"] = f"{r.get('timestamp', 0)}:{r.get('client_order_id', '')}"
        if f.connector_names and len(f.connector_names) > 1:
            rows = [r for r in rows if r["connector_name"] in f.connector_names]
        if f.trading_pairs and len(f.trading_pairs) > 1:
            rows = [r for r in rows if r["trading_pair"] in f.trading_pairs]
        return 200, paginate_by_cursor(rows, f.cursor, f.limit,
                                       sort_key=lambda x: (x.get("timestamp", 0), x.get("_cursor_id", "")), reverse=True)

    def _trades(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        st = self.state
        f = TradeFilterRequest.model_validate(body)
        with st.lock:
            rows = [dict(t) for t in st.trades]
        one_pair = f.trading_pairs[0] if f.trading_pairs and len(f.trading_pairs) == 1 else None
        rows = [
            r for r in rows
            if (not f.account_names or r["account_name"] in f.account_names)
            and (not f.connector_names or r["connector_name"] in f.connector_names)
            and (one_pair is None or r["trading_pair"] == one_pair)
            and (not f.trade_types or r["trade_type"] in f.trade_types)
        ]
        rows = self._window(rows, "timestamp", f.start_time, f.end_time)
        rows.sort(key=lambda r: r["timestamp"], reverse=True)
        rows = rows[: f.limit * 2]
        for r in rows:
            r["_cursor_id"] = f"{r.get('timestamp', 0)}:{r.get('trade_id', '')}"
        if f.trading_pairs and len(f.trading_pairs) > 1:
            rows = [r for r in rows if r["trading_pair"] in f.trading_pairs]
        return 200, paginate_by_cursor(rows, f.cursor, f.limit,
                                       sort_key=lambda x: (x.get("timestamp", 0), x.get("_cursor_id", "")), reverse=True)

    def _state(self, path: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any]:
        st = self.state
        f = PortfolioStateFilterRequest.model_validate(body)
        conns = st.portfolio_state(f.refresh, f.connector_names)
        if f.account_names and st.account not in f.account_names:
            return 200, {}
        if f.connector_names:
            conns = {c: v for c, v in conns.items() if c in f.connector_names}
        return 200, {st.account: conns}


class HummingbotTestServer:
    """Start with `with HummingbotTestServer() as hb:`; hb.url is the base URL, hb.state the exchange."""

    def __init__(self, state: ExchangeState | None = None) -> None:
        self.state = state or ExchangeState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def settings_for(server: HummingbotTestServer, **execution: Any):
    """Settings pointing the live venue at this server, with a short timeout so failures are quick."""
    from core.settings import load_settings

    base: dict[str, Any] = {
        "hummingbot_url": server.url,
        "hummingbot_username": server.state.username,
        "hummingbot_password": server.state.password,
        "hummingbot_account": server.state.account,
        "hummingbot_connector": server.state.connector,
        "timeout_seconds": 1.0,
        "max_retries": 3,
        "backoff_seconds": 0.01,
    }
    return load_settings(execution={**base, **execution})


def make_order(
    cid: str = "dca:BTC:1",
    *,
    side: Side = Side.BUY,
    qty: float = 0.01,
    price: float | None = 39_000.0,
    order_type: OrderType = OrderType.LIMIT,
    symbol: str = "BTC",
) -> Order:
    """An order as the manager hands it to a venue (our own client_order_id)."""
    return Order(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=qty,
        price=price,
        strategy=StrategyName.DCA,
        position_id="pos-1",
        created_ts=datetime(2024, 3, 1, tzinfo=UTC),
    )


def main() -> None:
    """`python -m tests.hummingbot_server --port 8000`: run the double by hand (Ctrl-C to stop)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--mark", action="append", default=["BTC-USD=40000"], help="PAIR=PRICE, repeatable")
    args = parser.parse_args()
    state = ExchangeState(username=args.username, password=args.password)
    for item in args.mark:
        pair, price = item.split("=")
        state.marks[pair] = float(price)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    print(f"Hummingbot API double on http://127.0.0.1:{args.port} (user {args.username})", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
