"""The data path: a pure-ASGI app that speaks the Qdrant REST API and forwards to the upstream.

request -> route lookup on the current snapshot -> colour -> forward -> record.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Awaitable, Callable, Protocol

from proxy.metrics import NO_COLOUR, UNROUTED, Metrics
from proxy.state import ProxyState
from proxy.upstream import UpstreamClient, UpstreamFailure, UpstreamResponse
from routing.operations import SEARCH_OPERATIONS, UNROUTED_OPERATION, Kind, classify
from routing.results import readable_accept_encoding
from routing.rewrite import rewrite_body_collections
from routing.table import BLUE, GREEN, CompiledRoute, rewrite_path, split_collection_path

log = logging.getLogger("bluegreen.proxy")

Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]

_JSON = (b"content-type", b"application/json")
_COLOUR_HEADER = b"x-bluegreen-color"
_COLLECTION_HEADER = b"x-bluegreen-collection"
_COLOUR_QUESTION = b"/bluegreen/routes/"  # + {route}/color: outside Qdrant's API, so never forwarded


class Observer(Protocol):
    """Sees every routed upstream exchange (the rollout guard listens here); `response` is None when
    none came."""

    def observe(self, route: str, colour: str, operation: str, response: UpstreamResponse | None, seconds: float) -> None: ...


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


def error_body(message: str, started: float) -> bytes:
    """Qdrant's error envelope."""
    return json.dumps(
        {"status": {"error": message}, "time": round(time.perf_counter() - started, 6)}, separators=(",", ":")
    ).encode()


class ProxyApp:
    def __init__(self, state: ProxyState, upstream: UpstreamClient, metrics: Metrics, observer: Observer):
        self.state = state
        self.upstream = upstream
        self.metrics = metrics
        self.observer = observer

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is managed by the server; websockets are not part of Qdrant's API
        started = time.perf_counter()
        try:
            await self._handle(scope, receive, send, started)
        except ClientGone:
            return
        except BodyTooLarge:
            limit = self.state.snapshot.config.limits.max_body_bytes
            await _respond(send, 413, [_JSON], error_body(f"Payload too large: request body exceeds {limit} bytes (limits.max_body_bytes)", started))
        except Exception:  # noqa: BLE001 - the process must keep serving whatever one request does
            log.exception("internal error handling %s %s", scope.get("method"), scope.get("path"))
            await _respond(send, 500, [_JSON], error_body("Service internal error: bluegreen-proxy failed to handle the request", started))

    async def _handle(self, scope: dict, receive: Receive, send: Send, started: float) -> None:
        snapshot = self.state.snapshot
        body = await _read_body(scope, receive, snapshot.config.limits.max_body_bytes)
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope["query_string"]
        headers = self.upstream.forward_headers(scope["headers"])

        located = split_collection_path(raw_path)
        route = snapshot.table.lookup(located[0]) if located else None
        if route is None:
            if located is None and raw_path.startswith(_COLOUR_QUESTION):
                await self._answer_colour(snapshot, method, raw_path, scope["headers"], send, started)
                return
            operation = classify(method, located[1])[0] if located else UNROUTED_OPERATION
            series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, operation)
            outcome = await self._exchange(method, raw_path, query, headers, body, series, started)
            await _send_outcome(send, outcome, (), started)
            return

        operation, kind = classify(method, located[1])
        if kind is Kind.READ:
            if route.settings.guard is not None and operation in SEARCH_OPERATIONS:
                headers = _readable_by_the_guard(headers)
            headers_by_name = dict(scope["headers"])
            forced = route.forced_colour(headers_by_name)
            colour = forced or route.split_colour(self._threshold(route), headers_by_name, body)
            await self._read(route, colour, forced is not None, operation, method, raw_path, query, headers, body, send, started)
        elif kind is Kind.WRITE:
            policy = route.settings.writes
            if policy == "both":
                await self._write_both(route, operation, method, raw_path, query, headers, body, send, started)
            else:
                outcome = await self._routed(route, policy, operation, method, raw_path, query, headers, body, started)
                await _send_outcome(send, outcome, _colour_headers(policy, route.collection(policy)), started)
        elif kind is Kind.INFO:
            outcome = await self._routed(route, BLUE, operation, method, raw_path, query, headers, body, started)
            await _send_outcome(send, outcome, _colour_headers(BLUE, route.blue), started)
        else:
            await _respond(send, 400, [_JSON], error_body(_refusal(route, operation), started))

    def _threshold(self, route: CompiledRoute) -> int:
        return self.state.thresholds.get(route.name, route.configured_threshold)

    async def _read(self, route, colour, forced, operation, method, raw_path, query, headers, body, send, started) -> None:
        outcome = await self._routed(route, colour, operation, method, raw_path, query, headers, body, started)
        if colour == GREEN and not forced and route.settings.failover and _failed(outcome):
            # The client never sees a green failure it can be spared: answer from blue. Never for a
            # forced colour: its body may be made for that colour only (a new embedding model).
            self.metrics.failovers.labels(route.name).inc()
            colour = BLUE
            outcome = await self._routed(route, BLUE, operation, method, raw_path, query, headers, body, time.perf_counter())
        await _send_outcome(send, outcome, _colour_headers(colour, route.collection(colour)), started)

    async def _answer_colour(self, snapshot, method: str, raw_path: bytes, scope_headers, send: Send, started: float) -> None:
        """`GET /bluegreen/routes/{route}/color`: the colour the split gives this request's key now, for
        clients that must build a colour-specific query (a new embedding model) before sending it."""
        segment, _, rest = raw_path[len(_COLOUR_QUESTION):].partition(b"/")
        route = snapshot.table.lookup(segment) if rest.rstrip(b"/") == b"color" else None
        if route is None:
            message = f"Not found: `{raw_path.decode('latin-1')}`: ask GET /bluegreen/routes/{{route}}/color for a configured route"
            await _respond(send, 404, [_JSON], error_body(message, started))
            return
        if method != "GET":
            await _respond(send, 405, [_JSON], error_body(f"Method not allowed: {method}; use GET", started))
            return
        headers_by_name = dict(scope_headers)
        if route.key(headers_by_name) is None:
            sources = ", ".join(h.decode("latin-1") for h in route.key_headers)
            message = f"Wrong input: send the route's key ({sources}): the colour is decided per key"
            await _respond(send, 400, [_JSON], error_body(message, started))
            return
        threshold = self._threshold(route)
        colour = route.split_colour(threshold, headers_by_name, b"")
        collection = route.collection(colour)
        decision = {"route": route.name, "color": colour, "collection": collection, "effective_green_percent": threshold / 100}
        await _respond(send, 200, [_JSON, *_colour_headers(colour, collection)], _ok_body(decision, started))

    async def _write_both(self, route, operation, method, raw_path, query, headers, body, send, started) -> None:
        """Sent to both at once; acknowledged only when both succeed, else the failing side's answer."""
        blue, green = await asyncio.gather(
            self._routed(route, BLUE, operation, method, raw_path, query, headers, body, started),
            self._routed(route, GREEN, operation, method, raw_path, query, headers, body, started),
        )
        if not _succeeded(blue):
            outcome, colour = blue, BLUE
        elif not _succeeded(green):
            outcome, colour = green, GREEN
        else:
            await _send_outcome(send, blue, _colour_headers("both", f"{route.blue},{route.green}"), started)
            return
        await _send_outcome(send, outcome, _colour_headers(colour, route.collection(colour)), started)

    async def _routed(
        self, route: CompiledRoute, colour: str, operation: str, method: str, raw_path: bytes,
        query: bytes, headers: list, body: bytes, started: float,
    ) -> UpstreamResponse | UpstreamFailure:
        collection = route.collection(colour)
        table = self.state.snapshot.table
        rewritten = rewrite_body_collections(
            body, lambda name: (r.collection(colour) if (r := table.routes.get(name)) else None)
        )
        path = rewrite_path(raw_path, route.segment(colour))
        series = self.metrics.series(route.name, colour, collection, operation)
        outcome = await self._exchange(method, path, query, headers, rewritten or body, series, started)
        seconds = time.perf_counter() - started
        self.observer.observe(route.name, colour, operation, None if isinstance(outcome, UpstreamFailure) else outcome, seconds)
        return outcome

    async def _exchange(self, method, path, query, headers, body, series, started) -> UpstreamResponse | UpstreamFailure:
        target = path + b"?" + query if query else path
        try:
            response = await self.upstream.request(method, target, headers, body)
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


def _ok_body(result, started: float) -> bytes:
    """Qdrant's success envelope."""
    return json.dumps(
        {"result": result, "status": "ok", "time": round(time.perf_counter() - started, 6)}, separators=(",", ":")
    ).encode()


def _colour_headers(colour: str, collection: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((_COLOUR_HEADER, colour.encode()), (_COLLECTION_HEADER, collection.encode()))


def _failed(outcome: UpstreamResponse | UpstreamFailure) -> bool:
    return isinstance(outcome, UpstreamFailure) or outcome.status >= 500


def _succeeded(outcome: UpstreamResponse | UpstreamFailure) -> bool:
    return isinstance(outcome, UpstreamResponse) and outcome.status < 300


def _refusal(route: CompiledRoute, operation: str) -> str:
    return (
        f"Wrong input: `{route.name}` is a logical collection routed by bluegreen-proxy "
        f"(blue: `{route.blue}`, green: `{route.green}`); `{operation}` on it is refused. "
        f"Address the physical collection `{route.blue}` or `{route.green}` directly "
        f"(at the upstream Qdrant where a physical name equals the logical one)."
    )


async def _send_outcome(send: Send, outcome, extra_headers, started: float) -> None:
    if isinstance(outcome, UpstreamFailure):
        status = 504 if outcome.kind == "timeout" else 502
        await _respond(send, status, [_JSON, *extra_headers], error_body(outcome.detail, started))
        return
    await _respond(send, outcome.status, outcome.headers + list(extra_headers), outcome.body)


async def _respond(send: Send, status: int, headers: list, body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(scope: dict, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)
