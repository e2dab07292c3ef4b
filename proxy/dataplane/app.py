"""The data path: a pure-ASGI app that speaks the Qdrant REST API and forwards to the upstream.

request -> route lookup on the current snapshot -> colour -> forward -> record.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from proxy.dataplane.admission import CONTENT_ENCODING, Admission, duplicated_header
from proxy.dataplane.body import BodyTooLarge, ClientGone, Receive, read_body
from proxy.dataplane.inference import EmbedFailure, TextInference
from proxy.dataplane.live import LiveConfig
from proxy.dataplane.read_bodies import ReadBodies
from proxy.dataplane.request import ORIGIN, Observer, Request, first_values
from proxy.dataplane.responses import (
    JSON, ResponseBroken, Send, colour_headers, cors_headers, exposing_colour_headers, ok_body, respond, respond_error,
)
from proxy.dataplane.shadow import PairObserver, ShadowSender
from proxy.dataplane.upstream import UpstreamClient, UpstreamFailure, UpstreamResponse, without_client_credentials
from proxy.dataplane.upstream_form import UpstreamForms
from proxy.metrics import NO_COLOUR, UNROUTED, Metrics
from routing.aliases import ALIASES_PATH
from routing.operations import CORS_PREFLIGHT_OPERATION, SEARCH_OPERATIONS, UNROUTED_OPERATION, Kind, classify, repeatable
from routing.results import readable_accept_encoding
from routing.rewrite import UnreadableBody
from routing.table import BLUE, GREEN, CompiledRoute, canonical_path, split_collection_path

log = logging.getLogger("bluegreen.proxy")

FAILOVER_SHARE = 0.1  # of upstream.timeout: the least time left in which a failed green read is retried on blue
_COLOUR_QUESTION = b"/bluegreen/routes/"  # + {route}/color: outside Qdrant's API, so never forwarded


class ProxyApp:
    def __init__(
        self, live: LiveConfig, upstream: UpstreamClient, metrics: Metrics, observer: Observer | PairObserver,
        inference: TextInference | None = None,
    ):
        self.live = live
        self.upstream = upstream
        self.metrics = metrics
        self.observer = observer
        self.in_flight = 0
        self.cut_off = 0  # requests answered 503 at shutdown, their grace time over
        self.read_bodies = ReadBodies()
        self.admission = Admission(upstream, self.read_bodies)
        self.forms = UpstreamForms(inference, self.read_bodies)
        self.inference = inference  # routes with `embed`
        self.shadow = ShadowSender(upstream, metrics, observer, self.forms)

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        """The head checked, the body read, a request slot taken, dispatched; every refusal in Qdrant's
        envelope, and nothing one request does stops the process."""
        if scope["type"] != "http":
            return  # lifespan is managed by the server; websockets are not part of Qdrant's API
        started = time.perf_counter()
        try:
            snapshot = self.live.snapshot  # the one read: config, table and effective split together
            headers = scope["headers"]
            client_headers = dict(reversed(headers))  # first_values, inline on the hot path
            origin = client_headers.get(ORIGIN)
            if len(client_headers) != len(headers):
                duplicate = duplicated_header(headers)
                if duplicate is not None:
                    message = f"Wrong input: the `{duplicate}` header is sent more than once; send it once"
                    await respond_error(send, 400, message, started, origin)
                    return
            request = Request(
                scope["method"], scope.get("raw_path") or scope["path"].encode(), scope["query_string"], client_headers,
                self.upstream.forward_headers(headers), b"", started, snapshot, 0.0,
            )
            request.canonical = canonical_path(request.path)
            if snapshot.clients is not None and request.method != "OPTIONS":
                # On the head, before the body: an unknown client sends nothing the proxy waits for.
                refusal = self.admission.authenticate(request)
                if refusal is not None:
                    await respond_error(send, 401, refusal, started, origin)
                    return
            limits = snapshot.config.limits
            request.body = await read_body(scope, receive, limits.max_body_bytes)
            # A slot only once the body is in: clients still sending (limits.body_timeout) hold none.
            if self.in_flight >= limits.max_concurrency:
                await self._shed(send, limits.max_concurrency, started, origin)
                return
            self.in_flight += 1
            try:
                request.deadline = self.upstream.deadline()
                await self._dispatch(request, send)
            except UnreadableBody as exc:  # a read body to rewrite, raised before anything was sent
                await respond_error(send, 400, f"Wrong input: {exc}", started, origin)
            finally:
                self.in_flight -= 1
        except ClientGone:
            return
        except BodyTooLarge as exc:
            message = f"Payload too large: request body exceeds {exc.limit} bytes (limits.max_body_bytes)"
            await respond_error(send, 413, message, started, _origin(scope))
        except Exception as exc:  # noqa: BLE001 - the process must keep serving whatever one request does
            await _internal_error(scope, send, exc, started)
        except asyncio.CancelledError:  # only the server cancels a request: its shutdown grace time ran out
            await self._cut_off(send, started, _origin(scope))

    async def _cut_off(self, send: Send, started: float, origin: bytes | None) -> None:
        asyncio.current_task().uncancel()
        self.cut_off += 1
        grace = self.live.snapshot.config.shutdown_grace_period
        message = f"Service unavailable: bluegreen-proxy shut down before the request finished (shutdown.grace_period {grace:g}s)"
        with contextlib.suppress(ResponseBroken):  # a response already begun cannot be replaced
            await respond_error(send, 503, message, started, origin)

    async def _shed(self, send: Send, limit: int, started: float, origin: bytes | None) -> None:
        series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, UNROUTED_OPERATION)
        series.upstream_error("overloaded")
        series.observe(503, time.perf_counter() - started)
        message = f"Service overloaded: {limit} requests in progress (limits.max_concurrency)"
        await respond_error(send, 503, message, started, origin)

    # 63 lines: the one place a request's kind picks read, write, info or refusal; split, it would hide that.
    async def _dispatch(self, request: Request, send: Send) -> None:
        snapshot, started = request.snapshot, request.started
        if request.method == "OPTIONS":
            await self._cors_preflight(request, send)
            return
        located = split_collection_path(request.canonical)
        route = snapshot.table.lookup(located[0]) if located else None
        if located is None and request.canonical.startswith(_COLOUR_QUESTION):
            await self._answer_colour(request, send)
            return
        if located is not None:
            request.operation, request.kind = classify(request.method, located[1])
        request.route = route
        if (
            snapshot.clients is not None or request.canonical == ALIASES_PATH or snapshot.table.reserved is not None
            or (route is not None and CONTENT_ENCODING in request.client_headers)
        ):  # the plain path skips all of this
            refusal = await self.admission.screen(request, located)
            if refusal is not None:
                await respond_error(send, refusal[0], refusal[1], started, request.origin)
                return
        if route is None:
            request.repeatable = request.method in ("GET", "HEAD")
            series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, request.operation)
            outcome = await self._exchange(request, request.path, request.body, series)
            await _send_outcome(send, outcome, (), request)
            return

        inspectable = request.body if CONTENT_ENCODING not in request.client_headers else None
        request.repeatable = repeatable(request.method, request.operation, request.kind, inspectable)
        kind = request.kind
        pinned = None
        if route.settings.embed is not None and self.inference is not None:
            pinned = self.inference.prepare(request)
        elif snapshot.vector_sizes:  # empty unless some route's preflight found different sizes
            sizes = snapshot.vector_sizes.get(route.name)
            if sizes is not None:
                pinned = sizes.pin(request.operation, request.plain_body if request.plain_body is not None else request.body)
        if kind is Kind.READ:
            if (route.settings.guard is not None or route.settings.shadow is not None) and request.operation in SEARCH_OPERATIONS:
                request.headers = _readable_by_the_guard(request.headers)
            forced = route.forced_colour(request.client_headers)
            if forced is None and pinned is not None:
                forced = pinned  # a raw vector only this colour's collection takes
                self.metrics.pinned.labels(route.name, pinned).inc()
            colour = forced or route.split_colour(request.snapshot.threshold(route), request.client_headers, request.body)
            await self._read(request, colour, forced is not None, send)
        elif kind is Kind.WRITE:
            policy = route.settings.writes
            if pinned is not None:
                policy = pinned
                self.metrics.pinned.labels(route.name, pinned).inc()
            if policy == "both":
                await self._write_both(request, send)
            else:
                outcome = await self._routed(request, policy)
                await _send_outcome(send, outcome, colour_headers(policy, route.collection(policy)), request)
        elif kind is Kind.INFO:
            colour = route.forced_colour(request.client_headers) or BLUE  # a new model's client reads green's vector size
            outcome = await self._routed(request, colour)
            await _send_outcome(send, outcome, colour_headers(colour, route.collection(colour)), request)
        else:
            await respond_error(send, 400, _refusal(route, request.operation), started, request.origin)

    async def _cors_preflight(self, request: Request, send: Send) -> None:
        """OPTIONS: answered by the upstream (blue for a routed collection), its answer unchanged. A
        browser sends no credential on a preflight, so none is checked; with `clients`, none is sent."""
        if request.snapshot.clients is not None:
            request.headers = without_client_credentials(request.headers)
        located = split_collection_path(request.canonical)
        route = request.snapshot.table.lookup(located[0]) if located else None
        if route is None:
            series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, UNROUTED_OPERATION)
            outcome = await self._exchange(request, request.path, request.body, series)
        else:
            request.route, request.operation = route, CORS_PREFLIGHT_OPERATION
            outcome = await self._routed(request, BLUE)
        await _send_outcome(send, outcome, (), request)

    async def _read(self, request: Request, colour: str, forced: bool, send: Send) -> None:
        route = request.route
        outcome = await self._routed(request, colour)
        failed_over = (
            colour == GREEN and not forced and route.settings.failover and _failed(outcome) and not _overloaded(outcome)
            and self._time_to_fail_over(request)
        )
        if failed_over:
            # The client never sees a green failure it can be spared: answer from blue. Never for a
            # forced colour: its body may be made for that colour only (a new embedding model).
            self.metrics.failovers.labels(route.name).inc()
            colour = BLUE
            outcome = await self._routed(request, BLUE, since=time.perf_counter())
        await _send_outcome(send, outcome, colour_headers(colour, route.collection(colour)), request)
        if route.settings.shadow is not None and not failed_over:  # both colours were just asked
            self.shadow.after_read(request, colour, forced, outcome)

    def _time_to_fail_over(self, request: Request) -> bool:
        """Whether blue can still be asked within the request's deadline: at least a tenth of
        upstream.timeout left. Else (green took the time) the client gets green's failure, charged to
        green, and blue is not asked with no time to answer."""
        return request.deadline - time.monotonic() >= self.upstream.settings.timeout * FAILOVER_SHARE

    async def _answer_colour(self, request: Request, send: Send) -> None:
        """`GET /bluegreen/routes/{route}/color`: the colour the split gives this request's key now, for
        clients that must build a colour-specific query (a new embedding model) before sending it."""
        started = request.started
        segment, _, rest = request.canonical[len(_COLOUR_QUESTION):].partition(b"/")
        route = request.snapshot.table.lookup(segment) if rest == b"color" else None
        request.route, request.operation = route, "color"
        refusal = await self.admission.admit(request, (segment, "") if route is not None else None)
        if refusal is not None:
            await respond_error(send, refusal[0], refusal[1], started, request.origin)
            return
        if route is None:
            message = f"Not found: `{request.path.decode('latin-1')}`: ask GET /bluegreen/routes/{{route}}/color for a configured route"
            await respond_error(send, 404, message, started, request.origin)
            return
        if request.method != "GET":
            await respond_error(send, 405, f"Method not allowed: {request.method}; use GET", started, request.origin)
            return
        if route.key(request.client_headers) is None:
            sources = ", ".join(h.decode("latin-1") for h in route.key_headers)
            message = f"Wrong input: send the route's key ({sources}): the colour is decided per key"
            await respond_error(send, 400, message, started, request.origin)
            return
        threshold = request.snapshot.threshold(route)
        colour = route.split_colour(threshold, request.client_headers, b"")
        collection = route.collection(colour)
        decision = {"route": route.name, "color": colour, "collection": collection, "effective_green_percent": threshold / 100}
        headers = [JSON, *colour_headers(colour, collection), *cors_headers(request.origin)]
        await respond(send, 200, headers, ok_body(decision, started))

    async def _write_both(self, request: Request, send: Send) -> None:
        """Sent to both at once; acknowledged only when both succeed, else the failing side's answer."""
        route = request.route
        blue, green = await asyncio.gather(self._routed(request, BLUE), self._routed(request, GREEN))
        if not _succeeded(blue):
            outcome, colour = blue, BLUE
        elif not _succeeded(green):
            outcome, colour = green, GREEN
        else:
            await _send_outcome(send, blue, colour_headers("both", f"{route.blue},{route.green}"), request)
            return
        await _send_outcome(send, outcome, colour_headers(colour, route.collection(colour)), request)

    async def _routed(self, request: Request, colour: str, since: float | None = None) -> UpstreamResponse | UpstreamFailure:
        """Send the request to `colour`'s physical collection; `since` starts the clock of a retry."""
        route = request.route
        series = self.metrics.series(route.name, colour, route.collection(colour), request.operation)
        started = request.started if since is None else since
        try:
            path, body, headers = await self.forms.form(request, colour)
        except EmbedFailure as failure:
            seconds = time.perf_counter() - started
            series.observe(504 if failure.kind == "timeout" else 502, seconds)
            self.observer.observe(route.name, colour, request.operation, None, seconds)
            return failure
        outcome = await self._exchange(request, path, body, series, started, headers)
        seconds = time.perf_counter() - started
        self.observer.observe(route.name, colour, request.operation, None if isinstance(outcome, UpstreamFailure) else outcome, seconds)
        return outcome

    async def _exchange(
        self, request: Request, path: bytes, body: bytes, series, started: float | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> UpstreamResponse | UpstreamFailure:
        started = request.started if started is None else started
        target = path + b"?" + request.query if request.query else path
        sent = time.perf_counter()
        try:
            response = await self.upstream.request(
                request.method, target, request.headers if headers is None else headers, body,
                request.deadline, request.repeatable,
            )
            request.upstream_seconds = time.perf_counter() - sent
        except UpstreamFailure as failure:
            series.upstream_error(failure.kind)
            series.observe(None, time.perf_counter() - started)
            return failure
        if response.status >= 500:
            series.upstream_error("5xx")
        series.observe(response.status, time.perf_counter() - started)
        return response


def _readable_by_the_guard(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The guard reads search results: ask the upstream only for codings it can decode (gzip and
    deflate, not br or zstd); the client gets one of the codings it accepted either way."""
    narrowed = []
    for name, value in headers:
        if name == b"accept-encoding":
            value = readable_accept_encoding(value)
            if value is None:
                continue
        narrowed.append((name, value))
    return narrowed


def _failed(outcome: UpstreamResponse | UpstreamFailure) -> bool:
    return isinstance(outcome, UpstreamFailure) or outcome.status >= 500


def _overloaded(outcome: UpstreamResponse | UpstreamFailure) -> bool:
    return isinstance(outcome, UpstreamFailure) and outcome.kind == "overloaded"


def _succeeded(outcome: UpstreamResponse | UpstreamFailure) -> bool:
    return isinstance(outcome, UpstreamResponse) and outcome.status < 300


def _refusal(route: CompiledRoute, operation: str) -> str:
    return (
        f"Wrong input: `{route.name}` is a logical collection routed by bluegreen-proxy "
        f"(blue: `{route.blue}`, green: `{route.green}`); `{operation}` on it is refused. "
        f"Address the physical collection `{route.blue}` or `{route.green}` directly "
        f"(at the upstream Qdrant where a physical name equals the logical one)."
    )


_FAILURE_STATUS = {"timeout": 504, "overloaded": 503}


async def _send_outcome(send: Send, outcome, extra_headers, request: Request) -> None:
    """The upstream's answer with `extra_headers` (the colour's), or the proxy's own for no answer."""
    origin = request.origin
    if isinstance(outcome, UpstreamFailure):
        status = _FAILURE_STATUS.get(outcome.kind, 502)
        await respond_error(send, status, outcome.detail, request.started, origin, extra_headers)
        return
    headers = outcome.headers + list(extra_headers)
    if origin is not None and extra_headers:
        headers = exposing_colour_headers(headers)
    await respond(send, outcome.status, headers, outcome.body, outcome.head_length)


def _origin(scope: dict) -> bytes | None:
    return first_values(scope["headers"]).get(ORIGIN)


async def _internal_error(scope: dict, send: Send, exc: Exception, started: float) -> None:
    """One log line (the traceback at debug level) and, when no response began, a 500 in the envelope;
    else the server closes the connection."""
    broken = isinstance(exc, ResponseBroken)
    cause = exc.__cause__ if broken else exc
    log.error("internal error handling %s %s: %s: %s", scope.get("method"), scope.get("path"), type(cause).__name__, cause)
    log.debug("traceback", exc_info=exc)
    if not broken:
        with contextlib.suppress(ResponseBroken):
            message = "Service internal error: bluegreen-proxy failed to handle the request"
            await respond_error(send, 500, message, started, _origin(scope))
