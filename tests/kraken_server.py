"""A local Kraken that speaks the public protocol as published, on loopback, from recorded 1m candles.

REST (stdlib http.server in a thread), https://docs.kraken.com/api-reference/market-data/:
- GET /0/public/Assets and /0/public/AssetPairs: {"error": [], "result": {...}} keyed by Kraken's
  internal names (XXBT, ZUSD, XXBTZUSD, XDGUSD ...), with altname/wsname/base/quote/decimals/status;
- GET /0/public/OHLC?pair=<id|altname>&interval=<min>&since=<s>: the committed candles with
  time > since among the newest 720 of that interval, then ALWAYS the current uncommitted candle,
  and `last` = the newest committed candle's time. Rows are [time, "open", "high", "low", "close",
  "vwap", "volume", count] with prices as strings. Errors come with HTTP 200 in `error`
  ("EQuery:Unknown asset pair", "EGeneral:Invalid arguments"); scripted faults (`script`) answer an
  HTTP status or an error string first ("EService:Unavailable", "EAPI:Rate limit exceeded").
WebSocket v2 (websockets), https://docs.kraken.com/exchange/api-reference/spot-websocket-v2/ohlc:
- on connect a `status` update; {"method":"subscribe","params":{"channel":"ohlc","symbol":[..],
  "interval":1,"snapshot":true},"req_id":n} gets one ack per symbol (success false with an error
  for an unknown pair), then a `snapshot` of recent candles including the running one;
- `update` messages carry the running candle as trades happen: several per minute, the last one of a
  minute (sent as the clock leaves it) holding the recorded (final) values. A candle is closed only when a newer interval starts.
  Minutes without a recorded bar send nothing (no trades, no update), as on Kraken;
- {"method":"ping"} -> {"method":"pong"}; `heartbeat` messages between updates.

The clock is virtual: `await advance(minutes)` walks it minute by minute, pushing the updates.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import polars as pl
import websockets
from websockets.asyncio.server import Server, ServerConnection

MINUTE = timedelta(minutes=1)
INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
WINDOW = 720
# Kraken's internal names of a few coins (legacy X/Z prefixes, XBT for BTC, XDG for DOGE).
_ASSET_ID = {"BTC": "XXBT", "ETH": "XETH", "XRP": "XXRP", "DOGE": "XDG", "USD": "ZUSD"}
_ALT = {"BTC": "XBT", "DOGE": "XDG"}


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass
class KrakenState:
    bars: pl.DataFrame  # symbol, ts, open, high, low, close, volume (1m, recorded)
    coins: list[str]
    quote: str = "USD"
    now: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    updates_per_minute: int = 3
    snapshot_depth: int = 10
    offline: set[str] = field(default_factory=set)  # coins whose pair status is not "online"
    script: list[tuple[int, str | None]] = field(default_factory=list)  # (HTTP status, Kraken error) faults
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    by_coin: dict[str, pl.DataFrame] = field(default_factory=dict)
    _minute: dict[tuple[str, datetime], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ms = self.bars.sort("ts").with_columns(s=pl.col("ts").dt.epoch("s"))
        self.by_coin = {c: ms.filter(pl.col("symbol") == c) for c in self.coins}
        self._minute = {(r["symbol"], r["ts"]): r for r in ms.iter_rows(named=True)}  # running-candle lookup

    # -- names -------------------------------------------------------------------------------------
    def asset_id(self, coin: str) -> str:
        return _ASSET_ID.get(coin, coin)

    def pair_id(self, coin: str) -> str:
        if coin in _ASSET_ID and self.quote in _ASSET_ID:
            return self.asset_id(coin) + self.asset_id(self.quote)
        return f"{_ALT.get(coin, coin)}{self.quote}"

    def coin_for_pair(self, pair: str) -> str | None:
        for c in self.coins:
            if pair in (self.pair_id(c), f"{_ALT.get(c, c)}{self.quote}"):
                return c
        return None

    def coin_for_ws(self, symbol: str) -> str | None:
        base, _, quote = symbol.partition("/")
        return base if quote == self.quote and base in self.coins else None

    # -- candles -----------------------------------------------------------------------------------
    def committed(self, coin: str, interval: int) -> pl.DataFrame:
        """Candles of `interval` minutes closed by `now` (the newest 720), from the 1m bars."""
        frame = self.by_coin[coin].filter(pl.col("ts") + MINUTE <= self.now)
        if interval > 1:
            frame = (frame.group_by_dynamic("ts", every=f"{interval}m", closed="left", label="left")
                     .agg(pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
                          pl.col("close").last(), pl.col("volume").sum())
                     .filter(pl.col("ts") + pl.duration(minutes=interval) <= self.now)
                     .with_columns(s=pl.col("ts").dt.epoch("s")))
        start = self.now.replace(second=0, microsecond=0) - timedelta(minutes=interval * WINDOW)
        return frame.filter(pl.col("ts") >= start)

    def running(self, coin: str, progress: float) -> dict[str, Any] | None:
        """The current minute's candle as it stands `progress` (0..1] through the minute: the open, a
        close part-way to the recorded one, a share of the volume; at 1.0 the recorded bar."""
        minute = self.now.replace(second=0, microsecond=0)
        r = self._minute.get((coin, minute))
        if r is None:
            return None
        close = r["open"] + (r["close"] - r["open"]) * progress
        high = r["high"] if progress >= 1 else max(r["open"], close)
        low = r["low"] if progress >= 1 else min(r["open"], close)
        return {"ts": minute, "open": r["open"], "high": high, "low": low, "close": close,
                "volume": r["volume"] * progress}

    def ohlc(self, q: dict[str, str]) -> dict[str, Any]:
        coin = self.coin_for_pair(q.get("pair", ""))
        if coin is None:
            return {"error": ["EQuery:Unknown asset pair"]}
        try:
            interval = int(q.get("interval", "1"))
            since = int(q["since"]) if "since" in q else None
        except ValueError:
            return {"error": ["EGeneral:Invalid arguments"]}
        if interval not in INTERVALS:
            return {"error": ["EGeneral:Invalid arguments"]}
        done = self.committed(coin, interval)
        last = int(done["s"].max()) if done.height else int(self.now.timestamp()) - interval * 60
        if since is not None:
            done = done.filter(pl.col("s") > since)
        rows = [[r["s"], f"{r['open']:.8f}", f"{r['high']:.8f}", f"{r['low']:.8f}", f"{r['close']:.8f}",
                 f"{(r['high'] + r['low'] + r['close']) / 3:.8f}", f"{r['volume']:.8f}", 1]
                for r in done.iter_rows(named=True)]
        live = self.running(coin, 0.5) if interval == 1 else None
        if live is not None:  # always present, whatever `since` says
            rows.append([int(live["ts"].timestamp()), f"{live['open']:.8f}", f"{live['high']:.8f}",
                         f"{live['low']:.8f}", f"{live['close']:.8f}", f"{live['close']:.8f}",
                         f"{live['volume']:.8f}", 1])
        return {"error": [], "result": {self.pair_id(coin): rows, "last": last}}

    def assets(self) -> dict[str, Any]:
        result = {self.asset_id(c): {"aclass": "currency", "altname": _ALT.get(c, c), "decimals": 10,
                                     "display_decimals": 5, "status": "enabled"} for c in [*self.coins, self.quote]}
        return {"error": [], "result": result}

    def asset_pairs(self) -> dict[str, Any]:
        result = {}
        for c in self.coins:
            result[self.pair_id(c)] = {
                "altname": f"{_ALT.get(c, c)}{self.quote}", "wsname": f"{_ALT.get(c, c)}/{self.quote}",
                "aclass_base": "currency", "base": self.asset_id(c), "aclass_quote": "currency",
                "quote": self.asset_id(self.quote), "lot": "unit", "cost_decimals": 5, "pair_decimals": 1,
                "lot_decimals": 8, "lot_multiplier": 1, "leverage_buy": [], "leverage_sell": [],
                "fees": [[0, 0.4]], "fees_maker": [[0, 0.25]], "fee_volume_currency": "ZUSD",
                "margin_call": 80, "margin_stop": 40, "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.1",
                "status": "cancel_only" if c in self.offline else "online",
            }
        return {"error": [], "result": result}


class KrakenDouble:
    """REST + WebSocket v2 Kraken on 127.0.0.1 (ports chosen by the OS)."""

    def __init__(self, state: KrakenState) -> None:
        self.state = state
        self._http: ThreadingHTTPServer | None = None
        self._ws: Server | None = None
        self._subs: dict[ServerConnection, set[str]] = {}
        self.subscribe_requests: list[dict[str, Any]] = []
        self.connections = 0

    # -- REST ---------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                state.requests.append((url.path, q))
                status, body = 200, None
                if state.script and url.path == "/0/public/OHLC":
                    status, error = state.script.pop(0)
                    body = {"error": [error]} if error else {"error": ["EService:Unavailable"]}
                elif url.path == "/0/public/Assets":
                    body = state.assets()
                elif url.path == "/0/public/AssetPairs":
                    body = state.asset_pairs()
                elif url.path == "/0/public/OHLC":
                    body = state.ohlc(q)
                else:
                    status, body = 404, {"error": ["EGeneral:Unknown method"]}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    # -- WebSocket v2 ---------------------------------------------------------------------------------
    def _ws_candle(self, coin: str, c: dict[str, Any]) -> dict[str, Any]:
        return {"symbol": f"{coin}/{self.state.quote}", "open": c["open"], "high": c["high"], "low": c["low"],
                "close": c["close"], "trades": 1, "volume": c["volume"],
                "vwap": (c["high"] + c["low"] + c["close"]) / 3, "interval_begin": _iso(c["ts"]), "interval": 1,
                "timestamp": _iso(c["ts"] + MINUTE)}

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self._subs[ws] = set()
        await ws.send(json.dumps({"channel": "status", "type": "update", "data": [
            {"version": "2.0.10", "system": "online", "api_version": "v2", "connection_id": self.connections}]}))
        try:
            async for raw in ws:
                msg = json.loads(raw)
                method, req_id = msg.get("method"), msg.get("req_id")
                t = _iso(datetime.now(UTC))
                if method == "ping":
                    await ws.send(json.dumps({"method": "pong", "req_id": req_id, "time_in": t, "time_out": t}))
                elif method == "subscribe" and msg.get("params", {}).get("channel") == "ohlc":
                    self.subscribe_requests.append(msg)
                    await self._subscribe(ws, msg["params"], req_id, t)
                else:
                    await ws.send(json.dumps({"error": "Method not found", "method": method, "req_id": req_id,
                                              "success": False, "time_in": t, "time_out": t}))
        except websockets.ConnectionClosed:
            pass
        finally:
            self._subs.pop(ws, None)

    async def _subscribe(self, ws: ServerConnection, params: dict[str, Any], req_id: Any, t: str) -> None:
        interval = params.get("interval", 1)
        snapshot: list[dict[str, Any]] = []
        for symbol in params.get("symbol", []):
            coin = self.state.coin_for_ws(symbol)
            if coin is None or interval != 1:
                await ws.send(json.dumps({"error": f"Currency pair not supported {symbol}", "method": "subscribe",
                                          "req_id": req_id, "success": False, "symbol": symbol,
                                          "time_in": t, "time_out": t}))
                continue
            self._subs[ws].add(coin)
            await ws.send(json.dumps({"method": "subscribe", "result": {
                "channel": "ohlc", "interval": 1, "snapshot": params.get("snapshot", True), "symbol": symbol,
                "warnings": []}, "success": True, "time_in": t, "time_out": t, "req_id": req_id}))
            if params.get("snapshot", True):
                done = self.state.committed(coin, 1).tail(self.state.snapshot_depth)
                snapshot += [self._ws_candle(coin, r) for r in done.iter_rows(named=True)]
                live = self.state.running(coin, 0.5)
                if live is not None:
                    snapshot.append(self._ws_candle(coin, live))
        if snapshot:
            await ws.send(json.dumps({"channel": "ohlc", "type": "snapshot", "timestamp": t, "data": snapshot}))

    async def _broadcast(self, coins_progress: float) -> None:
        for ws, coins in list(self._subs.items()):
            data = [self._ws_candle(c, live) for c in sorted(coins)
                    if (live := self.state.running(c, coins_progress)) is not None]
            try:
                if data:
                    await ws.send(json.dumps({"channel": "ohlc", "type": "update",
                                              "timestamp": _iso(datetime.now(UTC)), "data": data}))
                else:
                    await ws.send(json.dumps({"channel": "heartbeat"}))
            except websockets.ConnectionClosed:
                self._subs.pop(ws, None)

    async def advance(self, minutes: int = 1) -> None:
        """Walk the virtual clock `minutes` minutes: finish the running minute (an update with its
        recorded values), enter the next one and push its first, partial updates."""
        n = self.state.updates_per_minute
        for _ in range(minutes):
            await self._broadcast(1.0)  # the minute's last trades: the candle's final values
            self.state.now += MINUTE
            for k in range(1, n):
                await self._broadcast(k / n)
                await asyncio.sleep(0)

    async def drop_clients(self) -> None:
        """Close every client connection abruptly (what a network drop looks like to the client)."""
        for ws in list(self._subs):
            ws.transport.abort()
        self._subs.clear()

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> KrakenDouble:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self._ws = await websockets.serve(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
            await self._ws.wait_closed()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def rest_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def ws_url(self) -> str:
        assert self._ws is not None
        port = next(iter(self._ws.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/v2"
