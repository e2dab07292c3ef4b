"""Client connections and request heads are bounded (proxy.dataplane.protocol): real sockets against a real
proxy process, the upstream a raw recording server (tests.raw_upstream)."""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests.raw_upstream import RawUpstream, keep_alive_json
from tests.support import RunningProxy

ROUTES = "  docs:\n    blue: docs_v1\n    green: docs_v2\n    green_percent: 50\n"


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    with RawUpstream(keep_alive_json) as upstream:
        proxy = RunningProxy(
            tmp_path_factory.mktemp("limits") / "proxy", upstream.url, ROUTES,
            extra_yaml="limits: {header_timeout: 1s, max_header_bytes: 16384, max_header_count: 50, max_connections: 500}\n",
        )
        # An open-file limit the idle flood below would exhaust without limits.max_connections.
        proxy.server.args = ["sh", "-c", 'ulimit -n 1024 && exec "$@"', "sh", *proxy.server.args]
        proxy.start()
        try:
            yield upstream, proxy
        finally:
            proxy.stop()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a new connection and read until the proxy closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_to_close(sock)


def read_to_close(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def envelope(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return int(head.split(b" ")[1]), json.loads(body)["status"]["error"]


def test_slow_heads_are_closed_within_the_header_timeout(limited):
    upstream, proxy = limited
    sockets = [socket.create_connection(("127.0.0.1", proxy.data_port), timeout=10) for _ in range(200)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /collections HTTP/1.1\r\nhost: x\r\n")  # never finished
        started = time.monotonic()
        answers = [read_to_close(sock) for sock in sockets]
        assert time.monotonic() - started < 5
    finally:
        for sock in sockets:
            sock.close()
    status, message = envelope(answers[0])
    assert status == 408 and "limits.header_timeout" in message
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)


def test_oversized_head_is_refused_before_it_is_all_sent(limited):
    upstream, proxy = limited
    with socket.create_connection(("127.0.0.1", proxy.data_port), timeout=5) as sock:
        sock.sendall(b"GET /collections HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = 0
        with pytest.raises(OSError):  # the proxy answers and closes while the header is still coming
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        answer = read_to_close(sock)
    assert sent < 4 * 1024 * 1024
    status, message = envelope(answer)
    assert status == 431 and "limits.max_header_bytes" in message


def test_too_many_header_fields_is_a_431(limited):
    upstream, proxy = limited
    fields = b"".join(b"x-f%d: 1\r\n" % i for i in range(60))
    status, message = envelope(exchange(proxy.data_port, b"GET /collections HTTP/1.1\r\nhost: x\r\n" + fields + b"\r\n"))
    assert status == 431 and "limits.max_header_count" in message


def test_invalid_request_is_a_400_in_the_envelope(limited):
    upstream, proxy = limited
    status, message = envelope(exchange(proxy.data_port, b"GET /collections HTTP/1.1\r\nho st: x\r\n\r\n"))
    assert status == 400 and message.startswith("Wrong input: invalid HTTP request")


def test_chunked_trailer_fields_never_act_as_headers(limited):
    upstream, proxy = limited
    request = (
        b"POST /collections/other/points/scroll HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
        b"content-type: application/json\r\nconnection: close\r\n\r\n"
        b"2\r\n{}\r\n0\r\napi-key: stolen\r\nx-user-id: chosen\r\n\r\n"
    )
    answer = exchange(proxy.data_port, request)
    assert answer.startswith(b"HTTP/1.1 200")
    sent = upstream.seen[-1]
    assert sent.request_line.startswith(b"POST /collections/other/points/scroll")
    assert sent.body == b"{}"
    assert sent.header(b"api-key") is None and sent.header(b"x-user-id") is None


def test_clients_are_served_while_thousands_of_idle_connections_are_open(limited):
    upstream, proxy = limited
    idle = []
    try:
        for _ in range(1500):  # over limits.max_connections and over the proxy's open-file limit
            idle.append(socket.create_connection(("127.0.0.1", proxy.data_port), timeout=5))
        with httpx.Client(timeout=5) as client:
            for _ in range(5):
                assert client.get(proxy.url + "/collections").status_code == 200
        assert read_to_close(idle[0]) == b""  # the oldest idle connections made room
    finally:
        for sock in idle:
            sock.close()


def test_connection_limits_are_bound_at_start_up_and_validated():
    from proxy.control.reload import _restart_only_changes
    from routing.config import ConfigError, parse_config

    base = "upstream: {url: 'http://127.0.0.1:1'}\nroutes: {}\n"
    changed = parse_config(base + "limits: {header_timeout: 2s, max_connections: 10, max_concurrency: 5}\n")
    assert _restart_only_changes(parse_config(base), changed) == ["limits.max_connections", "limits.header_timeout"]
    with pytest.raises(ConfigError, match="limits.max_header_count"):
        parse_config(base + "limits: {max_header_count: 0}\n")
    with pytest.raises(ConfigError, match="upstream.max_queue"):
        parse_config("upstream: {url: 'http://127.0.0.1:1', max_queue: -1}\nroutes: {}\n")
