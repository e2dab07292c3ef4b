"""Preflight I/O: ask the upstream about a route's blue and green; the judgement is pure
(`routing.preflight`)."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from routing.config import Preflight, Route
from routing.preflight import PreflightResult, evaluate_preflight
from routing.table import quote_segment

log = logging.getLogger("bluegreen.preflight")

# (method, path, body) -> (status, parsed JSON or None); raises UpstreamFailure when no answer came.
FetchJson = Callable[[str, str, bytes], Awaitable[tuple[int, dict | None]]]


async def run_preflight(fetch: FetchJson, route: Route, settings: Preflight | None = None) -> PreflightResult:
    """Ask the upstream about blue and green, then judge parity (pure)."""

    async def info(name: str) -> dict | None:
        status, document = await fetch("GET", f"/collections/{quote_segment(name)}", b"")
        return document.get("result") if status == 200 and document else None

    async def count(name: str) -> int | None:
        status, document = await fetch("POST", f"/collections/{quote_segment(name)}/points/count", b'{"exact":true}')
        if status != 200 or not document:
            return None
        return (document.get("result") or {}).get("count")

    blue_info, green_info, blue_count, green_count = await asyncio.gather(
        info(route.blue), info(route.green), count(route.blue), count(route.green)
    )
    return evaluate_preflight(settings or route.preflight or Preflight(), blue_info, green_info, blue_count, green_count)


class PreflightChecks:
    """At most one check in flight per route; each result goes to `on_result(name, route, result)`."""

    def __init__(self, fetch: FetchJson, on_result: Callable[[str, Route, PreflightResult], None]):
        self.fetch = fetch
        self.on_result = on_result
        self._running: dict[str, asyncio.Task] = {}

    def start(self, name: str, route: Route) -> None:
        if name not in self._running:
            self._running[name] = asyncio.get_running_loop().create_task(self._check(name, route))

    def cancel_all(self) -> None:
        for task in self._running.values():
            task.cancel()

    async def _check(self, name: str, route: Route) -> None:
        try:
            result = await run_preflight(self.fetch, route)
        except Exception as exc:  # noqa: BLE001 - an unreachable upstream is a failed check, retried later
            log.warning("preflight of route %s could not ask the upstream: %s", name, exc)
            result = evaluate_preflight(route.preflight or Preflight(), None, None, None, None)
        finally:
            self._running.pop(name, None)
        self.on_result(name, route, result)
