"""Slack alerts against a real local HTTP receiver that records posts and fails on demand."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from core.alerts import MAX_RETRY_AFTER, AlertKind, SlackAlerter


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.script: deque[tuple[int, dict[str, str], float]] = deque()  # (status, headers, delay)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, headers, delay = receiver.script.popleft() if receiver.script else (200, {}, 0.0)
                if delay:
                    threading.Event().wait(delay)
                receiver.posts.append({"status": status, "body": body, "path": self.path})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # the client timed out and hung up on purpose (timeout test): nothing to report

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/services/T000/B000/secret-token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.httpd.shutdown()
    r.httpd.server_close()


def _alerter(url: str | None, **kw) -> tuple[SlackAlerter, list[float]]:
    slept: list[float] = []
    opts = {"max_retries": 3, "backoff": 0.01, "timeout": 5.0} | kw
    return SlackAlerter(SecretStr(url) if url else None, sleep=slept.append, **opts), slept


def test_alert_when_receiver_ok_then_posts_text_and_blocks(receiver):
    alerter, _ = _alerter(receiver.url)
    ok = alerter.send(AlertKind.FILL, "BTC buy filled", ["0.01 @ 97,000"], fields={"strategy": "dca"})
    assert ok is True
    (post,) = receiver.posts
    assert post["path"] == "/services/T000/B000/secret-token"
    assert post["body"]["text"].startswith(":white_check_mark: [fill] BTC buy filled")
    assert "*strategy*: dca" in post["body"]["blocks"][1]["text"]["text"]


def test_alert_when_500_then_retried_until_accepted(receiver):
    receiver.script.extend([(500, {}, 0.0), (502, {}, 0.0)])
    alerter, slept = _alerter(receiver.url)
    assert alerter.send(AlertKind.FLOW_FAILURE, "scan failed") is True
    assert [p["status"] for p in receiver.posts] == [500, 502, 200]
    # exponential backoff from 0.01 s with jitter of at most 0.01 s
    assert 0.01 <= slept[0] <= 0.02 and 0.02 <= slept[1] <= 0.03 and alerter.stats.retries == 2


def test_alert_when_429_then_honours_retry_after(receiver):
    receiver.script.append((429, {"Retry-After": "2"}, 0.0))
    alerter, slept = _alerter(receiver.url)
    assert alerter.send(AlertKind.REGIME_CHANGE, "NORMAL -> PANIC") is True
    assert slept == [2.0]


def test_alert_when_retry_after_too_long_then_waits_the_alert_cap(receiver):
    receiver.script.append((429, {"Retry-After": "3600"}, 0.0))
    alerter, slept = _alerter(receiver.url)
    assert alerter.send(AlertKind.REGIME_CHANGE, "NORMAL -> PANIC") is True
    assert slept == [MAX_RETRY_AFTER]


def test_alert_when_hook_revoked_then_false_without_retry(receiver):
    receiver.script.append((404, {}, 0.0))  # Slack answers 404 no_service for a deleted hook
    alerter, slept = _alerter(receiver.url)
    assert alerter.send(AlertKind.FILL, "x") is False
    assert len(receiver.posts) == 1 and slept == [] and alerter.stats.failed == 1


def test_alert_when_always_failing_or_timing_out_then_false_never_raises_url_never_logged(receiver, caplog):
    receiver.script.extend([(500, {}, 0.0), (503, {}, 0.0), (500, {}, 1.5), (500, {}, 0.0)])  # third one times out
    alerter, slept = _alerter(receiver.url, timeout=0.5)
    with caplog.at_level(logging.DEBUG):
        ok = alerter.send(AlertKind.DATA_HEALTH, "gate failed for ETH")
    assert ok is False
    assert alerter.stats.failed == 1 and len(slept) == 3
    assert "secret-token" not in caplog.text


def test_alert_when_no_url_then_logged_only(caplog):
    alerter, _ = _alerter(None)
    with caplog.at_level(logging.INFO):
        assert alerter.send(AlertKind.EXIT, "SOL take profit") is False
    assert alerter.stats.logged_only == 1
    assert "[exit] SOL take profit" in caplog.text


def test_alert_when_receiver_down_then_false_after_retries():
    alerter, slept = _alerter("http://127.0.0.1:9/hook", max_retries=2)
    assert alerter.send(AlertKind.FLOW_FAILURE, "x") is False
    assert len(slept) == 2
