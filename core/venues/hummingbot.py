"""The live venue: orders to Kraken (or any connector) through the Hummingbot API over HTTP basic auth.

Retry rules (the point of this module):
- Reads and cancels are safe to repeat: retried with exponential backoff on timeouts, connection
  errors, 5xx and 429 (honouring Retry-After).
- Placing an order is not: the intent is journalled first; after an ambiguous failure (timeout,
  connection error, 5xx) the venue's orders are searched for it and a match is adopted; the order is
  sent again only when the search shows it absent. 429 is a refusal before processing, so it is
  retried after the backoff without a search.
- 401/403 and other 4xx raise VenueError at once: a person must fix credentials or the request.
The password is a SecretStr handed to httpx's auth only; it is never logged or put in a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from pydantic import ValidationError

from core.domain import Fill, Order, OrderStatus, OrderType
from core.errors import RateLimitedError, TemporaryVenueError, VenueError
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
    match_intent,
)

log = logging.getLogger(__name__)

_MAX_PAGES = 100  # a guard against a cursor that never ends
_PAGE_LIMIT = 500


class UnknownOrderError(VenueError):
    """The venue does not know this order (HTTP 404 on cancel, or absent from its history)."""


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
    ) -> None:
        ex = settings.execution
        self.settings = settings
        self.journal = journal
        self.account = ex.hummingbot_account
        self.connector = ex.hummingbot_connector
        self.quote = ex.hummingbot_quote
        self.max_retries = ex.max_retries
        self.backoff = ex.backoff_seconds
        self._sleep = sleep
        self._client = client or httpx.Client(
            base_url=ex.hummingbot_url,
            auth=httpx.BasicAuth(ex.hummingbot_username, ex.hummingbot_password.get_secret_value()),
            timeout=ex.timeout_seconds,
        )

    def close(self) -> None:
        self._client.close()

    # --- HTTP -------------------------------------------------------------------------------------
    def _post_once(self, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
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
            err = RateLimitedError(f"Hummingbot {path}: rate limited (HTTP 429)")
            err.retry_after = _retry_after(resp)  # type: ignore[attr-defined]
            raise err
        if code >= 500:
            raise TemporaryVenueError(f"Hummingbot {path}: HTTP {code}: {detail}")
        raise VenueError(f"Hummingbot rejected {path}: HTTP {code}: {detail}")

    def _wait(self, attempt: int, exc: TemporaryVenueError) -> None:
        delay = self.backoff * (2**attempt)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        log.warning("Hummingbot: %s; retry %d/%d in %.2fs", exc, attempt + 1, self.max_retries, delay)
        self._sleep(delay)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """An idempotent call (query or cancel), retried on temporary failures."""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(path, body)
            except TemporaryVenueError as exc:
                if attempt == self.max_retries:
                    raise
                self._wait(attempt, exc)
        raise AssertionError("unreachable")

    def _pages(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = HummingbotPage.model_validate(self._post(path, {**body, "cursor": cursor}))
            rows.extend(page.data)
            cursor = page.pagination.next_cursor
            if not page.pagination.has_more or not cursor:
                return rows
        raise VenueError(f"Hummingbot {path}: more than {_MAX_PAGES} pages; narrow the time window")

    # --- raw reads --------------------------------------------------------------------------------
    def _pair(self, symbol: str) -> str:
        return trading_pair(symbol, self.quote)

    def _ours(self, pair: str) -> bool:
        return pair.upper().endswith("-" + self.quote.upper())

    def _filter(
        self, model: type[HummingbotOrderFilter | HummingbotTradeFilter], pairs: list[str] | None, since: datetime | None
    ) -> dict[str, Any]:
        """The request body of an order or trade search: our account and connector, full pages."""
        return model(
            limit=_PAGE_LIMIT,
            account_names=[self.account],
            connector_names=[self.connector],
            trading_pairs=pairs,
            start_time=_ms(since) if since else None,
        ).model_dump(exclude_none=True)

    def _parse_orders(self, rows: list[dict[str, Any]]) -> list[HummingbotOrder]:
        try:
            orders = [HummingbotOrder.model_validate(r) for r in rows]
        except ValidationError as exc:
            raise VenueError(f"Hummingbot sent an order row of an unknown shape: {exc}") from None
        return [o for o in orders if o.account_name == self.account and o.connector_name == self.connector]

    def raw_active_orders(self, pairs: list[str] | None = None) -> list[HummingbotOrder]:
        return self._parse_orders(self._pages("/trading/orders/active", self._filter(HummingbotOrderFilter, pairs, None)))

    def raw_orders(self, pairs: list[str] | None = None, since: datetime | None = None) -> list[HummingbotOrder]:
        """Active orders merged with the order history (newest first); the live view wins unless the
        history already has the order final."""
        merged = {o.order_id: o for o in self._parse_orders(
            self._pages("/trading/orders/search", self._filter(HummingbotOrderFilter, pairs, since))
        )}
        for o in self.raw_active_orders(pairs):
            old = merged.get(o.order_id)
            if old is None or to_order_status(old.status) not in FINAL_STATUSES:
                merged[o.order_id] = o
        return list(merged.values())

    def raw_trades(self, pairs: list[str] | None = None, since: datetime | None = None) -> list[HummingbotTrade]:
        body = self._filter(HummingbotTradeFilter, pairs, since)
        try:
            return [HummingbotTrade.model_validate(r) for r in self._pages("/trading/trades", body)]
        except ValidationError as exc:
            raise VenueError(f"Hummingbot sent a trade row of an unknown shape: {exc}") from None

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
        if intent is None:
            intent = self.journal.record_intent(order)  # BEFORE anything is sent
        else:
            # An earlier attempt may have reached the venue: look before sending again.
            adopted = self._adopt_if_placed(intent)
            if adopted is not None:
                return adopted
        request = HummingbotOrderRequest(
            account_name=self.account,
            connector_name=self.connector,
            trading_pair=self._pair(order.symbol),
            trade_type=to_trade_type(order.side),
            amount=order.quantity,
            order_type=to_hb_order_type(order.order_type),
            price=order.price if order.order_type == OrderType.LIMIT else None,
        )
        for attempt in range(self.max_retries + 1):
            try:
                ack = self._place_once(request)
            except RateLimitedError as exc:  # refused before processing: nothing was placed
                if attempt == self.max_retries:
                    raise
                self._wait(attempt, exc)
                continue
            except TemporaryVenueError as exc:  # ambiguous: it may have been placed
                adopted = self._adopt_if_placed(intent)
                if adopted is not None:
                    return adopted
                if attempt == self.max_retries:
                    raise TemporaryVenueError(
                        f"order {order.client_order_id} not confirmed after {attempt + 1} attempts ({exc}); "
                        "its intent stays in the journal and is searched for before any resend"
                    ) from None
                self._wait(attempt, exc)
                continue
            except VenueError as exc:
                self.journal.resolve_intent(order.client_order_id, "not_at_venue", str(exc))
                self.journal.record_order(order.model_copy(update={"status": OrderStatus.REJECTED}))
                raise
            placed = order.model_copy(update={"venue_order_id": ack.order_id, "status": OrderStatus.OPEN})
            self.journal.record_order(placed)
            self.journal.resolve_intent(order.client_order_id, "acknowledged")
            return placed
        raise AssertionError("unreachable")

    def _place_once(self, request: HummingbotOrderRequest) -> HummingbotOrderAck:
        raw = self._post_once("/trading/orders", request.model_dump(exclude_none=True))
        try:
            return HummingbotOrderAck.model_validate(raw)
        except ValidationError:  # accepted, but we cannot read its id: as ambiguous as a timeout
            raise TemporaryVenueError(f"Hummingbot /trading/orders answered an unreadable ack: {raw!r:.200}") from None

    def _adopt_if_placed(self, intent: JournalIntent) -> Order | None:
        views = [
            self._view(o)
            for o in self.raw_orders([self._pair(intent.order.symbol)], since=intent.recorded_ts - CLOCK_SLACK)
        ]
        found = match_intent(intent, views, self.journal.claimed_venue_ids())
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
                    f"order {client_order_id!r} was journalled but never reached the venue; run reconciliation"
                )
            order = adopted
        return order

    def cancel(self, client_order_id: str) -> Order:
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
        since = (self.journal.intent(client_order_id) or JournalIntent(order, order.created_ts)).recorded_ts
        views = {o.order_id: o for o in self.raw_orders([self._pair(order.symbol)], since=since - CLOCK_SLACK)}
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
        self.journal.record_orders([o for o in out if o != by_venue_id[o.venue_order_id]])
        return out

    def fills_since(self, client_order_id: str | None = None) -> list[Fill]:
        """Fills of our orders (all, or of one order), recorded in the journal as they are seen."""
        by_venue_id = {o.venue_order_id: o for o in self.journal.orders() if o.venue_order_id}
        pairs = None
        if client_order_id is not None:
            order = self.journal.order(client_order_id)
            if order is None or order.venue_order_id is None:
                return []
            by_venue_id = {order.venue_order_id: order}
            pairs = [self._pair(order.symbol)]
        fills = []
        for t in self.raw_trades(pairs):
            ours = by_venue_id.get(t.order_id or "")
            if ours is not None:
                fills.append(fill_from_view(self._fill_view(t), ours))
        self.journal.record_fills(fills)
        return sorted(fills, key=lambda f: (f.ts, f.fill_id))

    def balances(self, available: bool = False) -> dict[str, float]:
        """Token -> units (total, or available when asked) of our account on our connector."""
        body = HummingbotPortfolioFilter(account_names=[self.account], connector_names=[self.connector])
        state = HummingbotPortfolioState.validate_python(self._post("/portfolio/state", body.model_dump()))
        tokens = state.get(self.account, {}).get(self.connector, [])
        return {
            t.token: (t.available_units if available and t.available_units is not None else t.units) for t in tokens
        }

    # --- reconciliation support -------------------------------------------------------------------
    def snapshot(self, since: datetime | None = None) -> VenueSnapshot:
        """Open orders, order history and trades since `since`, and balances (read only)."""
        orders = [self._view(o) for o in self.raw_orders(since=since) if self._ours(o.trading_pair)]
        fills = [self._fill_view(t) for t in self.raw_trades(since=since) if self._ours(t.trading_pair)]
        return VenueSnapshot(orders=orders, fills=fills, balances=self.balances())


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(body.get("detail", body))[:200] if isinstance(body, dict) else str(body)[:200]


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

