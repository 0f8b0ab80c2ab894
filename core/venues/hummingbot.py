"""The live venue: orders to Kraken (or any connector) through the Hummingbot API over HTTP basic auth.

What the real server does (hummingbot/hummingbot-api; docs/hummingbot.md has the file references) and
how this module copes:
- The connector floors amount and price to the pair's lot and tick. Every order is quantized HERE,
  from `GET /connectors/{c}/trading-rules` (cached), before its intent is journalled: amount down,
  a buy limit down, a sell limit up (never worse than planned). An order below the minimum size or
  notional never reaches the journal: `prepare` returns a typed BelowMinimum, `submit` raises
  BelowMinimumError (a skipped decision, not a venue failure).
- Placing is not idempotent. After an ambiguous failure (timeout, connection error, 5xx other than a
  known refusal, an unreadable ack) the venue's active orders, order history and trades are searched
  for the intent by the values actually sent. Found: adopted. Not found: NOT sent again; the intent
  stays unresolved, the operator is alerted (OrderInDoubtError) and reconciliation settles it.
  A refusal before processing (429, 503 "trading rules not yet loaded") is retried without a search.
- 400/422 are refusals (OrderRefusedError, never retried); a 500 from a connector without
  credentials is a configuration error with the fix (VenueConfigError).
- The order-history cursor is broken (always "0:") and only the newest limit*2 rows are read: history
  and trades are read by time windows halved until each fits one page; the cursor is never used.
- `/portfolio/state` is a 5-minute cache unless `refresh: true`: balances ask for a refresh by default.
Retries use the project's tenacity policy (core.retry). The password is a SecretStr handed to httpx's
auth only; it is never logged or put in a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from core.domain import Fill, Order, OrderStatus, OrderType
from core.errors import ConfigError, RateLimitedError, TemporaryVenueError, VenueError
from core.retry import call_with_retry, retry_after_seconds
from core.settings import Settings
from core.venues.hummingbot_schemas import (
    HummingbotOrder,
    HummingbotOrderAck,
    HummingbotOrderFilter,
    HummingbotOrderRequest,
    HummingbotPage,
    HummingbotPortfolioFilter,
    HummingbotPortfolioState,
    HummingbotTrade,
    HummingbotTradeFilter,
    base_of,
    to_hb_order_type,
    to_order_status,
    to_order_type,
    to_side,
    to_trade_type,
    trading_pair,
)
from core.venues.order_journal import (
    CLOCK_SLACK,
    FINAL_STATUSES,
    JournalIntent,
    OrderJournal,
    VenueFillView,
    VenueOrderView,
    VenueSnapshot,
    fill_from_view,
    intent_earliest,
    match_intent,
)
from core.venues.trading_rules import (
    BelowMinimum,
    BelowMinimumError,
    TradingRule,
    TradingRulesCache,
    quantize_order,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE_LIMIT = 1000  # the API's maximum `limit`; the history routes then read at most 2,000 rows
_MAX_ACTIVE_PAGES = 1000
RECENT_ORDERS = 500  # fills_since() looks back to the oldest of this many most recently updated orders


class UnknownOrderError(VenueError):
    """The venue does not know this order (HTTP 404 on cancel, or absent from its history)."""


class OrderRefusedError(VenueError):
    """HTTP 400/422: the venue refused the request before doing anything; retrying cannot help."""


class VenueConfigError(ConfigError, VenueError):
    """The venue is not set up for what the settings ask (unknown connector, no credentials)."""


class TradingRulesNotLoadedError(TemporaryVenueError):
    """HTTP 503 from place_trade: the connector has no trading rules yet; nothing was placed."""


class OrderInDoubtError(TemporaryVenueError):
    """An ambiguous failure and the order is not (yet) visible at the venue: not resent; the intent
    stays unresolved until reconciliation finds it or declares it absent."""


class _Ambiguous(Exception):
    """A place attempt whose outcome is unknown; carried out of the retry policy (never retried)."""

    def __init__(self, cause: TemporaryVenueError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


class HummingbotVenue:
    name = "hummingbot"

    def __init__(
        self,
        settings: Settings,
        journal: OrderJournal,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        alert: Callable[[str], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        ex = settings.execution
        if ex.hummingbot_connector.endswith("_paper_trade"):  # settings built around validation
            raise VenueConfigError(
                f"{ex.hummingbot_connector!r}: hummingbot-api has no paper-trade connectors; paper trading "
                "is the PaperVenue (execution.mode=paper)"
            )
        self.settings = settings
        self.journal = journal
        self.account = ex.hummingbot_account
        self.connector = ex.hummingbot_connector
        self.quote = ex.hummingbot_quote
        self.attempts = ex.max_retries + 1
        self.backoff = ex.backoff_seconds
        self._sleep = sleep
        self._alert = alert
        self._now = now
        self._connector_checked = False
        self.settle = timedelta(seconds=ex.order_settle_seconds)  # reconciliation's wait before "absent"
        self.rules = TradingRulesCache(self._fetch_rules, ttl=ex.trading_rules_ttl_seconds)
        self._client = client or httpx.Client(
            base_url=ex.hummingbot_url,
            auth=httpx.BasicAuth(ex.hummingbot_username, ex.hummingbot_password.get_secret_value()),
            timeout=ex.timeout_seconds,
        )

    def close(self) -> None:
        self._client.close()

    # --- HTTP -------------------------------------------------------------------------------------
    def _request_once(self, method: str, path: str, body: dict[str, Any] | None = None,
                      params: dict[str, Any] | None = None) -> Any:
        try:
            if method == "GET":
                resp = self._client.get(path, params=params)
            else:
                resp = self._client.post(path, json=body or {})
        except httpx.TimeoutException as exc:
            raise TemporaryVenueError(f"Hummingbot {path} timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TemporaryVenueError(f"Hummingbot {path} unreachable: {type(exc).__name__}") from None
        code = resp.status_code
        if code < 300:
            try:
                return resp.json()
            except ValueError:  # a proxy's page, a cut connection: we cannot tell what happened
                raise TemporaryVenueError(f"Hummingbot {path}: HTTP {code} with a body that is not JSON") from None
        detail = _detail(resp)
        if code in (401, 403):
            raise VenueError(
                f"Hummingbot API at {self._client.base_url} refused the credentials of user "
                f"{self.settings.execution.hummingbot_username!r} (HTTP {code}); fix "
                "execution.hummingbot_username / execution.hummingbot_password"
            )
        if code == 404:
            raise UnknownOrderError(f"Hummingbot {path}: not found (HTTP 404): {detail}")
        if code == 429:
            raise RateLimitedError(f"Hummingbot {path}: rate limited (HTTP 429)",
                                   retry_after=retry_after_seconds(resp.headers))
        if code == 503 and "trading rules" in detail.lower():
            raise TradingRulesNotLoadedError(f"Hummingbot {path}: {detail}", retry_after=retry_after_seconds(resp.headers))
        if code in (400, 422):
            raise OrderRefusedError(f"Hummingbot refused {path}: HTTP {code}: {detail}")
        if code >= 500:
            raise TemporaryVenueError(f"Hummingbot {path}: HTTP {code}: {detail}")
        raise VenueError(f"Hummingbot rejected {path}: HTTP {code}: {detail}")

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return call_with_retry(fn, what=f"Hummingbot {what}", attempts=self.attempts, initial=self.backoff,
                               cap=max(self.backoff * 8, self.backoff), log=log, sleep=self._sleep)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """An idempotent call (query or cancel), retried on temporary failures."""
        return self._retry(lambda: self._request_once("POST", path, body), path)

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._retry(lambda: self._request_once("GET", path, params=params), path)

    # --- configuration checks and trading rules ---------------------------------------------------
    def check_connector(self) -> None:
        """Refuse to trade through a connector the account has no credentials for (the server would
        answer every order with a 500)."""
        try:
            configured = self._get(f"/accounts/{self.account}/credentials")
        except UnknownOrderError:
            raise VenueConfigError(
                f"Hummingbot has no account {self.account!r}; create it or fix execution.hummingbot_account"
            ) from None
        if self.connector not in configured:
            raise VenueConfigError(
                f"Hummingbot account {self.account!r} has no credentials for connector {self.connector!r} "
                f"(it has: {sorted(configured)}); add the API keys in Hummingbot "
                f"(POST /accounts/add-credential/{self.account}/{self.connector}) or fix execution.hummingbot_connector"
            )
        self._connector_checked = True

    def _fetch_rules(self) -> dict[str, TradingRule]:
        try:
            raw = self._get(f"/connectors/{self.connector}/trading-rules")
        except UnknownOrderError as exc:
            raise VenueConfigError(
                f"Hummingbot does not know connector {self.connector!r} ({exc}); fix execution.hummingbot_connector"
            ) from None
        if not isinstance(raw, dict):
            raise VenueError(f"Hummingbot trading rules of an unknown shape: {str(raw)[:200]}")
        return {p: TradingRule.from_api(p, r) for p, r in raw.items() if isinstance(r, dict) and "error" not in r}

    def rule(self, symbol: str) -> TradingRule:
        return self.rules.rule(self._pair(symbol))

    def prepare(self, order: Order, reference_price: float | None = None) -> Order | BelowMinimum:
        """The order on the venue's grid (what will be journalled and sent), or why it would be refused."""
        return quantize_order(order, self.rule(order.symbol), reference_price)

    # --- raw reads --------------------------------------------------------------------------------
    def _pair(self, symbol: str) -> str:
        return trading_pair(symbol, self.quote)

    def _ours(self, pair: str) -> bool:
        return pair.upper().endswith("-" + self.quote.upper())

    def _filter(self, model: type[HummingbotOrderFilter | HummingbotTradeFilter], pairs: list[str] | None,
                start: int | None = None, end: int | None = None) -> dict[str, Any]:
        return model(
            limit=PAGE_LIMIT,
            account_names=[self.account],
            connector_names=[self.connector],
            trading_pairs=pairs,
            start_time=start,
            end_time=end,
        ).model_dump(exclude_none=True)

    def _active_pages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """/trading/orders/active pages by a working cursor (the client order id)."""
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_ACTIVE_PAGES):
            page = HummingbotPage.model_validate(self._post("/trading/orders/active", {**body, "cursor": cursor}))
            rows.extend(page.data)
            cursor = page.pagination.next_cursor
            if not page.pagination.has_more or not cursor or cursor in seen:
                return rows
            seen.add(cursor)
        raise VenueError("Hummingbot /trading/orders/active: the cursor never ends")

    def _windows(self, path: str, model: type[HummingbotOrderFilter | HummingbotTradeFilter],
                 pairs: list[str] | None, start: int, end: int) -> list[dict[str, Any]]:
        """Every row of [start, end] ms from a history route that pages by a cursor we cannot trust
        and reads only its newest limit*2 rows. One page (no cursor) holds the window's newest
        `limit` rows; when it says more exist, the next window ends at the oldest time on that page
        (inclusive: rows sharing that millisecond are read again and deduplicated)."""
        key, id_key = ("created_at", "order_id") if model is HummingbotOrderFilter else ("timestamp", "trade_id")
        rows: dict[str, dict[str, Any]] = {}
        hi = end
        while True:
            page = HummingbotPage.model_validate(self._post(path, self._filter(model, pairs, start, hi)))
            rows.update((str(r.get(id_key)), r) for r in page.data)
            if not page.pagination.has_more or not page.data:
                return list(rows.values())
            oldest = min(_ms(_row_time(r.get(key))) for r in page.data)
            if oldest >= hi:
                raise VenueError(
                    f"Hummingbot {path}: more than {PAGE_LIMIT} rows within one millisecond; cannot read them all"
                )
            hi = oldest

    def _span(self, since: datetime | None, until: datetime | None) -> tuple[int, int]:
        now = self._now()
        return _ms(since or now - timedelta(days=1)), _ms((until or now) + timedelta(minutes=1))

    def _parse_orders(self, rows: list[dict[str, Any]]) -> list[HummingbotOrder]:
        try:
            orders = [HummingbotOrder.model_validate(r) for r in rows]
        except ValidationError as exc:
            raise VenueError(f"Hummingbot sent an order row of an unknown shape: {exc}") from None
        return [o for o in orders if o.account_name == self.account and o.connector_name == self.connector]

    def raw_active_orders(self, pairs: list[str] | None = None) -> list[HummingbotOrder]:
        return self._parse_orders(self._active_pages(self._filter(HummingbotOrderFilter, pairs)))

    def raw_history(self, pairs: list[str] | None = None, since: datetime | None = None,
                    until: datetime | None = None) -> list[HummingbotOrder]:
        lo, hi = self._span(since, until)
        return self._parse_orders(self._windows("/trading/orders/search", HummingbotOrderFilter, pairs, lo, hi))

    def raw_orders(self, pairs: list[str] | None = None, since: datetime | None = None) -> list[HummingbotOrder]:
        """Active orders merged with the order history; the live view wins unless the history already
        has the order final."""
        merged = {o.order_id: o for o in self.raw_history(pairs, since)}
        for o in self.raw_active_orders(pairs):
            old = merged.get(o.order_id)
            if old is None or to_order_status(old.status) not in FINAL_STATUSES:
                merged[o.order_id] = o
        return list(merged.values())

    def raw_trades(self, pairs: list[str] | None = None, since: datetime | None = None) -> list[HummingbotTrade]:
        lo, hi = self._span(since, None)
        rows = self._windows("/trading/trades", HummingbotTradeFilter, pairs, lo, hi)
        try:
            trades = [HummingbotTrade.model_validate(r) for r in rows]
        except ValidationError as exc:
            raise VenueError(f"Hummingbot sent a trade row of an unknown shape: {exc}") from None
        return list({t.trade_id: t for t in trades}.values())

    # --- mapping ----------------------------------------------------------------------------------
    def _view(self, o: HummingbotOrder) -> VenueOrderView:
        return VenueOrderView(
            venue_order_id=o.order_id,
            symbol=base_of(o.trading_pair),
            side=to_side(o.trade_type),
            order_type=to_order_type(o.order_type),
            quantity=o.amount,
            price=o.price,
            status=to_order_status(o.status),
            filled_quantity=o.filled_amount,
            created_ts=o.created_at,
            average_fill_price=o.average_fill_price,
        )

    def _fill_view(self, t: HummingbotTrade) -> VenueFillView:
        return VenueFillView(
            fill_id=t.trade_id,
            venue_order_id=t.order_id,
            symbol=base_of(t.trading_pair),
            side=to_side(t.trade_type),
            ts=t.timestamp,
            price=t.price,
            quantity=t.amount,
            fee=abs(t.fee),
        )

    @staticmethod
    def views_from_trades(fills: list[VenueFillView], known: set[str]) -> list[VenueOrderView]:
        """Orders seen only through their trades (no order row yet): filled quantity and VWAP."""
        groups: dict[str, list[VenueFillView]] = {}
        for f in fills:
            if f.venue_order_id and f.venue_order_id not in known:
                groups.setdefault(f.venue_order_id, []).append(f)
        out = []
        for oid, g in groups.items():
            qty = sum(f.quantity for f in g)
            out.append(VenueOrderView(
                venue_order_id=oid, symbol=g[0].symbol, side=g[0].side, order_type=OrderType.MARKET, quantity=qty,
                price=sum(f.price * f.quantity for f in g) / qty, status=OrderStatus.FILLED, filled_quantity=qty,
                created_ts=min(f.ts for f in g), from_trades=True,
            ))
        return out

    @staticmethod
    def apply_view(order: Order, view: VenueOrderView) -> Order:
        """Our order updated with what the venue says about it."""
        return order.model_copy(
            update={"venue_order_id": view.venue_order_id, "status": view.status, "filled_quantity": view.filled_quantity}
        )

    # --- Venue contract ---------------------------------------------------------------------------
    def submit(self, order: Order) -> Order:
        known = self.journal.order(order.client_order_id)
        if known is not None:
            return known  # idempotent: this id was placed (or resolved) before
        intent = self.journal.intent(order.client_order_id)
        if intent is not None:
            # An earlier attempt may have reached the venue: it is found, or left for reconciliation.
            adopted = self._adopt_if_placed(intent)
            if adopted is not None:
                return adopted
            raise self._in_doubt(intent, "an earlier attempt of this order may have reached the venue")
        prepared = self.prepare(order)
        if isinstance(prepared, BelowMinimum):
            raise BelowMinimumError(prepared)
        if not self._connector_checked:
            self.check_connector()
        intent = self.journal.record_intent(prepared)  # BEFORE anything is sent, with the values sent
        request = HummingbotOrderRequest(
            account_name=self.account,
            connector_name=self.connector,
            trading_pair=self._pair(prepared.symbol),
            trade_type=to_trade_type(prepared.side),
            amount=prepared.quantity,
            order_type=to_hb_order_type(prepared.order_type),
            price=prepared.price if prepared.order_type == OrderType.LIMIT else None,
        )
        try:
            ack = self._retry(lambda: self._place_once(request), "place order")
        except _Ambiguous as amb:
            adopted = self._adopt_if_placed(intent)
            if adopted is not None:
                # Handled, but the venue lost an answer (timeout, 5xx, unreadable ack): the operator hears of it.
                self._notify(f"order {intent.client_order_id}: the venue's answer was lost ({amb.cause}); found it at "
                             f"the venue as {adopted.venue_order_id} and adopted it, not sent again")
                return adopted
            raise self._in_doubt(intent, str(amb.cause)) from None
        except VenueError as exc:  # refused (400/422, config, auth) or retries of 429/503 exhausted
            self.journal.resolve_intent(prepared.client_order_id, "not_at_venue", str(exc))
            self.journal.record_order(prepared.model_copy(update={"status": OrderStatus.REJECTED}))
            raise
        placed = prepared.model_copy(update={"venue_order_id": ack.order_id, "status": OrderStatus.OPEN})
        self.journal.record_order(placed)
        self.journal.resolve_intent(prepared.client_order_id, "acknowledged")
        return placed

    def _place_once(self, request: HummingbotOrderRequest) -> HummingbotOrderAck:
        try:
            raw = self._request_once("POST", "/trading/orders", request.model_dump(exclude_none=True))
        except (RateLimitedError, TradingRulesNotLoadedError):
            raise  # refused before processing: the retry policy sends it again
        except TemporaryVenueError as exc:
            if "Unexpected error placing trade" in str(exc) and self._unconfigured():
                raise VenueConfigError(
                    f"Hummingbot cannot trade on {self.connector!r} for account {self.account!r}: no credentials "
                    f"({exc}); add the API keys in Hummingbot or fix execution.hummingbot_connector"
                ) from None
            raise _Ambiguous(exc) from None
        try:
            return HummingbotOrderAck.model_validate(raw)
        except ValidationError:  # accepted, but we cannot read its id: as ambiguous as a timeout
            unreadable = TemporaryVenueError(f"Hummingbot /trading/orders answered an unreadable ack: {raw!r:.200}")
            raise _Ambiguous(unreadable) from None

    def _unconfigured(self) -> bool:
        try:
            self.check_connector()
        except VenueConfigError:
            return True
        except VenueError:
            return False
        return False

    def _notify(self, msg: str) -> None:
        log.warning(msg)
        if self._alert is not None:
            self._alert(msg)

    def _in_doubt(self, intent: JournalIntent, why: str) -> OrderInDoubtError:
        msg = (
            f"order {intent.client_order_id} ({intent.order.side.value} {intent.order.quantity} {intent.order.symbol}"
            f" @ {intent.order.price}) is in doubt: {why}; not sent again. Its intent stays unresolved; "
            "reconciliation adopts it if the venue has it, or declares it absent"
        )
        log.error(msg)
        if self._alert is not None:
            self._alert(msg)
        return OrderInDoubtError(msg)

    def candidates(self, intent: JournalIntent) -> list[VenueOrderView]:
        """Every venue order the intent could have produced: active, history and trade-only orders."""
        pair = [self._pair(intent.order.symbol)]
        since = intent_earliest(intent)
        views = {o.order_id: self._view(o) for o in self.raw_orders(pair, since=since)}
        fills = [self._fill_view(t) for t in self.raw_trades(pair, since=since)]
        return [*views.values(), *self.views_from_trades(fills, set(views))]

    def _adopt_if_placed(self, intent: JournalIntent) -> Order | None:
        found = match_intent(intent, self.candidates(intent), self.journal.claimed_venue_ids())
        if found is None:
            return None
        adopted = self.apply_view(intent.order, found)
        self.journal.record_order(adopted)
        self.journal.resolve_intent(intent.client_order_id, "adopted", f"found at the venue as {found.venue_order_id}")
        log.info("adopted venue order %s for intent %s", found.venue_order_id, intent.client_order_id)
        return adopted

    def _require(self, client_order_id: str) -> Order:
        order = self.journal.order(client_order_id)
        if order is None:
            intent = self.journal.intent(client_order_id)
            if intent is None:
                raise UnknownOrderError(f"order {client_order_id!r} is not in the journal: nothing to act on")
            adopted = self._adopt_if_placed(intent)
            if adopted is None:
                raise UnknownOrderError(
                    f"order {client_order_id!r} was journalled but is not at the venue (yet); run reconciliation"
                )
            order = adopted
        return order

    def cancel(self, client_order_id: str) -> Order:
        """Ask the venue to cancel (it answers "cancellation initiated"; the cancel lands later)."""
        order = self._require(client_order_id)
        if order.status in FINAL_STATUSES:
            return order
        path = f"/trading/{self.account}/{self.connector}/orders/{order.venue_order_id}/cancel"
        try:
            self._post(path)
        except UnknownOrderError:
            # Not in flight at the venue: it may have filled or been cancelled meanwhile.
            refreshed = self.get_order(client_order_id)
            if refreshed is None or refreshed.status not in FINAL_STATUSES:
                raise UnknownOrderError(
                    f"the venue does not know order {client_order_id!r} (Hummingbot id {order.venue_order_id}); "
                    "check the Hummingbot account before trading on"
                ) from None
            return refreshed
        refreshed = self.get_order(client_order_id)
        return refreshed if refreshed is not None else order

    def get_order(self, client_order_id: str) -> Order | None:
        order = self.journal.order(client_order_id)
        if order is None or order.venue_order_id is None:
            return order
        views = {o.order_id: o for o in self.raw_orders([self._pair(order.symbol)], since=self._order_since(order))}
        hb = views.get(order.venue_order_id)
        if hb is None:
            return order
        updated = self.apply_view(order, self._view(hb))
        if updated != order:
            self.journal.record_order(updated)
        return updated

    def open_orders(self) -> list[Order]:
        """Our orders resting at the venue (orders not in the journal are reported by reconciliation)."""
        by_venue_id = {o.venue_order_id: o for o in self.journal.orders() if o.venue_order_id}
        out: list[Order] = []
        for hb in self.raw_active_orders():
            ours = by_venue_id.get(hb.order_id)
            view = self._view(hb)
            if ours is not None and view.status not in FINAL_STATUSES:
                out.append(self.apply_view(ours, view))
        self.journal.record_orders([o for o in out if o != by_venue_id.get(o.venue_order_id or "")])
        return out

    def fills_since(self, client_order_id: str | None = None, since: datetime | None = None) -> list[Fill]:
        """Fills of our orders (all, or of one order) since `since` (default: the oldest order still
        open in the journal, or a day), recorded in the journal as they are seen."""
        by_venue_id = {o.venue_order_id: o for o in self.journal.orders() if o.venue_order_id}
        pairs = None
        if client_order_id is not None:
            order = self.journal.order(client_order_id)
            if order is None or order.venue_order_id is None:
                return []
            by_venue_id = {order.venue_order_id: order}
            pairs = [self._pair(order.symbol)]
        if since is None:
            since = self._fills_since_default(list(by_venue_id.values()))
        fills = []
        for t in self.raw_trades(pairs, since=since):
            ours = by_venue_id.get(t.order_id or "")
            if ours is not None:
                fills.append(fill_from_view(self._fill_view(t), ours))
        self.journal.record_fills(fills)
        return sorted(fills, key=lambda f: (f.ts, f.fill_id))

    def _fills_since_default(self, orders: list[Order]) -> datetime:
        """From the oldest of our most recently active orders (the journal keeps orders in update
        order): their fills may not be in the caller's ledger yet, even when the journal has them."""
        recent = orders[-RECENT_ORDERS:]
        if not recent:
            return self._now() - timedelta(days=1)
        return min(self._order_since(o) for o in recent)

    def _order_since(self, order: Order) -> datetime:
        """The earliest time the venue may have stamped anything of this order: before its intent
        was journalled and before the bar that created it, less the connector clock's lag."""
        intent = self.journal.intent(order.client_order_id)
        start = min(order.created_ts, intent.recorded_ts) if intent else order.created_ts
        return start - CLOCK_SLACK

    def balances(self, available: bool = False, refresh: bool = True) -> dict[str, float]:
        """Token -> units (total, or available when asked) of our account on our connector. Fresh from
        the exchange unless `refresh=False` (the server's 5-minute cache)."""
        body = HummingbotPortfolioFilter(
            account_names=[self.account], connector_names=[self.connector], refresh=refresh, skip_gateway=True
        )
        state = HummingbotPortfolioState.validate_python(self._post("/portfolio/state", body.model_dump()))
        tokens = state.get(self.account, {}).get(self.connector, [])
        return {
            t.token: (t.available_units if available and t.available_units is not None else t.units) for t in tokens
        }

    # --- reconciliation support -------------------------------------------------------------------
    def snapshot(self, since: datetime | None = None) -> VenueSnapshot:
        """Open orders, order history and trades since `since`, and fresh balances (read only)."""
        orders = {o.order_id: self._view(o) for o in self.raw_orders(since=since) if self._ours(o.trading_pair)}
        fills = [self._fill_view(t) for t in self.raw_trades(since=since) if self._ours(t.trading_pair)]
        views = [*orders.values(), *self.views_from_trades(fills, set(orders))]
        return VenueSnapshot(orders=views, fills=fills, balances=self.balances(refresh=True))


def _row_time(value: Any) -> datetime:
    """A history row's time (ISO, naive = UTC as the server writes it)."""
    ts = datetime.fromisoformat(str(value))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        detail = body.get("detail", body)
        if isinstance(detail, list):  # FastAPI's 422: a list of {loc, msg}
            return "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
                for d in detail
            )[:300]
        return str(detail)[:300]
    return str(body)[:200]


__all__ = [
    "BelowMinimumError",
    "HummingbotVenue",
    "OrderInDoubtError",
    "OrderRefusedError",
    "TradingRulesNotLoadedError",
    "UnknownOrderError",
    "VenueConfigError",
]
