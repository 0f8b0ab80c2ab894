"""Binance public klines: parser on responses in the documented shape, client against a real local HTTP
server that serves real BTC bars with Binance's query parameters, pagination and error statuses."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest

from core.errors import FeedError, TemporaryFeedError
from core.feeds.binance_klines import BinanceKlinesClient, backfill_binance, parse_klines
from core.storage.duckdb_store import DuckDBStore

# Three klines as /api/v3/klines returns them (prices as strings); values of real BTCUSDT 1h bars.
RECORDED_BTCUSDT_1H = json.loads("""[
  [1717200000000, "67540.01000000", "67703.89000000", "67507.39000000", "67655.66000000", "569.87074000",
   1717203599999, "38524379.35630520", 31744, "282.53385000", "19099785.22834010", "0"],
  [1717203600000, "67655.66000000", "67710.29000000", "67428.44000000", "67560.00000000", "566.55975000",
   1717207199999, "38272937.81097600", 33522, "259.22107000", "17514026.72264110", "0"],
  [1717207200000, "67560.00000000", "67740.00000000", "67546.52000000", "67729.05000000", "327.71958000",
   1717210799999, "22165185.25071020", 22960, "186.21640000", "12594622.26431530", "0"]
]""")
T0 = datetime(2024, 6, 1, tzinfo=UTC)


def test_parse_klines_when_recorded_response_then_equals_real_bars(real_candles) -> None:
    got = parse_klines(RECORDED_BTCUSDT_1H, "BTC", "1h", now=T0 + timedelta(days=1))

    assert got.equals(real_candles("1h", ["BTC"], T0, T0 + timedelta(hours=3)))


def test_parse_klines_when_last_kline_still_open_then_dropped() -> None:
    now = T0 + timedelta(hours=2, minutes=30)  # inside the third bar

    got = parse_klines(RECORDED_BTCUSDT_1H, "BTC", "1h", now=now)

    assert got["ts"].to_list() == [T0, T0 + timedelta(hours=1)]


@pytest.mark.parametrize("body", [{"code": -1121, "msg": "Invalid symbol."}, [[1717200000000, "1"]], [[1, "x", "1", "1", "1", "1", 2]]])
def test_parse_klines_when_malformed_then_feed_error(body) -> None:
    with pytest.raises(FeedError, match="Binance klines for BTC"):
        parse_klines(body, "BTC", "1h", now=T0)


class _Binance:
    """State of the fake exchange: real bars to serve, scripted failures, the requests seen."""

    def __init__(self, bars: pl.DataFrame) -> None:
        self.bars = bars
        self.script: list[tuple[int, dict[str, str], str]] = []  # (status, headers, body) served first
        self.requests: list[dict[str, str]] = []

    def klines(self, q: dict[str, str]) -> list[list]:
        start, end, limit = int(q["startTime"]), int(q["endTime"]), int(q.get("limit", 500))
        step = 3_600_000
        sel = self.bars.with_columns(ms=pl.col("ts").dt.epoch("ms")).filter(pl.col("ms").is_between(start, end)).head(limit)
        return [
            [r["ms"], f"{r['open']:.8f}", f"{r['high']:.8f}", f"{r['low']:.8f}", f"{r['close']:.8f}",
             f"{r['volume']:.8f}", r["ms"] + step - 1, "0", 1, "0", "0", "0"]
            for r in sel.iter_rows(named=True)
        ]


@pytest.fixture
def binance(real_candles) -> Iterator[tuple[str, _Binance]]:
    state = _Binance(real_candles("1h", ["BTC"], datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 15, tzinfo=UTC)))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            url = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            state.requests.append(q)
            if state.script:
                status, headers, body = state.script.pop(0)
            elif url.path != "/api/v3/klines":
                status, headers, body = 404, {}, "{}"
            elif q.get("symbol") != "BTCUSDT":
                status, headers, body = 400, {}, json.dumps({"code": -1121, "msg": "Invalid symbol."})
            else:
                status, headers, body = 200, {}, json.dumps(state.klines(q))
            data = body.encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def _client(url: str, sleeps: list[float] | None = None, **kw) -> BinanceKlinesClient:
    return BinanceKlinesClient(
        base_url=url, clock=lambda: datetime(2030, 1, 1, tzinfo=UTC),
        sleep=(sleeps.append if sleeps is not None else lambda s: None), **kw,
    )


def test_fetch_when_range_spans_pages_then_all_bars_once_in_order(binance, real_candles) -> None:
    url, state = binance
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)

    with _client(url) as client:
        got = client.fetch("btc", "1h", start, end)

    assert got.equals(real_candles("1h", ["BTC"], start, end))
    assert len(got) == 2184
    assert [int(r["startTime"]) for r in state.requests] == [
        int(start.timestamp() * 1000) + i * 1000 * 3_600_000 for i in range(3)]
    assert {(r["interval"], r["limit"], r["endTime"]) for r in state.requests} == {
        ("1h", "1000", str(int(end.timestamp() * 1000) - 1))}


def test_fetch_when_now_inside_last_bar_then_open_kline_dropped(binance) -> None:
    url, _ = binance
    now = datetime(2024, 3, 1, 5, 20, tzinfo=UTC)
    client = BinanceKlinesClient(base_url=url, clock=lambda: now)

    got = client.fetch("BTC", "1h", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))

    assert got["ts"].max() == datetime(2024, 3, 1, 4, tzinfo=UTC)
    client.close()


def test_fetch_when_429_418_503_then_backs_off_and_succeeds(binance) -> None:
    url, state = binance
    state.script = [(429, {"Retry-After": "7"}, "{}"), (418, {}, "{}"), (503, {}, "busy")]
    sleeps: list[float] = []
    client = _client(url, sleeps, backoff=0.25)

    got = client.fetch("BTC", "1h", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))

    assert len(got) == 24
    # Retry-After honoured, then exponential backoff from 0.25 s (retry n waits 0.25 x 2^(n-1) + jitter <= 0.25 s)
    assert sleeps[0] == 7.0 and 0.5 <= sleeps[1] <= 0.75 and 1.0 <= sleeps[2] <= 1.25
    assert (client.metrics.retries, client.metrics.rate_limited, client.metrics.server_errors) == (3, 2, 1)


def test_fetch_when_server_keeps_failing_then_feed_error_after_max_retries(binance) -> None:
    url, state = binance
    state.script = [(500, {}, "oops")] * 5
    client = _client(url, max_retries=2)

    with pytest.raises(TemporaryFeedError, match="still failing after 3 attempts .HTTP 500"):
        client.fetch("BTC", "1h", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))

    assert len(state.requests) == 3


def test_fetch_when_banned_longer_than_retry_cap_then_feed_error_without_retry(binance) -> None:
    url, state = binance
    state.script = [(418, {"Retry-After": "7200"}, "{}")]  # Binance: bans grow when a client comes back early
    sleeps: list[float] = []
    client = _client(url, sleeps)

    with pytest.raises(FeedError, match="HTTP 418.*7200 s") as err:
        client.fetch("BTC", "1h", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))

    assert not isinstance(err.value, TemporaryFeedError)
    assert len(state.requests) == 1 and sleeps == []


def test_fetch_when_invalid_symbol_then_feed_error_without_retry(binance) -> None:
    url, state = binance
    client = _client(url)

    with pytest.raises(FeedError, match="HTTP 400.*Invalid symbol") as err:
        client.fetch("NOPE", "1h", datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))

    assert not isinstance(err.value, TemporaryFeedError)

    assert len(state.requests) == 1


def test_backfill_when_store_given_then_bars_upserted_idempotently(binance, tmp_path: Path, real_candles) -> None:
    url, _ = binance
    start, end = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 3, tzinfo=UTC)
    store = DuckDBStore(tmp_path / "s.duckdb")
    client = _client(url)

    first = backfill_binance(client, store, ["BTC"], "1h", start, end)
    again = backfill_binance(client, store, ["BTC"], "1h", start, end)

    assert first == again == {"BTC": 48}
    assert store.read_candles("BTC", "1h").equals(real_candles("1h", ["BTC"], start, end))
    store.close()
