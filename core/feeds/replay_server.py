"""Replay source: recorded 1m candles served over the Polygon crypto protocol on loopback.

Two real servers share one ReplayTape (the recorded candles plus how far the replay has got):
- ReplayWsServer (websockets): status "connected" on connect, auth against a configured key
  (auth_failed closes the connection), `subscribe`/`unsubscribe` of `XA.<pair>` or `XA.*` confirmed by
  status "success", then XA events as JSON arrays. The replay clock starts when the first client has
  subscribed; a bar is sent once its minute has closed on the virtual clock (virtual time runs `speed`
  times faster than real time, one frame per minute, as Polygon does). speed=0 sends as fast as the
  socket takes it, `events_per_message` events per frame. Clients that reconnect miss what was sent
  while they were away, exactly like the real feed.
- ReplayRestServer (stdlib http.server in a thread): GET /v2/aggs/ticker/X:<SYM><QUOTE>/range/1/minute/
  {from}/{to} answering only bars the replay has already closed (what Polygon would know by then), with
  `limit` pagination through next_url and injectable failures (429 with Retry-After, 5xx, 401).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import polars as pl
import websockets
from pydantic import SecretStr
from websockets.asyncio.server import Server, ServerConnection

from core.feeds.polygon_schemas import MINUTE_MS, candles_to_xa_json, symbol_from_ticker
from core.settings import Settings

log = logging.getLogger(__name__)
# websockets logs every frame at DEBUG, auth frames (keys) included: pin our server's logger at INFO.
_WIRE_LOG = logging.getLogger(__name__ + ".wire")
_WIRE_LOG.setLevel(logging.INFO)


def _status(status: str, message: str) -> str:
    return json.dumps([{"ev": "status", "status": status, "message": message}])


class ReplayTape:
    """Recorded 1m candles ordered by (ts, symbol), pre-encoded as XA JSON, plus the replay position."""

    def __init__(self, candles: pl.DataFrame, quote: str) -> None:
        frame = candles.select("symbol", "ts", "open", "high", "low", "close", "volume").sort("ts", "symbol")
        self.quote = quote
        self.frame = frame.with_columns(pl.col("ts").dt.epoch("ms").alias("s_ms"))
        self.s_ms: list[int] = self.frame["s_ms"].to_list()
        self.json: list[str] = candles_to_xa_json(frame, quote).to_list()
        self.pairs: list[str] = (frame["symbol"] + f"-{quote}").to_list()
        self.all_pairs = frozenset(self.pairs)
        # End (exclusive, Unix ms) of the minutes already closed on the replay clock; REST serves below it.
        self.closed_until_ms = self.s_ms[0] if self.s_ms else 0

    def __len__(self) -> int:
        return len(self.s_ms)

    def close_all(self) -> None:
        """Mark every recorded minute as closed (REST-only use, e.g. a backfill against the replay)."""
        self.closed_until_ms = (self.s_ms[-1] + MINUTE_MS) if self.s_ms else 0

    def index_at(self, ts: datetime | None) -> int:
        if ts is None:
            return 0
        return bisect.bisect_left(self.s_ms, int(ts.timestamp() * 1000))  # s_ms is sorted

    def closed_bars(self, symbol: str, from_ms: int, to_ms: int) -> pl.DataFrame:
        return self.frame.filter(
            (pl.col("symbol") == symbol)
            & pl.col("s_ms").is_between(from_ms, to_ms)
            & (pl.col("s_ms") + MINUTE_MS <= self.closed_until_ms)
        )


def load_tape(
    settings: Settings,
    symbols: list[str] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    path: Path | None = None,
    store: Any = None,
) -> ReplayTape:
    """Candles to replay: from the store when given, else the shipped 1m parquet in data.data_dir."""
    if store is not None:
        if not symbols:
            raise ValueError("replay from the store needs the symbols to replay")
        frame = store.read_many(symbols, "1m", start, end)
    else:
        source = path or settings.data.data_dir / "ohlcv_1m.parquet"
        if not source.is_file():
            raise FileNotFoundError(f"no recorded 1m candles at {source}; set data.data_dir or pass --path")
        lf = pl.scan_parquet(source)
        if symbols:
            lf = lf.filter(pl.col("symbol").is_in(symbols))
        if start is not None:
            lf = lf.filter(pl.col("ts") >= start)
        if end is not None:
            lf = lf.filter(pl.col("ts") < end)
        frame = lf.collect()
    if frame.is_empty():
        raise ValueError(f"nothing to replay for {symbols} in [{start}, {end})")
    return ReplayTape(frame, settings.data.quote)


@dataclass
class _Client:
    authed: bool = False
    pairs: set[str] = field(default_factory=set)
    all_pairs: bool = False


class ReplayWsServer:
    def __init__(
        self,
        tape: ReplayTape,
        *,
        api_key: SecretStr,
        speed: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
        start: datetime | None = None,
        events_per_message: int = 1000,
    ) -> None:
        if speed < 0:
            raise ValueError("replay speed must be >= 0 (0 = as fast as possible)")
        self.tape = tape
        self.speed = speed
        self.host = host
        self.port = port
        self.events_per_message = events_per_message
        self.sent_events = 0
        self.connections = 0
        self.finished = asyncio.Event()
        self._key = api_key
        self._start_index = tape.index_at(start)
        self._clients: dict[ServerConnection, _Client] = {}
        self._subscribed = asyncio.Event()
        self._server: Server | None = None
        self._publisher: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> ReplayWsServer:
        # Everything before the start counts as already closed: REST can serve it.
        if self._start_index < len(self.tape):
            self.tape.closed_until_ms = self.tape.s_ms[self._start_index]
        else:
            self.tape.close_all()
        self._server = await websockets.serve(
            # No permessage-deflate: on loopback compressing 100 kB frames only burns the CPU we measure.
            self._handle, self.host, self.port, max_size=None, logger=_WIRE_LOG, compression=None
        )
        self.port = list(self._server.sockets)[0].getsockname()[1]
        self._publisher = asyncio.create_task(self._publish())
        log.info("replay WebSocket server on %s (%d bars, speed %s)", self.url, len(self.tape), self.speed or "max")
        return self

    async def stop(self) -> None:
        """Stop publishing and drop every connection (used by tests as a server crash)."""
        if self._publisher is not None:
            self._publisher.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> ReplayWsServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, ws: ServerConnection) -> None:
        client = _Client()
        self.connections += 1
        await ws.send(_status("connected", "Connected Successfully"))
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    action, params = msg["action"], str(msg.get("params", ""))
                except (ValueError, KeyError, TypeError):
                    await ws.send(_status("error", "invalid message"))
                    continue
                if action == "auth":
                    if params == self._key.get_secret_value():
                        client.authed = True
                        await ws.send(_status("auth_success", "authenticated"))
                    else:
                        await ws.send(_status("auth_failed", "authentication failed"))
                        await ws.close(code=1008, reason="authentication failed")
                        return
                elif not client.authed:
                    await ws.send(_status("error", "not authorized"))
                elif action in ("subscribe", "unsubscribe"):
                    await self._subscription(ws, client, action, params)
                else:
                    await ws.send(_status("error", f"unknown action {action!r}"))
        except websockets.ConnectionClosed:
            pass
        finally:
            self._clients.pop(ws, None)

    async def _subscription(self, ws: ServerConnection, client: _Client, action: str, params: str) -> None:
        for channel in (c.strip() for c in params.split(",") if c.strip()):
            if not channel.startswith("XA."):
                await ws.send(_status("error", f"unsupported channel {channel}"))
                continue
            pair = channel[3:]
            if action == "subscribe":
                client.all_pairs |= pair == "*"
                client.pairs.add(pair)
            else:
                client.all_pairs &= pair != "*"
                client.pairs.discard(pair)
            verb = "subscribed to" if action == "subscribe" else "unsubscribed to"
            await ws.send(_status("success", f"{verb}: {channel}"))
        if client.pairs:
            self._clients[ws] = client
            self._subscribed.set()
        else:
            self._clients.pop(ws, None)

    async def _publish(self) -> None:
        tape, i, n = self.tape, self._start_index, len(self.tape)
        await self._subscribed.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        v0 = tape.s_ms[i] if i < n else 0
        while i < n:
            if self.speed > 0:
                # Send every bar whose minute has closed on the virtual clock (one frame per minute).
                close_ms = tape.s_ms[i] + MINUTE_MS
                wait = (close_ms - v0) / 1000 / self.speed - (loop.time() - t0)
                if wait > 0:
                    await asyncio.sleep(wait)
                j = i
                while j < n and tape.s_ms[j] == tape.s_ms[i]:
                    j += 1
            else:
                j = min(n, i + self.events_per_message)
            tape.closed_until_ms = max(tape.closed_until_ms, tape.s_ms[j - 1] + MINUTE_MS)
            await self._broadcast(i, j)
            i = j
        self.finished.set()

    async def _broadcast(self, i: int, j: int) -> None:
        tape = self.tape
        for ws, client in list(self._clients.items()):
            if client.all_pairs or client.pairs >= tape.all_pairs:
                events = tape.json[i:j]
            else:
                events = [tape.json[k] for k in range(i, j) if tape.pairs[k] in client.pairs]
            if not events:
                continue
            try:
                await ws.send("[" + ",".join(events) + "]")
                self.sent_events += len(events)
            except websockets.ConnectionClosed:
                self._clients.pop(ws, None)


_AGGS = re.compile(r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<mult>\d+)/(?P<span>[a-z]+)/(?P<frm>[^/]+)/(?P<to>[^/]+)$")


def _parse_bound(text: str, end: bool) -> int:
    """Polygon accepts Unix ms or YYYY-MM-DD (a date bound covers the whole day)."""
    if text.isdigit():
        return int(text)
    day = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    return int(day.timestamp() * 1000) + (86_400_000 - 1 if end else 0)


class ReplayRestServer:
    """Polygon REST aggregates over the same tape, in a background thread."""

    def __init__(self, tape: ReplayTape, *, api_key: SecretStr, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tape = tape
        self._key = api_key
        self.failures: deque[tuple[int, float | None]] = deque()
        self.requests: list[tuple[str, int]] = []  # (path, status), for tests and the operator
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self.host, self.port = str(self._httpd.server_address[0]), int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="replay-rest", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        with self._lock:
            self.failures.extend([(status, retry_after)] * times)

    def start(self) -> ReplayRestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ReplayRestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, path: str, query: dict[str, list[str]], headers: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            failure = self.failures.popleft() if self.failures else None
        if failure is not None:
            status, retry_after = failure
            extra = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            return status, {"status": "ERROR", "request_id": uuid.uuid4().hex, "error": "injected failure"}, extra
        key = self._key.get_secret_value()
        bearer = headers.get("Authorization", "")
        if bearer != f"Bearer {key}" and query.get("apiKey", [""])[0] != key:
            return 401, {"status": "ERROR", "request_id": uuid.uuid4().hex, "error": "Unknown API Key"}, {}
        m = _AGGS.match(path)
        if not m or m["mult"] != "1" or m["span"] != "minute":
            return 404, {"status": "NOT_FOUND", "message": "only /range/1/minute/ aggregates are replayed"}, {}
        symbol = symbol_from_ticker(m["ticker"], self.tape.quote)
        try:
            frm, to = _parse_bound(m["frm"], False), _parse_bound(m["to"], True)
            limit = min(50_000, max(1, int(query.get("limit", ["5000"])[0])))
        except ValueError:
            return 400, {"status": "ERROR", "error": "bad from/to or limit"}, {}
        bars = self.tape.closed_bars(symbol, frm, to) if symbol else self.tape.frame.clear()
        page = bars.head(limit)
        body: dict[str, Any] = {
            "ticker": m["ticker"],
            "queryCount": len(page),
            "resultsCount": len(page),
            "adjusted": True,
            "status": "OK",
            "request_id": uuid.uuid4().hex,
            "count": len(page),
        }
        if len(page):
            body["results"] = page.select(
                v="volume", vw=(pl.col("high") + pl.col("low") + pl.col("close")) / 3,
                o="open", c="close", h="high", l="low", t="s_ms", n=pl.lit(1),
            ).to_dicts()
        if len(bars) > limit:
            nxt = bars["s_ms"][limit]
            body["next_url"] = (
                f"{self.url}/v2/aggs/ticker/{m['ticker']}/range/1/minute/{nxt}/{to}?adjusted=true&sort=asc&limit={limit}"
            )
        return 200, body, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                parts = urlsplit(self.path)
                status, body, extra = server._answer(parts.path, parse_qs(parts.query), self.headers)
                with server._lock:
                    server.requests.append((parts.path, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # request lines may carry apiKey=...; never log them

        return Handler
