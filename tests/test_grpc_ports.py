"""Issue 19 item 6, the ports' edges: keepalive and idle limits on the gRPC listener (`grpc:` keys), keepalive
on the proxy's upstream channels, a gRPC client at the REST port and an HTTP/1.1 client at the gRPC port.
Real processes (the proxy in front of the embedded upstream) over loopback sockets; raw HTTP/2 frames
where the frames themselves are the point."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import grpc
import httpx
import pytest
from qdrant_client import grpc as qgrpc
from qdrant_client import models

from tests.support import RunningProxy, free_port, qdrant_client, qdrant_grpc_client, start_embedded_upstream, wait_until
from tests.test_protocol import SETTINGS, frames_of

pytestmark = pytest.mark.slow

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOAWAY, PING = 0x7, 0x6
ENHANCE_YOUR_CALM = 0xB


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    grpc_port = free_port()
    server, url = start_embedded_upstream(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs"), grpc_port=grpc_port)
    yield url, grpc_port
    server.stop()


def start_proxy(directory, upstream: tuple[str, int], grpc_options: str, grpc_target: str | None = None) -> tuple[RunningProxy, int]:
    url, grpc_port = upstream
    port = free_port()
    proxy = RunningProxy(
        directory, url, "  {}\n", extra_yaml=f"grpc: {{host: 127.0.0.1, port: {port}, {grpc_options}}}\n",
        upstream_options=f"timeout: 10s, grpc_url: '{grpc_target or f'127.0.0.1:{grpc_port}'}'",
    )
    return proxy.start(), port


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    """Idle connections closed after 1 s; clients' pings accepted once a second at most."""
    running, port = start_proxy(tmp_path_factory.mktemp("proxy"), upstream, "max_connection_idle: 1s, min_ping_interval: 1s")
    running.grpc_port = port
    yield running
    running.stop()


def read_frames_until_goaway(sock: socket.socket, timeout: float, ping_every: float | None = None) -> tuple[list, float]:
    """Frames read until the server's GOAWAY (sending a PING every `ping_every` s meanwhile); and when it came."""
    started = time.monotonic()
    data, next_ping = b"", started
    sock.settimeout(0.05)
    while time.monotonic() - started < timeout:
        if ping_every is not None and time.monotonic() >= next_ping:
            sock.sendall(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678")
            next_ping += ping_every
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
        frames = frames_of(data)
        if any(kind == GOAWAY for kind, *_ in frames):
            return frames, time.monotonic() - started
    raise AssertionError(f"no GOAWAY within {timeout}s: {frames_of(data)}")


def goaway_of(frames: list) -> tuple[int, bytes]:
    payload = next(payload for kind, _, _, payload in frames if kind == GOAWAY)
    return int.from_bytes(payload[4:8], "big"), payload[8:]


def test_an_idle_connection_gets_goaway_after_max_connection_idle(proxy):
    with socket.create_connection(("127.0.0.1", proxy.grpc_port), timeout=5) as sock:
        sock.sendall(PREFACE + SETTINGS)
        frames, after = read_frames_until_goaway(sock, timeout=6)
    assert 0.8 <= after < 4, after
    _, debug = goaway_of(frames)  # its code is grpc core's choice (1.85: INTERNAL_ERROR); clients reconnect
    assert debug == b"connection idle"


def test_a_real_client_reconnects_after_the_idle_goaway(proxy):
    states = []
    with grpc.insecure_channel(f"127.0.0.1:{proxy.grpc_port}") as channel:
        channel.subscribe(states.append, try_to_connect=True)
        stub = qgrpc.CollectionsStub(channel)
        stub.List(qgrpc.ListCollectionsRequest(), timeout=5)
        wait_until(lambda: states[-1] == grpc.ChannelConnectivity.IDLE and grpc.ChannelConnectivity.READY in states, timeout=6)
        stub.List(qgrpc.ListCollectionsRequest(), timeout=5)  # a new connection, unnoticed by the caller


def test_a_client_pinging_too_often_gets_goaway_too_many_pings_and_the_proxy_serves_on(proxy):
    with socket.create_connection(("127.0.0.1", proxy.grpc_port), timeout=5) as sock:
        sock.sendall(PREFACE + SETTINGS)
        frames, _ = read_frames_until_goaway(sock, timeout=6, ping_every=0.1)
    code, debug = goaway_of(frames)
    assert code == ENHANCE_YOUR_CALM and b"too_many_pings" in debug, (code, debug)
    client = qdrant_grpc_client(proxy.url, proxy.grpc_port, timeout=10)
    try:
        client.get_collections()
    finally:
        client.close()


def test_pings_as_often_as_allowed_are_answered_and_keep_no_connection_busy(proxy):
    """A ping every 1.2 s (min_ping_interval 1 s): acknowledged, never too_many_pings; the idle limit
    still applies (pings are not calls)."""
    with socket.create_connection(("127.0.0.1", proxy.grpc_port), timeout=5) as sock:
        sock.sendall(PREFACE + SETTINGS)
        frames, _ = read_frames_until_goaway(sock, timeout=6, ping_every=1.2)
    assert (PING, 1) in [(kind, flags) for kind, flags, *_ in frames]  # an ACK
    assert goaway_of(frames)[1] == b"connection idle"


def test_a_grpc_client_at_the_rest_port_is_told_the_grpc_port(proxy):
    client = qdrant_grpc_client(proxy.url, proxy.data_port, timeout=10)  # gRPC at the REST port: a user's slip
    try:
        with pytest.raises(grpc.RpcError) as caught:
            client.get_collections()
    finally:
        client.close()
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == f"this port of the proxy speaks REST (HTTP/1.1), not gRPC; the proxy's gRPC port is {proxy.grpc_port}"


def test_rest_on_the_same_port_keeps_working_for_every_method(proxy):
    client = qdrant_client(proxy.url, timeout=10)
    try:
        client.create_collection("ports_rest", vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT))  # PUT
        client.upsert("ports_rest", [models.PointStruct(id=1, vector=[1.0, 0.0])], wait=True)  # PUT
        # PATCH reaches the upstream as REST (the embedded one answers it in Qdrant's envelope: not supported).
        patched = httpx.patch(proxy.url + "/collections/ports_rest", json={"optimizers_config": {}}, timeout=5)
        assert patched.status_code == 501 and "PATCH /collections/ports_rest" in patched.json()["status"]["error"]
        assert [point.id for point in client.query_points("ports_rest", query=[1.0, 0.0]).points] == [1]  # POST
        client.delete_collection("ports_rest")
    finally:
        client.close()


def test_http_1_at_the_grpc_port_is_closed_at_once_with_grpcs_own_bytes(proxy):
    """What grpc core answers (the choice documented in docs/grpc.md): its HTTP/2 SETTINGS, then close."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proxy.grpc_port), timeout=5) as sock:
        sock.sendall(b"GET /collections HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert time.monotonic() - started < 3
    assert frames_of(answer)[0][0] == 0x4  # SETTINGS: no HTTP/1.1 status line
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{proxy.grpc_port}/collections", timeout=5)
    assert httpx.get(proxy.url + "/collections", timeout=5).status_code == 200


# ---------------------------------------------------------------- keepalive on the upstream channels


class FreezingRelay:
    """A TCP relay to `target` whose connections can be frozen: bytes stop both ways, sockets stay open
    (a peer that died without a FIN: a pulled cable, a dropped NAT entry). New connections pass."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.frozen: set[asyncio.StreamWriter] = set()
        self.live: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "FreezingRelay":
        self.thread.start()
        self.server = _on_loop(self.loop, lambda: asyncio.start_server(self._serve, "127.0.0.1", self.port))
        return self

    def __exit__(self, *exc) -> None:
        async def close() -> None:
            self.server.close()
            for writer in self.live:
                writer.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            await asyncio.wait(tasks, timeout=2) if tasks else None
        _on_loop(self.loop, close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.live |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if writer in self.frozen:
                continue  # swallowed: the peer hears nothing
            writer.write(data)
            await writer.drain()


def _on_loop(loop: asyncio.AbstractEventLoop, function):
    """`function()` run on `loop` (awaited when it returns an awaitable); its result."""
    async def call():
        result = function()
        return await result if asyncio.iscoroutine(result) else result
    return asyncio.run_coroutine_threadsafe(call(), loop).result(5)


def test_a_dead_upstream_connection_is_noticed_by_keepalive_and_replaced(upstream, tmp_path):
    with FreezingRelay(upstream[1]) as relay:
        proxy, port = start_proxy(tmp_path / "proxy", upstream, "keepalive_time: 1s, keepalive_timeout: 500ms",
                                  grpc_target=f"127.0.0.1:{relay.port}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = qgrpc.CollectionsStub(channel)
                for _ in range(4):  # both upstream channels connected
                    stub.List(qgrpc.ListCollectionsRequest(), timeout=5)
                assert _on_loop(relay.loop, lambda: len(relay.live)) >= 4
                _on_loop(relay.loop, lambda: relay.frozen.update(relay.live))
                time.sleep(3)  # keepalive_time + keepalive_timeout, and a margin: the dead connections are gone
                for _ in range(4):  # each upstream channel in turn, on a fresh connection
                    started = time.monotonic()
                    stub.List(qgrpc.ListCollectionsRequest(), timeout=5)
                    assert time.monotonic() - started < 1
        finally:
            proxy.stop()
