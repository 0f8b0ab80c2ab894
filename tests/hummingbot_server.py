"""A local Hummingbot API double: a real HTTP server (stdlib, in a thread) speaking the documented routes.

It checks HTTP basic auth, keeps a small exchange state (orders, trades, balances) with a simple
matching engine, and can be told to fail in the ways a live venue fails:
  "timeout_after_place"  place the order, then answer only after `delay` seconds (past the client timeout)
  "500_before"           answer 500 without placing anything
  "500_after"            place the order, then answer 500
  "429"                  answer 429 (Retry-After: 0) without placing
  "401"                  answer 401 whatever the credentials
  "bad_ack"              place the order, then answer 201 with a body that is not the documented shape
Failures are queued per route name ("place", "cancel", "active", "search", "trades", "state") and
consumed one request at a time.

Matching: market orders fill at once at the pair's mark price; limit buys fill when the mark falls
to the limit, limit sells when it rises to it; `fill(order_id, qty)` forces a (partial) fill.
Fees: 0.25% maker / 0.40% taker, charged in the quote token.
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
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.domain import Order, OrderType, Side, StrategyName

PAIR = "BTC-USD"
IN_FLIGHT = {"SUBMITTED", "OPEN", "PARTIALLY_FILLED", "PENDING_CANCEL"}
MAKER_FEE, TAKER_FEE = 0.0025, 0.0040


@dataclass
class ExchangeState:
    account: str = "master_account"
    connector: str = "kraken"
    username: str = "admin"
    password: str = "s3cret"
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)
    balances: dict[str, float] = field(default_factory=lambda: {"USD": 10_000.0})
    marks: dict[str, float] = field(default_factory=dict)
    failures: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    delay: float = 2.5
    requests: list[tuple[str, str]] = field(default_factory=list)
    place_requests: int = 0
    on_place: Callable[[dict[str, Any]], None] | None = None  # called as a request arrives, before placing
    clock: Callable[[], datetime] | None = None  # the trades' time (a simulated market); None: wall clock
    lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # --- test controls ---------------------------------------------------------------------------
    def fail_next(self, route: str, *modes: str) -> None:
        with self.lock:
            self.failures[route].extend(modes)

    def _take_failure(self, route: str) -> str | None:
        with self.lock:
            q = self.failures.get(route)
            return q.popleft() if q else None

    def set_mark(self, pair: str, price: float) -> None:
        """Move the market; resting limit orders the price crosses fill in full."""
        with self.lock:
            self.marks[pair] = price
            for o in list(self.orders.values()):
                if o["trading_pair"] != pair or o["status"] not in IN_FLIGHT or o["order_type"] == "MARKET":
                    continue
                crossed = price <= o["price"] if o["trade_type"] == "BUY" else price >= o["price"]
                if crossed:
                    self.fill(o["order_id"], o["amount"] - o["filled_amount"], o["price"])

    def fill(self, order_id: str, qty: float, price: float | None = None) -> dict[str, Any]:
        """Fill `qty` of an order (a partial fill when less than what remains)."""
        with self.lock:
            o = self.orders[order_id]
            qty = min(qty, o["amount"] - o["filled_amount"])
            px = price if price is not None else (o["price"] or self.marks[o["trading_pair"]])
            fee = qty * px * (TAKER_FEE if o["order_type"] == "MARKET" else MAKER_FEE)
            base, quote = o["trading_pair"].split("-")
            sign = 1 if o["trade_type"] == "BUY" else -1
            self.balances[base] = self.balances.get(base, 0.0) + sign * qty
            self.balances[quote] = self.balances.get(quote, 0.0) - sign * qty * px - fee
            now = _now()
            trade = {
                "trade_id": f"T{next(self._ids):06d}",
                "order_id": order_id,
                "account_name": o["account_name"],
                "connector_name": o["connector_name"],
                "trading_pair": o["trading_pair"],
                "trade_type": o["trade_type"],
                "amount": qty,
                "price": px,
                "fee": fee,
                "timestamp": self.clock().isoformat() if self.clock else now,
            }
            self.trades.append(trade)
            o["filled_amount"] += qty
            o["average_fill_price"] = px
            o["fee_paid"] = (o["fee_paid"] or 0.0) + fee
            o["status"] = "FILLED" if o["filled_amount"] >= o["amount"] - 1e-12 else "PARTIALLY_FILLED"
            o["updated_at"] = now
            return trade

    def place(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            n = next(self._ids)
            # Hummingbot names orders itself: the caller cannot choose this id.
            order_id = f"HBOT-{req['trade_type'][0]}-{req['trading_pair']}-{n:06d}"
            now = _now()
            self.orders[order_id] = {
                "order_id": order_id,
                "account_name": req["account_name"],
                "connector_name": req["connector_name"],
                "trading_pair": req["trading_pair"],
                "trade_type": req["trade_type"],
                "order_type": req.get("order_type", "LIMIT"),
                "amount": float(req["amount"]),
                "price": float(req["price"]) if req.get("price") is not None else None,
                "status": "OPEN",
                "filled_amount": 0.0,
                "average_fill_price": None,
                "fee_paid": None,
                "fee_currency": req["trading_pair"].split("-")[1],
                "created_at": now,
                "updated_at": now,
                "exchange_order_id": f"EX{n:06d}",
                "error_message": None,
            }
            if req.get("order_type") == "MARKET":
                self.fill(order_id, float(req["amount"]), self.marks[req["trading_pair"]])
            elif req["trading_pair"] in self.marks:
                self.set_mark(req["trading_pair"], self.marks[req["trading_pair"]])
            return {
                "order_id": order_id,
                "account_name": req["account_name"],
                "connector_name": req["connector_name"],
                "trading_pair": req["trading_pair"],
                "trade_type": req["trade_type"],
                "amount": req["amount"],
                "order_type": req.get("order_type", "LIMIT"),
                "price": req.get("price"),
                "status": "submitted",
            }

    def orders_at_venue(self, pair: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(o) for o in self.orders.values() if pair is None or o["trading_pair"] == pair]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _paginate(rows: list[dict[str, Any]], body: dict[str, Any], cursor_of) -> tuple[int, dict[str, Any]]:
    """Rows are already sorted; the cursor names the last row of the previous page."""
    limit = int(body.get("limit") or 100)
    cursor = body.get("cursor")
    if cursor:
        keys = [cursor_of(r) for r in rows]
        if cursor not in keys:
            return 400, {"detail": f"Invalid cursor {cursor!r}"}
        rows = rows[keys.index(cursor) + 1 :]
    page, has_more = rows[:limit], len(rows) > limit
    return 200, {
        "data": page,
        "pagination": {
            "limit": limit,
            "has_more": has_more,
            "next_cursor": cursor_of(page[-1]) if has_more else None,
            "total_count": len(rows),
        },
    }


def _filtered(rows: list[dict[str, Any]], body: dict[str, Any], ts_key: str) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if body.get("account_names") and r["account_name"] not in body["account_names"]:
            continue
        if body.get("connector_names") and r["connector_name"] not in body["connector_names"]:
            continue
        if body.get("trading_pairs") and r["trading_pair"] not in body["trading_pairs"]:
            continue
        if body.get("status") and r.get("status") != body["status"]:
            continue
        ts_ms = datetime.fromisoformat(r[ts_key]).timestamp() * 1000
        if body.get("start_time") and ts_ms < body["start_time"]:
            continue
        if body.get("end_time") and ts_ms > body["end_time"]:
            continue
        out.append(r)
    return out


_CANCEL = re.compile(r"^/trading/([^/]+)/([^/]+)/orders/([^/]+)/cancel$")


class _Handler(BaseHTTPRequestHandler):
    state: ExchangeState  # set on the subclass built per server

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): what matters is the state change already made

    def _authorised(self) -> bool:
        expected = base64.b64encode(f"{self.state.username}:{self.state.password}".encode()).decode()
        return self.headers.get("Authorization", "") == f"Basic {expected}"

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        st = self.state
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?", 1)[0]
        with st.lock:
            st.requests.append(("POST", path))
        route = self._route(path)
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
            self._send(404, {"detail": "Not Found"})
            return
        code, out = getattr(self, f"_{route}")(path, body)
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
    def _route(path: str) -> str | None:
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

    def _place(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        st = self.state
        with st.lock:
            st.place_requests += 1
        if st.on_place is not None:
            st.on_place(body)
        missing = [k for k in ("account_name", "connector_name", "trading_pair", "trade_type", "amount") if k not in body]
        if missing or body.get("trade_type") not in ("BUY", "SELL") or float(body.get("amount", 0)) <= 0:
            return 422, {"detail": f"invalid trade request (missing {missing})"}
        if (body["account_name"], body["connector_name"]) != (st.account, st.connector):
            return 404, {"detail": f"Account '{body['account_name']}' or connector not found"}
        if body.get("order_type", "LIMIT") != "MARKET" and body.get("price") is None:
            return 400, {"detail": "price is required for limit orders"}
        return 201, st.place(body)

    def _cancel(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        st = self.state
        _, _, order_id = _CANCEL.match(path).groups()  # type: ignore[union-attr]
        with st.lock:
            o = st.orders.get(order_id)
            if o is None or o["status"] not in IN_FLIGHT:
                return 404, {"detail": f"Order '{order_id}' not found in active orders"}
            o["status"], o["updated_at"] = "CANCELLED", _now()
        return 200, {"message": f"Order cancellation initiated for {order_id}"}

    def _active(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.state.lock:
            rows = [dict(o) for o in self.state.orders.values() if o["status"] in IN_FLIGHT]
        rows = sorted(_filtered(rows, {**body, "start_time": None}, "created_at"), key=lambda r: r["order_id"])
        return _paginate(rows, body, lambda r: r["order_id"])

    def _search(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.state.lock:
            rows = [dict(o) for o in self.state.orders.values()]
        rows = sorted(_filtered(rows, body, "created_at"), key=lambda r: (r["created_at"], r["order_id"]), reverse=True)
        return _paginate(rows, body, lambda r: f"{r['created_at']}|{r['order_id']}")

    def _trades(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self.state.lock:
            rows = [dict(t) for t in self.state.trades]
        rows = [r for r in _filtered(rows, body, "timestamp") if not body.get("trade_types") or r["trade_type"] in body["trade_types"]]
        rows.sort(key=lambda r: (r["timestamp"], r["trade_id"]), reverse=True)
        return _paginate(rows, body, lambda r: f"{r['timestamp']}:{r['trade_id']}")

    def _state(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        st = self.state
        with st.lock:
            tokens = [
                {"token": t, "units": u, "price": 1.0, "value": u, "available_units": u - self._locked(t)}
                for t, u in sorted(st.balances.items())
            ]
        out = {st.account: {st.connector: tokens}}
        if body.get("account_names") and st.account not in body["account_names"]:
            out = {}
        return 200, out

    def _locked(self, token: str) -> float:
        locked = 0.0
        for o in self.state.orders.values():
            if o["status"] not in IN_FLIGHT:
                continue
            base, quote = o["trading_pair"].split("-")
            left = o["amount"] - o["filled_amount"]
            if o["trade_type"] == "BUY" and quote == token:
                locked += left * (o["price"] or 0.0)
            elif o["trade_type"] == "SELL" and base == token:
                locked += left
        return locked


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

    def __enter__(self) -> HummingbotTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def settings_for(server: HummingbotTestServer, **execution: Any):  # noqa: ANN201 (core.settings.Settings)
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
