"""Memory is bounded: no upstream answer outlives its request. Measured on the proxy process's RSS
(/proc/<pid>/status) around rounds of concurrent large answers from a raw upstream."""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.raw_upstream import RawConnection, RawUpstream, response
from tests.support import RunningProxy

pytestmark = pytest.mark.slow  # rounds of large answers while the proxy's RSS is measured

MIB = 1024 * 1024
LARGE = response(200, b"[" + b"1," * (10 * MIB) + b"1]")  # a 20 MiB JSON answer
ROUNDS, CONCURRENT = 2, 6


async def large_answers(conn: RawConnection) -> None:
    while (request := await conn.read_request()) is not None:
        await conn.write(LARGE if b"/large" in request.request_line else response())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_rss_returns_near_its_baseline_after_rounds_of_large_answers(tmp_path):
    with RawUpstream(large_answers) as upstream, RunningProxy(tmp_path / "proxy", upstream.url, "  docs: {blue: a, green: b}\n") as proxy:
        pid = proxy.server.process.pid
        with httpx.Client(timeout=30) as client:
            for _ in range(20):
                assert client.get(proxy.url + "/small").status_code == 200
        baseline = rss_bytes(pid)

        def fetch(_):  # a raw socket: the test's own client must not be the slow part
            with socket.create_connection(("127.0.0.1", proxy.data_port), timeout=60) as sock:
                sock.sendall(b"GET /large HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                received = bytearray()
                while chunk := sock.recv(1 << 20):
                    received += chunk
            head, _, body = bytes(received).partition(b"\r\n\r\n")
            return head.split(b" ")[1], len(body)

        peak = baseline
        with ThreadPoolExecutor(CONCURRENT) as pool:
            for _ in range(ROUNDS):
                assert set(pool.map(fetch, range(CONCURRENT))) == {(b"200", len(LARGE.partition(b"\r\n\r\n")[2]))}
                peak = max(peak, rss_bytes(pid))
        # Everything answered is released: pooled connections, dropped ones, the frozen heap.
        deadline = time.monotonic() + 5
        while (after := rss_bytes(pid)) >= baseline + 32 * MIB and time.monotonic() < deadline:
            time.sleep(0.1)
        summary = f"RSS baseline {baseline / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, after {after / MIB:.0f} MiB"
        print(summary)
        assert after < baseline + 32 * MIB, summary
