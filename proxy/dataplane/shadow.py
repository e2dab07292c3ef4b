"""Shadow reads: a sample of a route's split searches also goes to the other colour, off the client's
path, and the two answers are compared.

One `ShadowSender` serves both faces: sampling, `max_inflight`, the counts, the fit check and the
scoring are here; what differs per protocol (the request's raw vectors, reading an answer's ranked
ids, sending the other colour its own form of the request) is a `ShadowRead`: `RestShadowRead` here,
the gRPC face's own beside it.

The REST data path calls `after_read` once the client has its answer (the gRPC face asks `sampled`
and `launch`es when its call has ended). Unless the read is sampled that costs a few attribute reads
and one random draw: no parsing. A sampled read becomes a background task (never awaited by the
request) that sends the same request (same method, query string or metadata, the client's own
forwarded headers, collection names for the other colour, and on an `embed` route the other colour's
own embedding of its text) to the other colour's physical collection, reads both answers' point ids
and scores them (`routing.overlap`).

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
from typing import Hashable, Protocol

from proxy.metrics import Metrics
from proxy.dataplane.request import Request
from proxy.dataplane.upstream import UpstreamClient, UpstreamFailure, UpstreamResponse
from proxy.dataplane.upstream_form import UpstreamForms
from routing.operations import SEARCH_OPERATIONS
from routing.overlap import UnreadableResult, overlap_at_k, rank_biased_overlap, ranked_ids_from_body
from routing.vector_sizes import fits, raw_vectors, vector_sizes
from routing.table import BLUE, GREEN, CompiledRoute, quote_segment

log = logging.getLogger("bluegreen.shadow")

COMPARED, SKIPPED, DROPPED, ERROR = "compared", "skipped", "dropped", "error"
SIZES_TTL_SECONDS = 30.0  # how long a collection's vector sizes are trusted (a layout change recreates it)
SIZES_RETRY_SECONDS = 5.0  # after the collection info could not be read


class PairObserver(Protocol):
    """Sees every compared pair (the rollout guard listens here)."""

    def observe_pair(self, route: str, overlaps: list[float], green_empty: bool | None, blue_empty: bool | None) -> None: ...


class ShadowFailed(Exception):
    """The other colour gave nothing to compare: no answer, an error status, or not a search result."""


class ShadowRead(Protocol):
    """One protocol's sampled read, as the shared bookkeeping asks of it: the request's raw vectors, the
    answered colour's ranked ids, and the other colour's (sent its own form of the request)."""

    route: CompiledRoute
    operation: str
    answered_seconds: float  # the answered colour's upstream exchange, send to answer

    def may_hold_raw_vectors(self) -> bool:
        """Cheap; False spares reading the collections' vector sizes."""

    def raw_vectors(self) -> list[tuple[str, int]]:
        """(vector name, length) of each raw vector in the client's request; ValueError when unreadable."""

    def answered_ids(self) -> list[list[Hashable]]:
        """The answered colour's point ids, best first, per sub-request; UnreadableResult when it holds none."""

    async def shadow_ids(self, colour: str) -> tuple[list[list[Hashable]], float]:
        """`colour`'s ids for its own form of the request and its upstream seconds; ShadowFailed."""


class ShadowSender:
    """The sampling, bounds, counting and scoring of shadow reads, for both faces (REST, gRPC)."""

    def __init__(self, upstream: UpstreamClient, metrics: Metrics, observer: PairObserver, forms: UpstreamForms):
        self.upstream = upstream
        self.metrics = metrics
        self.observer = observer
        self.forms = forms
        self._inflight: dict[str, int] = {}  # per route, both faces together
        self._tasks: set[asyncio.Task] = set()  # strong references until each finishes
        self._sizes: dict[str, tuple[float, asyncio.Task]] = {}  # collection -> (expires, fetch)
        self._histograms: dict[str, tuple] = {}  # metric children, resolved once per route
        self._counters: dict[tuple[str, str], object] = {}

    def after_read(self, request: Request, colour: str, forced: bool, outcome: UpstreamResponse | UpstreamFailure) -> None:
        """Hook for a split REST read the client has been answered; cheap unless sampled."""
        if not self.sampled(request.route, request.operation):
            return
        answered = isinstance(outcome, UpstreamResponse) and 200 <= outcome.status < 300
        self.launch(RestShadowRead(request, outcome, self.forms, self.upstream), colour, forced, answered)

    @staticmethod
    def sampled(route: CompiledRoute, operation: str) -> bool:
        """Whether this read of the route is to be shadowed (one random draw on a route with `shadow`)."""
        settings = route.settings.shadow
        return settings is not None and operation in SEARCH_OPERATIONS and random.random() < settings.sample

    def launch(self, read: ShadowRead, colour: str, forced: bool, answered: bool) -> None:
        """A sampled read whose client has its answer (`answered`: a successful one from `colour`):
        counted skipped or dropped, or shadowed by a background task."""
        route = read.route
        settings = route.settings.shadow
        if forced or not answered:
            # A forced colour's request may be made for that colour only (another embedding model).
            self._count(route.name, SKIPPED)
            return
        inflight = self._inflight.get(route.name, 0)
        if inflight >= settings.max_inflight:
            self._count(route.name, DROPPED)
            return
        self._inflight[route.name] = inflight + 1
        task = asyncio.get_running_loop().create_task(self._shadow(read, colour, settings.k))
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

    async def _shadow(self, read: ShadowRead, colour: str, k: int) -> None:
        route = read.route
        try:
            result = await self._compare(read, colour, k)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a shadow must never take anything else down
            log.exception("shadow of a %s read on route %s failed", read.operation, route.name)
            result = ERROR
        self._count(route.name, result)

    async def _compare(self, read: ShadowRead, colour: str, k: int) -> str:
        route = read.route
        other = BLUE if colour == GREEN else GREEN
        if read.may_hold_raw_vectors() and not await self._fits(read, route.collection(colour), route.collection(other)):
            return SKIPPED
        try:
            answered = read.answered_ids()
            shadowed, seconds = await read.shadow_ids(other)
        except (UnreadableResult, ShadowFailed) as exc:
            log.debug("shadow of route %s on %s: %s", route.name, route.collection(other), exc)
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
        blue_s, green_s = (read.answered_seconds, seconds) if colour == BLUE else (seconds, read.answered_seconds)
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

    async def _fits(self, read: ShadowRead, answered: str, other: str) -> bool:
        """False only when a raw vector is known not to fit the `other` collection."""
        sizes = await self._vector_sizes(other)
        if sizes is None or sizes == await self._vector_sizes(answered):
            return True  # unknown; or the same sizes as the colour that just accepted the request
        try:
            vectors = read.raw_vectors()
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


class RestShadowRead:
    """A sampled REST read: the other colour gets its own form of the request (UpstreamForms)."""

    __slots__ = ("request", "outcome", "forms", "upstream", "route", "operation", "answered_seconds")

    def __init__(self, request: Request, outcome: UpstreamResponse | UpstreamFailure, forms: UpstreamForms, upstream: UpstreamClient):
        self.request, self.outcome, self.forms, self.upstream = request, outcome, forms, upstream
        self.route, self.operation, self.answered_seconds = request.route, request.operation, request.upstream_seconds

    def _body(self) -> bytes:
        request = self.request
        return request.plain_body if request.plain_body is not None else request.body  # Content-Encoding undone

    def may_hold_raw_vectors(self) -> bool:
        return b"[" in self._body()  # no list at all, so no raw vector

    def raw_vectors(self) -> list[tuple[str, int]]:
        return raw_vectors(self.operation, json.loads(self._body()))

    def answered_ids(self) -> list[list[Hashable]]:
        outcome = self.outcome
        return ranked_ids_from_body(self.operation, outcome.body, outcome.header(b"content-encoding"))

    async def shadow_ids(self, colour: str) -> tuple[list[list[Hashable]], float]:
        request = self.request
        try:
            path, body, headers = await self.forms.form(request, colour)  # embeds text with that colour's model
            target = path + b"?" + request.query if request.query else path
            sent = time.perf_counter()
            shadow = await self.upstream.request(request.method, target, headers, body)
        except UpstreamFailure as failure:
            raise ShadowFailed(f"no answer: {failure.detail}") from None
        seconds = time.perf_counter() - sent
        if not 200 <= shadow.status < 300:
            raise ShadowFailed(f"answered {shadow.status}")
        try:
            return ranked_ids_from_body(self.operation, shadow.body, shadow.header(b"content-encoding")), seconds
        except UnreadableResult as exc:
            raise ShadowFailed(str(exc)) from None


def _empty(lists: list[list]) -> bool | None:
    """No points in any sub-answer (as the guard's empty rule counts); None for a batch of nothing."""
    return all(not ids for ids in lists) if lists else None
