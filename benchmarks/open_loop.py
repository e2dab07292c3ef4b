"""Open-loop load: requests are sent at a fixed rate whatever the server does, and each latency
is measured from the time the request was *scheduled*, so a stall shows up in every request it
delays (no coordinated omission). wrk cannot do this and wrk2 is not packaged in Debian.

Run as a child process (its CPU stays out of the harness's):
    python -m benchmarks.open_loop --port N --rate 2000 --seconds 10 --requests FILE
FILE is JSON {"paths": [...], "bodies": [...]}; prints one JSON result line.

The event loop's timers tick in milliseconds, so a send may start up to ~1 ms after its scheduled
time (times are measured with perf_counter, not the loop's millisecond clock); `generator_lag_ms`
reports that floor. It is the same for every target, so differences
between targets are unaffected.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time

import uvloop

REQUEST_TIMEOUT = 5.0


class Connection:
    """One keep-alive HTTP/1.1 connection, (re)opened on first use."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> int:
        """Send one request, read the whole response; its status."""
        await self.open()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, length, chunked, closing = _parse_head(head)
        if chunked:
            await _read_chunked(self.reader)
        elif length is not None:
            await self.reader.readexactly(length)
        else:
            await self.reader.read()  # delimited by the connection's end
            closing = True
        if closing:
            self.close()
        return status


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, closing = None, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and value == "close":
            closing = True
    return status, length, chunked, closing


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are expected
            return
        await reader.readexactly(size + 2)


def _percentile(ordered: list[float], percent: float) -> float | None:
    if not ordered:
        return None
    rank = math.ceil(percent / 100 * len(ordered)) - 1  # nearest rank
    return ordered[max(0, min(len(ordered) - 1, rank))]


def _summary_ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    figures = {f"p{p:g}": _percentile(ordered, p) for p in (50, 90, 99, 99.9)}
    figures["mean"] = sum(ordered) / len(ordered) if ordered else None
    figures["max"] = ordered[-1] if ordered else None
    return {k: (round(v * 1000, 3) if v is not None else None) for k, v in figures.items()}


async def run(host: str, port: int, rate: float, seconds: float, connections: int, paths: list[str], bodies: list[bytes]) -> dict:
    clock = time.perf_counter
    pool: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()  # LIFO: reuse the warmest connection
    opened = [Connection(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in opened))
    for connection in opened:
        pool.put_nowait(connection)

    prefix = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
    latencies: list[float] = []
    lags: list[float] = []
    failed = {"status": 0, "socket": 0, "timeout": 0}

    async def one(index: int, scheduled: float) -> None:
        body = bodies[index % len(bodies)]
        request = (
            f"POST {paths[index % len(paths)]} HTTP/1.1\r\n".encode() + prefix
            + f"x-user-id: user-{index}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        connection = await pool.get()
        try:
            status = await asyncio.wait_for(connection.exchange(request), REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            connection.close()
            failed["timeout"] += 1
            return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            connection.close()
            failed["socket"] += 1
            return
        finally:
            pool.put_nowait(connection)
        latencies.append(clock() - scheduled)
        if not 200 <= status < 300:
            failed["status"] += 1

    total = int(rate * seconds)
    interval = 1.0 / rate
    tasks: set[asyncio.Task] = set()
    start = clock() + 0.05
    for index in range(total):
        scheduled = start + index * interval
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(clock() - scheduled)
        task = asyncio.create_task(one(index, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, unfinished = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
        for task in unfinished:
            task.cancel()
        failed["timeout"] += len(unfinished)
    elapsed = clock() - start
    for connection in opened:
        connection.close()

    return {
        "tool": "open_loop",
        "rate_rps": rate,
        "connections": connections,
        "seconds": round(elapsed, 3),
        "scheduled": total,
        "requests": len(latencies),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "failed": failed,
        "failed_total": sum(failed.values()),
        "latency_ms": _summary_ms(latencies),
        "generator_lag_ms": {k: v for k, v in _summary_ms(lags).items() if k in ("p50", "p99", "max")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", required=True, help='JSON file {"paths": [...], "bodies": [...]}')
    args = parser.parse_args(argv)
    with open(args.requests) as handle:
        spec = json.load(handle)
    bodies = [body.encode() for body in spec["bodies"]]
    result = uvloop.run(run(args.host, args.port, args.rate, args.seconds, args.connections, spec["paths"], bodies))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
