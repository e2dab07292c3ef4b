"""The read bodies the proxy must parse (scoped lookups, collection names to rewrite, alias actions),
parsed off the event loop when they are large.

Python's json holds the GIL for a whole parse, so a thread does not help: a 17 MiB query body with
one backslash (which may hide an escaped `lookup_from`) stalled the event loop 0.77 s parsed inline
and 1.0 s parsed in a thread (measured). A body past LARGE_BODY_BYTES is therefore parsed in one
worker process, started on first use; smaller ones (every ordinary query) inline, where a process
hop would cost more than the parse. Every function here raises UnreadableBody for a body that must
be read and cannot be: the caller refuses it (fail closed).
"""
from __future__ import annotations

import asyncio
import os
import pickle
import struct
import sys
from typing import Callable, Mapping

from routing.aliases import alias_refusal
from routing.reserved import alias_action_names
from routing.rewrite import UnreadableBody, collections_named, read_json, rewrite_body_collections

LARGE_BODY_BYTES = 256 * 1024  # about 3 ms of parsing: the most a body may hold the event loop
_LENGTH = struct.Struct("!Q")


class ReadBodies:
    def __init__(self, large: int = LARGE_BODY_BYTES):
        self.large = large
        self._worker: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()  # one body at a time in the worker

    async def collections_named(self, body: bytes) -> list[str]:
        """The collection names a read body names (its lookups)."""
        return await self._run(collections_named, body)

    async def rewrite(self, body: bytes, physical: Mapping[str, str]) -> bytes | None:
        """The body with each named collection that `physical` maps replaced; None when none is."""
        return await self._run(_rewrite_with, body, dict(physical))

    async def alias_names(self, body: bytes) -> list[str]:
        """Every collection and alias name an alias change names."""
        return await self._run(_alias_names_of, body)

    async def alias_refusal(self, body: bytes, routes: Mapping[str, tuple[str, str]]) -> str | None:
        """The 400 message for alias actions naming a route (`routes`: name -> (blue, green))."""
        return await self._run(_alias_refusal_of, body, dict(routes))

    async def _run(self, function: Callable, *args):
        if len(args[0]) <= self.large:
            return function(*args)
        call = pickle.dumps((function.__name__, args), protocol=pickle.HIGHEST_PROTOCOL)
        async with self._lock:
            worker = await self._started()
            try:
                worker.stdin.write(_LENGTH.pack(len(call)) + call)
                await worker.stdin.drain()
                size = _LENGTH.unpack(await worker.stdout.readexactly(_LENGTH.size))[0]
                ok, result = pickle.loads(await worker.stdout.readexactly(size))
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.close()  # a new worker for the next large body
                raise RuntimeError(f"the read-body worker failed: {exc}") from None
        if not ok:
            raise UnreadableBody(result)
        return result

    async def _started(self) -> asyncio.subprocess.Process:
        """The worker: a fresh interpreter (nothing of this process's loop, sockets or threads) that
        exits when its stdin closes, with this process."""
        if self._worker is None or self._worker.returncode is not None:
            self._worker = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from proxy.dataplane.read_bodies import serve; serve()",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
        return self._worker

    def close(self) -> None:
        if self._worker is not None and self._worker.returncode is None:
            self._worker.kill()
        self._worker = None


def _rewrite_with(body: bytes, physical: dict[str, str]) -> bytes | None:
    return rewrite_body_collections(body, physical.get)


class _Route:
    """What alias_refusal reads of a route (a CompiledRoute need not cross to the worker)."""

    __slots__ = ("blue", "green")

    def __init__(self, blue: str, green: str):
        self.blue, self.green = blue, green


def _alias_refusal_of(body: bytes, routes: dict[str, tuple[str, str]]) -> str | None:
    return alias_refusal(read_json(body), {name: _Route(*colours) for name, colours in routes.items()})


def _alias_names_of(body: bytes) -> list[str]:
    return alias_action_names(read_json(body))


_FUNCTIONS = {function.__name__: function for function in (collections_named, _rewrite_with, _alias_refusal_of, _alias_names_of)}


def serve() -> None:
    """The worker's loop: a call in, (ok, result or UnreadableBody's message) out, until stdin closes."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while header := source.read(_LENGTH.size):
        name, args = pickle.loads(source.read(_LENGTH.unpack(header)[0]))
        try:
            answer = (True, _FUNCTIONS[name](*args))
        except UnreadableBody as exc:
            answer = (False, str(exc))
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(_LENGTH.pack(len(data)) + data)
        sink.flush()
