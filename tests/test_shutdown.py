"""Graceful shutdown, on a real proxy process in front of a slow raw upstream: on SIGTERM /readyz turns
503 at once (the admin listener stays up while the data listener drains), requests in progress finish
within `shutdown.grace_period` (default: upstream.timeout + 1 s), and one still running when it ends
gets a 503 in Qdrant's envelope, not uvicorn's plain-text 500 and a traceback."""
from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.raw_upstream import RawConnection, RawUpstream, response
from tests.support import RunningProxy, wait_until

ROUTES = "  docs:\n    blue: docs_v1\n    green: docs_v2\n    green_percent: 0\n"
BODY = b'{"result":{"points":[]},"status":"ok","time":0}'


async def answer_after_x_delay(conn: RawConnection) -> None:
    """Each request answered after the seconds in its x-delay header."""
    while (request := await conn.read_request()) is not None:
        await asyncio.sleep(float(request.header(b"x-delay") or 0))
        await conn.write(response(body=BODY))


class Call(threading.Thread):
    """One search through the proxy, in a thread: its status, body and when it ended."""

    def __init__(self, proxy: RunningProxy, delay: float):
        super().__init__(daemon=True)
        self.proxy, self.delay = proxy, delay
        self.status = self.body = self.ended = self.error = None

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.proxy.data_port, timeout=60)
        try:
            connection.request("POST", "/collections/docs/points/query", body=b'{"query":[1,2],"limit":1}',
                               headers={"content-type": "application/json", "x-delay": str(self.delay)})
            answer = connection.getresponse()
            self.status, self.body = answer.status, answer.read()
        except Exception as exc:  # noqa: BLE001 - reported by the test's assertions
            self.error = exc
        finally:
            self.ended = time.monotonic()
            connection.close()


def readyz(proxy: RunningProxy) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=2) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_call(proxy: RunningProxy, upstream: RawUpstream, delay: float) -> Call:
    seen = len(upstream.seen)
    call = Call(proxy, delay)
    call.start()
    wait_until(lambda: len(upstream.seen) > seen, timeout=10)  # in progress: the upstream has it
    return call


def data_port_refuses(proxy: RunningProxy) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", proxy.data_port)) != 0


@pytest.fixture
def slow_upstream():
    with RawUpstream(answer_after_x_delay) as upstream:
        yield upstream


def test_sigterm_turns_readiness_false_at_once_and_a_request_in_progress_finishes(tmp_path, slow_upstream):
    with RunningProxy(tmp_path / "proxy", slow_upstream.url, ROUTES, extra_yaml="shutdown: {grace_period: 8s}\n") as proxy:
        assert readyz(proxy)[0] == 200
        call = start_call(proxy, slow_upstream, delay=3)
        signalled = time.monotonic()
        proxy.server.process.send_signal(signal.SIGTERM)
        status, document = wait_until(lambda: (answer := readyz(proxy))[0] == 503 and answer, timeout=1)
        assert document["ready"] is False and document["reason"] == "shutting down"
        assert time.monotonic() - signalled < 1
        wait_until(lambda: data_port_refuses(proxy), timeout=2)  # no drain_delay: the data listener closed
        assert readyz(proxy)[0] == 503  # while the admin listener stays up for the probes
        call.join(15)
        assert (call.status, call.body, call.error) == (200, BODY, None)
        assert proxy.server.process.wait(10) == 0
    log = proxy.server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_default_grace_covers_upstream_timeout(tmp_path, slow_upstream):
    """No shutdown settings: a request of 10.5 s (under upstream.timeout 15 s) still finishes; uvicorn's
    fixed 10 s cut it off."""
    proxy = RunningProxy(tmp_path / "proxy", slow_upstream.url, ROUTES, upstream_options="timeout: 15s")
    with proxy:
        call = start_call(proxy, slow_upstream, delay=10.5)
        proxy.server.process.send_signal(signal.SIGTERM)
        call.join(30)
        assert (call.status, call.body, call.error) == (200, BODY, None)
        assert proxy.server.process.wait(10) == 0


def test_request_still_running_when_grace_ends_gets_503_in_qdrants_envelope(tmp_path, slow_upstream):
    with RunningProxy(tmp_path / "proxy", slow_upstream.url, ROUTES, extra_yaml="shutdown: {grace_period: 1s}\n") as proxy:
        call = start_call(proxy, slow_upstream, delay=8)
        signalled = time.monotonic()
        proxy.server.process.send_signal(signal.SIGTERM)
        call.join(15)
        assert call.error is None and call.status == 503
        document = json.loads(call.body)
        assert document["status"]["error"] == (
            "Service unavailable: bluegreen-proxy shut down before the request finished (shutdown.grace_period 1s)"
        )
        assert isinstance(document["time"], float)
        assert 1 <= call.ended - signalled < 4
        assert proxy.server.process.wait(10) == 0
    log = proxy.server.log()
    assert "Traceback" not in log
    assert "shutdown: 1 request(s) still running after shutdown.grace_period 1s answered 503" in log


def test_drain_delay_keeps_serving_while_readiness_is_false(tmp_path, slow_upstream):
    extra = "shutdown: {grace_period: 5s, drain_delay: 2s}\n"
    with RunningProxy(tmp_path / "proxy", slow_upstream.url, ROUTES, extra_yaml=extra) as proxy:
        signalled = time.monotonic()
        proxy.server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: readyz(proxy)[0] == 503, timeout=1)
        late = Call(proxy, delay=0)  # a client the load balancer has not taken out yet
        late.run()
        assert (late.status, late.body) == (200, BODY)
        assert late.ended - signalled < 2
        wait_until(lambda: data_port_refuses(proxy), timeout=5)
        assert time.monotonic() - signalled >= 2
        assert proxy.server.process.wait(10) == 0


def test_shutdown_settings_default_past_upstream_timeout_and_name_bad_fields():
    from routing.config import ConfigError, parse_config

    assert parse_config("upstream: {timeout: 45s}", environ={}).shutdown_grace_period == 46
    config = parse_config("shutdown: {grace_period: 2m, drain_delay: 500ms}", environ={})
    assert (config.shutdown_grace_period, config.shutdown.drain_delay) == (120, 0.5)
    assert parse_config("routes: {}", environ={}).shutdown.drain_delay is None
    for text, message in (
        ("shutdown: {grace_period: soon}", "shutdown.grace_period: must be a duration"),
        ("shutdown: {drain_delay: -1}", "shutdown.drain_delay: must be a positive duration"),
        ("shutdown: {grace: 5s}", "shutdown.grace: unknown key"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config(text, environ={})
