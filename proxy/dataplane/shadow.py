"""Shadow reads: a sample of a route's split searches also goes to the other colour, off the client's
path, and the two answers are compared.

The data path calls `after_read` once the client has its answer. Unless the read is sampled that
costs a few attribute reads and one random draw: no parsing. A sampled read becomes a background
task (never awaited by the request) that sends the same request (same method, query string, the
client's own forwarded headers, the body with collection names for the other colour, and on an
`embed` route the other colour's own embedding of its text) to the other colour's physical
collection, reads both answers' point ids and scores them (`routing.overlap`).

Every sampled read is counted once in `bluegreen_shadow_requests_total{route,result}`:
- `compared`: both answers read and scored;
- `skipped`: it could not be valid on the other colour (a forced colour, or a raw vector whose
  length is not that colour's size for the vector) or there was no successful answer to compare;
- `dropped`: `max_inflight` shadows of the route were already in flight;
- `error`: the shadow got no answer, a non-2xx answer, or an answer that is not a search result.

Shadow exchanges are not counted in `bluegreen_requests_total` and do not feed the guard's per-colour
windows: they feed its shadow-pair window (`observe_pair`: overlap rule, paired empty rule).
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Protocol

from proxy.metrics import Metrics
from proxy.dataplane.request import Request
from proxy.dataplane.upstream import UpstreamClient, UpstreamFailure, UpstreamResponse
from proxy.dataplane.upstream_form import UpstreamForms
from routing.operations import SEARCH_OPERATIONS
from routing.overlap import UnreadableResult, overlap_at_k, rank_biased_overlap, ranked_ids_from_body
from routing.vector_sizes import fits, raw_vectors, vector_sizes
from routing.table import BLUE, GREEN, quote_segment

log = logging.getLogger("bluegreen.shadow")

COMPARED, SKIPPED, DROPPED, ERROR = "compared", "skipped", "dropped", "error"
SIZES_TTL_SECONDS = 30.0  # how long a collection's vector sizes are trusted (a layout change recreates it)
SIZES_RETRY_SECONDS = 5.0  # after the collection info could not be read


class PairObserver(Protocol):
    """Sees every compared pair (the rollout guard listens here)."""

    def observe_pair(self, route: str, overlaps: list[float], green_empty: bool | None, blue_empty: bool | None) -> None: ...


class ShadowSender:
    def __init__(self, upstream: UpstreamClient, metrics: Metrics, observer: PairObserver, forms: UpstreamForms):
        self.upstream = upstream
        self.metrics = metrics
        self.observer = observer
        self.forms = forms
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()  # strong references until each finishes
        self._sizes: dict[str, tuple[float, asyncio.Task]] = {}  # collection -> (expires, fetch)
        self._histograms: dict[str, tuple] = {}  # metric children, resolved once per route
        self._counters: dict[tuple[str, str], object] = {}

    def after_read(self, request: Request, colour: str, forced: bool, outcome: UpstreamResponse | UpstreamFailure) -> None:
        """Hook for a split read the client has been answered; cheap unless sampled."""
        route = request.route
        settings = route.settings.shadow
        if settings is None or request.operation not in SEARCH_OPERATIONS or random.random() >= settings.sample:
            return
        if forced or not isinstance(outcome, UpstreamResponse) or not 200 <= outcome.status < 300:
            # A forced colour's body may be made for that colour only (another embedding model).
            self._count(route.name, SKIPPED)
            return
        inflight = self._inflight.get(route.name, 0)
        if inflight >= settings.max_inflight:
            self._count(route.name, DROPPED)
            return
        self._inflight[route.name] = inflight + 1
        task = asyncio.get_running_loop().create_task(self._shadow(request, colour, outcome, settings.k))
        self._tasks.add(task)
        task.add_done_callback(lambda done, name=route.name: self._finished(done, name))

    def _finished(self, task: asyncio.Task, route: str) -> None:
        self._tasks.discard(task)
        self._inflight[route] -= 1

    async def close(self) -> None:
        """Cancel shadows still in flight (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _count(self, route: str, result: str) -> None:
        counter = self._counters.get((route, result))
        if counter is None:
            counter = self._counters[(route, result)] = self.metrics.shadow_requests.labels(route, result)
        counter.inc()

    async def _shadow(self, request: Request, colour: str, primary: UpstreamResponse, k: int) -> None:
        route = request.route
        try:
            result = await self._compare(request, colour, primary, k)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a shadow must never take anything else down
            log.exception("shadow of a %s read on route %s failed", request.operation, route.name)
            result = ERROR
        self._count(route.name, result)

    async def _compare(self, request: Request, colour: str, primary: UpstreamResponse, k: int) -> str:
        route = request.route
        other = BLUE if colour == GREEN else GREEN
        if not await self._fits(request, route.collection(colour), route.collection(other)):
            return SKIPPED
        try:
            path, body, headers = await self.forms.form(request, other)  # embeds text with the other model
            target = path + b"?" + request.query if request.query else path
            sent = time.perf_counter()
            shadow = await self.upstream.request(request.method, target, headers, body)
        except UpstreamFailure as failure:
            log.debug("shadow on %s: no answer: %s", route.collection(other), failure.detail)
            return ERROR
        seconds = time.perf_counter() - sent
        if not 200 <= shadow.status < 300:
            log.debug("shadow on %s answered %d", route.collection(other), shadow.status)
            return ERROR
        try:
            answered = ranked_ids_from_body(request.operation, primary.body, primary.header(b"content-encoding"))
            shadowed = ranked_ids_from_body(request.operation, shadow.body, shadow.header(b"content-encoding"))
        except UnreadableResult as exc:
            log.debug("shadow on route %s: %s", route.name, exc)
            return ERROR
        if len(answered) != len(shadowed):
            return ERROR
        blue_ids, green_ids = (answered, shadowed) if colour == BLUE else (shadowed, answered)
        overlap_series, rbo_series, ratio_series = self._series(route.name)
        overlaps = []
        for blue, green in zip(blue_ids, green_ids):
            overlap = overlap_at_k(blue, green, k)
            if overlap is None:
                continue  # both empty: nothing to rank
            overlaps.append(overlap)
            overlap_series.observe(overlap)
            rbo_series.observe(rank_biased_overlap(blue, green, k))
        blue_s, green_s = (request.upstream_seconds, seconds) if colour == BLUE else (seconds, request.upstream_seconds)
        if blue_s > 0:
            ratio_series.observe(green_s / blue_s)
        self.observer.observe_pair(route.name, overlaps, _empty(green_ids), _empty(blue_ids))
        return COMPARED

    def _series(self, route: str) -> tuple:
        """The route's histogram children, resolved once."""
        found = self._histograms.get(route)
        if found is None:
            metrics = self.metrics
            found = self._histograms[route] = (
                metrics.shadow_overlap.labels(route), metrics.shadow_rbo.labels(route), metrics.shadow_latency_ratio.labels(route),
            )
        return found

    async def _fits(self, request: Request, answered: str, other: str) -> bool:
        """False only when a raw vector is known not to fit the `other` collection."""
        body = request.plain_body if request.plain_body is not None else request.body  # Content-Encoding undone
        if b"[" not in body:
            return True  # no list at all, so no raw vector
        sizes = await self._vector_sizes(other)
        if sizes is None or sizes == await self._vector_sizes(answered):
            return True  # unknown; or the same sizes as the colour that just accepted the request
        try:
            vectors = raw_vectors(request.operation, json.loads(body))
        except ValueError:
            return True
        return fits(vectors, sizes)

    async def _vector_sizes(self, collection: str) -> dict[str, int] | None:
        """The collection's vector sizes, read once per SIZES_TTL_SECONDS (one fetch shared by all)."""
        now = time.monotonic()
        cached = self._sizes.get(collection)
        if cached is None or now >= cached[0]:
            fetch = asyncio.get_running_loop().create_task(self._fetch_sizes(collection))
            cached = self._sizes[collection] = (now + SIZES_TTL_SECONDS, fetch)
        sizes = cached[1].result() if cached[1].done() else await asyncio.shield(cached[1])
        if sizes is None and self._sizes.get(collection) is cached:
            self._sizes[collection] = (min(cached[0], now + SIZES_RETRY_SECONDS), cached[1])
        return sizes

    async def _fetch_sizes(self, collection: str) -> dict[str, int] | None:
        try:
            status, document = await self.upstream.fetch_json("GET", f"/collections/{quote_segment(collection)}", b"")
        except UpstreamFailure:
            return None
        return vector_sizes(document.get("result")) if status == 200 and document else None


def _empty(lists: list[list]) -> bool | None:
    """No points in any sub-answer (as the guard's empty rule counts); None for a batch of nothing."""
    return all(not ids for ids in lists) if lists else None
