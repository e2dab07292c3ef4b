"""The data path: a pure-ASGI app that speaks the Qdrant REST API and forwards to the upstream.

request -> route lookup on the current snapshot -> colour -> forward -> record.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol
from urllib.parse import unquote_to_bytes

from proxy.dataplane.inference import EmbedFailure, TextInference
from proxy.metrics import NO_COLOUR, UNROUTED, Metrics
from proxy.dataplane.shadow import PairObserver, ShadowSender
from proxy.dataplane.live import LiveConfig, Snapshot
from proxy.dataplane.upstream import UpstreamClient, UpstreamFailure, UpstreamResponse, without_client_credentials
from routing.aliases import ALIASES_PATH, alias_refusal
from routing.clients import Unauthenticated, is_health_probe
from routing.documents import VectorsFound
from routing.operations import (
    CORS_PREFLIGHT_OPERATION, SEARCH_OPERATIONS, UNROUTED_OPERATION, Kind, classify, is_write, repeatable,
)
from routing.reserved import reserved_refusal
from routing.results import readable_accept_encoding
from routing.rewrite import (
    UndecodableBody, decode_request_body, may_name_collections, parse_read_body, referenced_collections,
    rewrite_body_collections,
)
from routing.table import BLUE, GREEN, CompiledRoute, canonical_path, rewrite_path, split_collection_path

log = logging.getLogger("bluegreen.proxy")

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

_JSON = (b"content-type", b"application/json")
_COLOUR_HEADER = b"x-bluegreen-color"
_COLLECTION_HEADER = b"x-bluegreen-collection"
_COLOUR_QUESTION = b"/bluegreen/routes/"  # + {route}/color: outside Qdrant's API, so never forwarded
_CONTENT_ENCODING = b"content-encoding"


class Observer(Protocol):
    """Sees every routed upstream exchange (the rollout guard listens here); `response` is None when
    none came."""

    def observe(self, route: str, colour: str, operation: str, response: UpstreamResponse | None, seconds: float) -> None: ...


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(limit)
        self.limit = limit


class ClientGone(Exception):
    pass


def error_body(message: str, started: float) -> bytes:
    """Qdrant's error envelope."""
    return json.dumps(
        {"status": {"error": message}, "time": round(time.perf_counter() - started, 6)}, separators=(",", ":")
    ).encode()


@dataclass(slots=True)
class Request:
    """One client request as it flows through the data path: read once, carried through every step."""

    method: str
    path: bytes  # the raw path as received (what an unrouted request forwards)
    query: bytes
    client_headers: dict[bytes, bytes]  # by lower-case name, for key and override lookups
    headers: list[tuple[bytes, bytes]]  # what goes upstream (hop-by-hop dropped)
    body: bytes
    started: float
    snapshot: Snapshot
    deadline: float  # on time.monotonic(): upstream.timeout for the whole request, failover included
    operation: str = UNROUTED_OPERATION
    route: CompiledRoute | None = None
    repeatable: bool = False  # safe to resend when a pooled upstream connection dropped it unanswered
    canonical: bytes = b""  # the path as Qdrant routes it: every decision is made on it
    kind: Kind | None = None  # for a path under /collections/{name}
    plain_body: bytes | None = None  # the body with its Content-Encoding undone, once looked at
    lookup_colours: dict[str, str] | None = None  # other routes named in the body: their colours, decided once
    upstream_seconds: float = 0.0  # the last upstream exchange, send to answer
    vectors: VectorsFound | None = None  # Documents to embed per colour (routes with `embed`)


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
        self.shadow = ShadowSender(upstream, metrics, observer, self.upstream_form)
        self.inference = inference  # routes with `embed`

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is managed by the server; websockets are not part of Qdrant's API
        started = time.perf_counter()
        limit = self.live.snapshot.config.limits.max_concurrency
        if self.in_flight >= limit:
            await self._shed(send, limit, started)
            return
        self.in_flight += 1
        try:
            await self._handle(scope, receive, send, started)
        except ClientGone:
            return
        except BodyTooLarge as exc:
            await _respond(send, 413, [_JSON], error_body(f"Payload too large: request body exceeds {exc.limit} bytes (limits.max_body_bytes)", started))
        except Exception as exc:  # noqa: BLE001 - the process must keep serving whatever one request does
            await _internal_error(scope, send, exc, started)
        finally:
            self.in_flight -= 1

    async def _shed(self, send: Send, limit: int, started: float) -> None:
        series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, UNROUTED_OPERATION)
        series.upstream_error("overloaded")
        series.observe(503, time.perf_counter() - started)
        message = f"Service overloaded: {limit} requests in progress (limits.max_concurrency)"
        await _respond(send, 503, [_JSON], error_body(message, started))

    async def _handle(self, scope: dict, receive: Receive, send: Send, started: float) -> None:
        snapshot = self.live.snapshot  # the one read: config, table and effective split together
        request = Request(
            method=scope["method"],
            path=scope.get("raw_path") or scope["path"].encode(),
            query=scope["query_string"],
            client_headers=dict(scope["headers"]),
            headers=self.upstream.forward_headers(scope["headers"]),
            body=await _read_body(scope, receive, snapshot.config.limits.max_body_bytes),
            started=started,
            snapshot=snapshot,
            deadline=self.upstream.deadline(),
        )
        request.canonical = canonical_path(request.path)
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
            or (route is not None and _CONTENT_ENCODING in request.client_headers)
        ):  # the plain path skips all of this
            refusal = self._screen(request, located)
            if refusal is not None:
                await _respond(send, refusal[0], [_JSON], error_body(refusal[1], started))
                return
        if route is None:
            request.repeatable = request.method in ("GET", "HEAD")
            series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, request.operation)
            outcome = await self._exchange(request, request.path, request.body, series)
            await _send_outcome(send, outcome, (), started)
            return

        inspectable = request.body if _CONTENT_ENCODING not in request.client_headers else None
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
            colour = forced or route.split_colour(_threshold(request.snapshot, route), request.client_headers, request.body)
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
                await _send_outcome(send, outcome, _colour_headers(policy, route.collection(policy)), started)
        elif kind is Kind.INFO:
            colour = route.forced_colour(request.client_headers) or BLUE  # a new model's client reads green's vector size
            outcome = await self._routed(request, colour)
            await _send_outcome(send, outcome, _colour_headers(colour, route.collection(colour)), started)
        else:
            await _respond(send, 400, [_JSON], error_body(_refusal(route, request.operation), started))

    def _lookup_colour(self, request: Request, other: CompiledRoute) -> str:
        """The colour of another route named in this request's body: that route's own decision for the
        same key (its forced colour, or its effective split), decided once per request."""
        colours = request.lookup_colours
        if colours is None:
            colours = request.lookup_colours = {}
        colour = colours.get(other.name)
        if colour is None:
            colour = other.forced_colour(request.client_headers) or other.split_colour(
                _threshold(request.snapshot, other), request.client_headers, request.body
            )
            colours[other.name] = colour
        return colour

    def _screen(self, request: Request, located: tuple[bytes, str] | None) -> tuple[int, str] | None:
        """Checks before forwarding: clients (a 401 before anything else), a coded read body decoded
        (or refused), alias actions."""
        try:
            refusal = self._admit(request, located)
            route = request.route
            if refusal is None and route is not None and (request.kind is Kind.READ or route.settings.embed is not None):
                self._plain_body(request)  # decoded now: the rewrite (or the search for texts) reads it
            return refusal or self._alias_refusal(request) or self._reserved_refusal(request, located)
        except UndecodableBody as exc:
            return 400, f"Wrong input: {exc}"

    def _plain_body(self, request: Request) -> bytes:
        """The body as Qdrant will read it (Content-Encoding undone); UndecodableBody when it cannot be."""
        if request.plain_body is None:
            coding = request.client_headers.get(_CONTENT_ENCODING)
            request.plain_body = (
                decode_request_body(request.body, coding, request.snapshot.config.limits.max_body_bytes)
                if coding else request.body
            )
        return request.plain_body

    def _admit(self, request: Request, located: tuple[bytes, str] | None) -> tuple[int, str] | None:
        """With `clients`: authenticate and authorize (401/403), and swap the client's credential for
        the proxy's key. Without it, nothing: the client's own credential goes upstream as sent."""
        policy = request.snapshot.clients
        if policy is None:
            return None
        if is_health_probe(request.canonical):  # as Qdrant: no credential checked, none sent
            request.headers = without_client_credentials(request.headers)
            return None
        grant = policy.authenticate(
            request.client_headers.get(b"api-key"), request.client_headers.get(b"authorization"), time.time()
        )
        if isinstance(grant, Unauthenticated):
            return 401, grant.message
        if located is None or request.canonical == ALIASES_PATH:
            collection, what = None, f"{request.method} {request.canonical.decode('latin-1')}"
        else:
            collection = request.route.name if request.route is not None else _collection_name(located[0])
            what = request.operation
        write = is_write(request.method, request.kind, request.operation, request.canonical)
        message = grant.refusal(collection, write, what)
        if message is None and grant.scoped and request.kind is Kind.READ:
            # A lookup reads another collection: in scope too, as Qdrant would check it.
            for name in referenced_collections(parse_read_body(self._plain_body(request))):
                message = message or grant.refusal(name, False, what)
        if message is not None:
            return 403, message
        request.headers = self.upstream.own_headers(request.headers)
        return None

    def _alias_refusal(self, request: Request) -> tuple[int, str] | None:
        """An alias change naming a logical collection: 400 (it only exists at the proxy)."""
        if request.canonical != ALIASES_PATH or request.method != "POST" or not request.snapshot.table.routes:
            return None
        try:
            document = json.loads(self._plain_body(request))
        except (ValueError, RecursionError):
            return None  # Qdrant answers a malformed body itself
        message = alias_refusal(document, request.snapshot.table.routes)
        return None if message is None else (400, message)

    def _reserved_refusal(self, request: Request, located: tuple[bytes, str] | None) -> tuple[int, str] | None:
        """The proxy's own collection (the Qdrant state store's): 403 by path, alias or lookup."""
        reserved = request.snapshot.table.reserved
        if reserved is None:
            return None
        readable = request.kind is Kind.READ or request.canonical == ALIASES_PATH
        message = reserved_refusal(
            reserved, located[0] if located else None, request.canonical, self._plain_body(request) if readable else None,
        )
        return None if message is None else (403, message)

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
        await _send_outcome(send, outcome, (), request.started)

    async def _read(self, request: Request, colour: str, forced: bool, send: Send) -> None:
        route = request.route
        outcome = await self._routed(request, colour)
        failed_over = colour == GREEN and not forced and route.settings.failover and _failed(outcome) and not _overloaded(outcome)
        if failed_over:
            # The client never sees a green failure it can be spared: answer from blue. Never for a
            # forced colour: its body may be made for that colour only (a new embedding model).
            self.metrics.failovers.labels(route.name).inc()
            colour = BLUE
            outcome = await self._routed(request, BLUE, since=time.perf_counter())
        await _send_outcome(send, outcome, _colour_headers(colour, route.collection(colour)), request.started)
        if route.settings.shadow is not None and not failed_over:  # both colours were just asked
            self.shadow.after_read(request, colour, forced, outcome)

    async def _answer_colour(self, request: Request, send: Send) -> None:
        """`GET /bluegreen/routes/{route}/color`: the colour the split gives this request's key now, for
        clients that must build a colour-specific query (a new embedding model) before sending it."""
        started = request.started
        segment, _, rest = request.canonical[len(_COLOUR_QUESTION):].partition(b"/")
        route = request.snapshot.table.lookup(segment) if rest == b"color" else None
        request.route, request.operation = route, "color"
        refusal = self._admit(request, (segment, "") if route is not None else None)
        if refusal is not None:
            await _respond(send, refusal[0], [_JSON], error_body(refusal[1], started))
            return
        if route is None:
            message = f"Not found: `{request.path.decode('latin-1')}`: ask GET /bluegreen/routes/{{route}}/color for a configured route"
            await _respond(send, 404, [_JSON], error_body(message, started))
            return
        if request.method != "GET":
            await _respond(send, 405, [_JSON], error_body(f"Method not allowed: {request.method}; use GET", started))
            return
        if route.key(request.client_headers) is None:
            sources = ", ".join(h.decode("latin-1") for h in route.key_headers)
            message = f"Wrong input: send the route's key ({sources}): the colour is decided per key"
            await _respond(send, 400, [_JSON], error_body(message, started))
            return
        threshold = _threshold(request.snapshot, route)
        colour = route.split_colour(threshold, request.client_headers, b"")
        collection = route.collection(colour)
        decision = {"route": route.name, "color": colour, "collection": collection, "effective_green_percent": threshold / 100}
        await _respond(send, 200, [_JSON, *_colour_headers(colour, collection)], _ok_body(decision, started))

    async def _write_both(self, request: Request, send: Send) -> None:
        """Sent to both at once; acknowledged only when both succeed, else the failing side's answer."""
        route = request.route
        blue, green = await asyncio.gather(self._routed(request, BLUE), self._routed(request, GREEN))
        if not _succeeded(blue):
            outcome, colour = blue, BLUE
        elif not _succeeded(green):
            outcome, colour = green, GREEN
        else:
            await _send_outcome(send, blue, _colour_headers("both", f"{route.blue},{route.green}"), request.started)
            return
        await _send_outcome(send, outcome, _colour_headers(colour, route.collection(colour)), request.started)

    async def _routed(self, request: Request, colour: str, since: float | None = None) -> UpstreamResponse | UpstreamFailure:
        """Send the request to `colour`'s physical collection; `since` starts the clock of a retry."""
        route = request.route
        series = self.metrics.series(route.name, colour, route.collection(colour), request.operation)
        started = request.started if since is None else since
        try:
            path, body, headers = await self.upstream_form(request, colour)
        except EmbedFailure as failure:
            seconds = time.perf_counter() - started
            series.observe(504 if failure.kind == "timeout" else 502, seconds)
            self.observer.observe(route.name, colour, request.operation, None, seconds)
            return failure
        outcome = await self._exchange(request, path, body, series, started, headers)
        seconds = time.perf_counter() - started
        self.observer.observe(route.name, colour, request.operation, None if isinstance(outcome, UpstreamFailure) else outcome, seconds)
        return outcome

    async def upstream_form(self, request: Request, colour: str) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        """Path, body and headers of the request as `colour`'s physical collection gets it: its own
        model's embeddings on an `embed` route (EmbedFailure when its embedder fails), collection
        names for it in a read's body. Shadow reads send the other colour's form of an answered read."""
        route = request.route
        body, headers = request.body, request.headers
        if request.vectors is not None:
            body = await self.inference.body_for(request, colour)
            if request.plain_body is not None and request.plain_body is not request.body:  # sent decoded: the coding header goes
                headers = [(name, value) for name, value in headers if name != _CONTENT_ENCODING]
        # Writes go byte for byte (but for embedded Documents), the same bytes to both colours. A
        # coded read body was decoded by _screen.
        plain = body if request.vectors is not None or request.plain_body is None else request.plain_body
        if request.kind is Kind.READ and may_name_collections(plain):
            table = request.snapshot.table

            def physical_for(name: str) -> str | None:
                other = table.routes.get(name)
                if other is None:
                    return None
                return other.collection(colour if other is route else self._lookup_colour(request, other))

            rewritten = rewrite_body_collections(plain, physical_for)
            if rewritten is not None:
                body = rewritten
                if plain is not request.body:  # sent decoded: the coding header goes
                    headers = [(name, value) for name, value in headers if name != _CONTENT_ENCODING]
        return rewrite_path(request.canonical, route.segment(colour)), body, headers

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


def _collection_name(segment: bytes) -> str:
    """A path segment as the collection name Qdrant reads from it (fully percent-decoded)."""
    return unquote_to_bytes(segment).decode("utf-8", "replace") if b"%" in segment else segment.decode("utf-8", "replace")


def _threshold(snapshot: Snapshot, route: CompiledRoute) -> int:
    """The route's effective threshold, from the same snapshot the route came from."""
    return snapshot.thresholds.get(route.name, route.configured_threshold)


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


def _ok_body(result, started: float) -> bytes:
    """Qdrant's success envelope."""
    return json.dumps(
        {"result": result, "status": "ok", "time": round(time.perf_counter() - started, 6)}, separators=(",", ":")
    ).encode()


def _colour_headers(colour: str, collection: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((_COLOUR_HEADER, colour.encode()), (_COLLECTION_HEADER, collection.encode()))


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


async def _send_outcome(send: Send, outcome, extra_headers, started: float) -> None:
    if isinstance(outcome, UpstreamFailure):
        status = _FAILURE_STATUS.get(outcome.kind, 502)
        await _respond(send, status, [_JSON, *extra_headers], error_body(outcome.detail, started))
        return
    await _respond(send, outcome.status, outcome.headers + list(extra_headers), outcome.body, outcome.head_length)


async def _respond(send: Send, status: int, headers: list, body: bytes, length: bytes | None = None) -> None:
    """`length`: a HEAD answer's Content-Length (the body is empty)."""
    headers.append((b"content-length", length or str(len(body)).encode()))
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except Exception as exc:
        raise _ResponseBroken from exc


class _ResponseBroken(Exception):
    """The server refused part of a response it may have begun: no second response can follow."""


async def _internal_error(scope: dict, send: Send, exc: Exception, started: float) -> None:
    """One log line (the traceback at debug level) and, when no response began, a 500 in the envelope;
    else the server closes the connection."""
    broken = isinstance(exc, _ResponseBroken)
    cause = exc.__cause__ if broken else exc
    log.error("internal error handling %s %s: %s: %s", scope.get("method"), scope.get("path"), type(cause).__name__, cause)
    log.debug("traceback", exc_info=exc)
    if not broken:
        with contextlib.suppress(_ResponseBroken):
            await _respond(send, 500, [_JSON], error_body("Service internal error: bluegreen-proxy failed to handle the request", started))


async def _read_body(scope: dict, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
