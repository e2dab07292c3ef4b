"""An upstream that writes exact bytes: an asyncio server in a thread of the test process, on loopback.

Each test gives a handler `async def handler(conn: RawConnection)` that reads requests and writes
whatever bytes the case needs (a close-delimited body, trailers, a 1xx, an extra response, nothing).
Every request head it read is recorded, with the number of the connection it came on.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from tests.support import free_port


@dataclass
class SeenRequest:
    connection: int
    head: bytes
    body: bytes

    @property
    def request_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None


@dataclass
class RawConnection:
    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    seen: list[SeenRequest]
    served: int = 0  # requests answered on this connection so far

    async def read_request(self, with_body: bool = True) -> SeenRequest | None:
        """The next request's head (and its Content-Length body unless `with_body` is false); None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request = SeenRequest(self.number, head, b"")
        length = request.header(b"content-length")
        if with_body and length:
            request.body = await self.reader.readexactly(int(length))
        self.seen.append(request)
        return request

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


def response(status: int = 200, body: bytes = b'{"result":[],"status":"ok","time":0}', headers: tuple = ()) -> bytes:
    """A complete HTTP/1.1 response with Content-Length."""
    lines = [f"HTTP/1.1 {status} X".encode(), b"content-type: application/json", *headers, b"content-length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def keep_alive_json(conn: RawConnection) -> None:
    """Answer every request on the connection with a small JSON body."""
    while await conn.read_request() is not None:
        await conn.write(response())
        conn.served += 1


class RawUpstream:
    def __init__(self, handler):
        self.handler = handler
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[SeenRequest] = []
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        conn = RawConnection(self.connections, reader, writer, self.seen)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> "RawUpstream":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=1 << 20), self._loop
        ).result(5)
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
