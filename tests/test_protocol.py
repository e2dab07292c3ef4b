"""proxy.dataplane.protocol in process: uvicorn with the limited protocol on a real loopback socket, in
front of a small ASGI app; raw bytes, since the module is about framing."""
from __future__ import annotations

import json
import socket
import time

import pytest

from proxy.dataplane.body import read_body
from routing.config import Limits
from tests.inprocess import InProcessServer


async def echo_length(scope, receive, send):
    body = await read_body(scope, receive, 1 << 20)
    answer = json.dumps({"length": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server():
    with InProcessServer(echo_length, Limits(max_header_bytes=4096, body_timeout=0.5, header_timeout=2)) as running:
        yield running


def talk(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def head(size: int, extra: bytes = b"") -> bytes:
    """A canonical request head of exactly `size` bytes."""
    base = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + extra + b"x-pad: \r\n\r\n"
    return base.replace(b"x-pad: ", b"x-pad: " + b"a" * (size - len(base)))


@pytest.mark.parametrize("size, status", [(4096, b"200"), (4097, b"431")])
def test_max_header_bytes_is_exact_for_a_head_in_one_write(server, size, status):
    assert talk(server.port, head(size)).split(b" ")[1] == status


@pytest.mark.parametrize("split", [10, 2000, 4090])
def test_max_header_bytes_is_exact_across_packets(server, split):
    data = head(4097)
    assert talk(server.port, data[:split], data[split:], pause=0.02).split(b" ")[1] == b"431"
    data = head(4096)
    assert talk(server.port, data[:split], data[split:], pause=0.02).split(b" ")[1] == b"200"


def test_a_slow_body_gets_408_with_cors_for_a_browser(server):
    started = time.monotonic()
    answer = talk(server.port, b"POST / HTTP/1.1\r\nhost: x\r\norigin: https://page.example\r\ncontent-length: 10\r\n\r\nab")
    assert answer.startswith(b"HTTP/1.1 408") and b"limits.body_timeout" in answer
    assert b"access-control-allow-origin: https://page.example\r\n" in answer
    assert time.monotonic() - started < 3


def test_a_body_sent_in_pieces_within_the_timeout_is_read(server):
    answer = talk(server.port, b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 4\r\n\r\nab", b"cd", pause=0.1)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"length": 4}')


def answer_on(sock: socket.socket) -> bytes:
    """One whole answer of echo_length on a kept-alive connection (its body ends the JSON object)."""
    answer = b""
    while not answer.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    return answer


def test_keep_alive_requests_after_a_body_are_not_timed_out(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n")
            time.sleep(0.05)
            sock.sendall(b"ab")
            assert answer_on(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.8)  # past body_timeout with no request in progress: the connection stays
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert answer_on(sock).startswith(b"HTTP/1.1 200")


# ---------------------------------------------------------------- a gRPC (HTTP/2) client at this port

SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
# A call's HEADERS on stream 1 (HPACK: :method POST, :scheme http, :path /, content-type application/grpc).
CALL_BLOCK = b"\x83\x86\x84" + b"\x00\x0ccontent-type\x10application/grpc"
CALL_HEADERS = len(CALL_BLOCK).to_bytes(3, "big") + b"\x01\x04\x00\x00\x00\x01" + CALL_BLOCK


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each whole HTTP/2 frame in `data`."""
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + length]))
        data = data[9 + length:]
    return frames


def test_a_grpc_client_is_told_in_grpc_that_this_port_is_rest(server):
    import grpc
    from qdrant_client import grpc as qgrpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            qgrpc.CollectionsStub(channel).List(qgrpc.ListCollectionsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == (
        "this port of the proxy speaks REST (HTTP/1.1), not gRPC; the proxy has no gRPC listener (config `grpc:`)"
    )


@pytest.mark.parametrize("cut", [3, 17, 18, 23, 24, 30])
def test_the_preface_split_anywhere_gets_settings_an_ack_the_answer_and_goaway(server, cut):
    sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SETTINGS + CALL_HEADERS
    frames = frames_of(talk(server.port, sent[:cut], sent[cut:], pause=0.05))
    assert [(kind, flags, stream) for kind, flags, stream, _ in frames] == [(4, 0, 0), (4, 1, 0), (1, 5, 1), (7, 0, 0)]
    block = frames[2][3]
    assert block.startswith(b"\x88") and b"\x0bgrpc-status\x0212" in block and b"no gRPC listener" in block
    assert frames[3][3] == b"\x00\x00\x00\x01\x00\x00\x00\x00"  # GOAWAY: last stream 1, NO_ERROR


def test_methods_starting_with_p_and_pri_after_a_request_stay_http_1(server):
    for method in (b"POST", b"PUT", b"PATCH"):
        answer = talk(server.port, method + b" / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 2\r\n\r\nab")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"length": 2}'), answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert answer_on(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # not at the start of the connection: a bad request
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
