"""The gRPC face: Qdrant's gRPC API at the proxy, decided exactly as the REST data path decides.

Per call, on the snapshot read once at its start: clients authenticated from the `api-key` /
`authorization` metadata (routing.clients), the method's REST twin (routing.grpc_methods) says read /
write / info / refused, and a call on a routed logical collection goes to the colour REST would pick
for the same key (its metadata), every collection name in the request mapped to that colour's physical
one. On a route with `embed` every Document in the request is replaced by the embedding of the model
of the colour it goes to (as REST's text in), and raw vectors whose length fits one colour only pin
the call to it (as REST, by the embedders' sizes or preflight's). A call that needs no rewriting goes
upstream as the client's own bytes; a request naming one collection (and no Document) has that name
replaced in its wire bytes (grpc_wire: every other byte as sent, nothing parsed); one with a batch, a
lookup or a Document is parsed and serialised again, keeping the fields this schema does not know
(protobuf carries them through). The upstream's answer, status and message come back as sent, with
`x-bluegreen-color` / `x-bluegreen-collection` as initial metadata. A sampled read on a route with
`shadow` goes to the other colour once its call has ended (`GrpcShadowRead`, counted and scored by
the REST path's own `ShadowSender`).
"""
from __future__ import annotations

# First, before anything imports grpc: the transport chooses grpc core's I/O mode, which grpc reads once, at import.
from proxy.dataplane.grpc_transport import RESERVED_METADATA, UPSTREAM_CHANNEL_OPTIONS, GrpcCallError, GrpcForwarder  # isort: skip

import asyncio
import functools
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc import aio

from proxy.dataplane.app import FAILOVER_SHARE, logical_refusal
from proxy.dataplane.grpc_wire import NAME_FIELD, WireName, deep_fields, read_name
from proxy.dataplane.inference import EmbedFailure, TextInference
from proxy.dataplane.grpc_vectors import raw_vectors
from proxy.dataplane.live import LiveConfig, Snapshot
from proxy.dataplane.request import Observer
from proxy.dataplane.shadow import ShadowFailed, ShadowSender
from proxy.grpc_schema import METHODS
from proxy.metrics import GRPC, NO_COLOUR, UNROUTED, Metrics
from routing.aliases import alias_refusal
from routing.clients import Grant, Unauthenticated
from routing.config import Grpc, Upstream
from routing.grpc_documents import MessageVectors, find_message_vectors
from routing.grpc_methods import ALIASES_METHOD, GRPC_METHODS, LOOKUP_FIELDS, GrpcMethod
from routing.operations import SEARCH_OPERATIONS, UNROUTED_OPERATION, Kind
from routing.overlap import UnreadableResult, ranked_ids_of_message
from routing.reserved import reserved_message
from routing.table import BLUE, GREEN, CompiledRoute

Code = grpc.StatusCode
COLOUR_KEY = "x-bluegreen-color"
COLLECTION_KEY = "x-bluegreen-collection"
_CREDENTIALS = frozenset({"api-key", "authorization"})
# The upstream's statuses that count against a colour (the guard's failures) and make a green read fail over.
FAILURE_CODES = frozenset({Code.UNAVAILABLE, Code.INTERNAL, Code.DEADLINE_EXCEEDED})
# gRPC status -> the HTTP status its REST twin answers: one `status` label for both protocols' metrics.
_HTTP_STATUS = {
    Code.OK: 200, Code.INVALID_ARGUMENT: 400, Code.FAILED_PRECONDITION: 400, Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401, Code.PERMISSION_DENIED: 403, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409, Code.RESOURCE_EXHAUSTED: 503, Code.CANCELLED: 499, Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503, Code.DEADLINE_EXCEEDED: 504,
}
_UPSTREAM_ERROR_KIND = {Code.UNAVAILABLE: "connect", Code.DEADLINE_EXCEEDED: "timeout", Code.INTERNAL: "5xx"}


def _colour_metadata(colour: str, collection: str) -> tuple[tuple[str, str], ...]:
    return (COLOUR_KEY, colour), (COLLECTION_KEY, collection)


def _consume_failure(task: asyncio.Task) -> None:
    """A metadata send whose call ended another way (cancelled, or an error raised before the reply)
    fails with it; its exception is the call's, not one to log as never retrieved."""
    if not task.cancelled():
        task.exception()


def _wire_routable() -> dict[str, frozenset[int]]:
    """Method path -> the top-level fields that make its request need a parse (grpc_wire.deep_fields),
    for every method about a collection whose request names it in field 1."""
    out = {}
    for path, spec in GRPC_METHODS.items():
        request = METHODS[path].request.DESCRIPTOR
        field = request.fields_by_number.get(NAME_FIELD)
        if spec.about_collection and field is not None and field.name == "collection_name" and field.type == FieldDescriptor.TYPE_STRING:
            out[path] = deep_fields(request, spec.batch, frozenset(LOOKUP_FIELDS))
    return out


# A request without any of its method's deep fields is routed from the wire: its name read and replaced
# in place, never parsed (grpc_wire), so a large one (points, vectors) costs no more than a small one.
_WIRE_ROUTABLE = _wire_routable()


@dataclass(frozen=True, slots=True)
class GrpcOutcome:
    """What the guard (the Observer) sees of a gRPC answer: its REST twin's status and, for a search-type
    read on a guarded route, whether it held points, told the way the REST answer would (b"": not judged)."""

    status: int
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        return None


_ANSWERED = GrpcOutcome(200)
_EMPTY, _FOUND = GrpcOutcome(200, b'{"result":[]}'), GrpcOutcome(200, b'{"result":[{}]}')
_EMPTY_BATCH, _FOUND_BATCH = GrpcOutcome(200, b'{"result":[[]]}'), GrpcOutcome(200, b'{"result":[[{}]]}')


def search_outcome(method: GrpcMethod, answer: bytes) -> GrpcOutcome:
    """A search-type answer as the guard's empty-result rule reads it: points or none (a batch: none in
    every result), from the protobuf answer."""
    try:
        result = METHODS[method.path].response.FromString(answer).result
    except DecodeError:
        return _ANSWERED
    if method.batch is not None:
        if not result:
            return _ANSWERED
        return _EMPTY_BATCH if all(len(item.result) == 0 for item in result) else _FOUND_BATCH
    points = result.groups if hasattr(result, "groups") else result
    return _EMPTY if len(points) == 0 else _FOUND


@dataclass(slots=True)
class Call:
    """One gRPC call as it flows through the face: read once, carried through every step."""

    method: GrpcMethod
    request: bytes
    client: dict[bytes, bytes]  # metadata by lower-case key as bytes, the first value of each (as REST headers)
    metadata: list[tuple[str, str | bytes]]  # what goes upstream
    snapshot: Snapshot
    started: float
    deadline: float  # on time.monotonic(): upstream.timeout or the client's deadline, whichever is first
    context: aio.ServicerContext
    route: CompiledRoute | None = None
    lookup_colours: dict[str, str] | None = None
    lookup_names: list[str] | None = None  # the lookups' names as sent, before a colour's were set
    vectors: MessageVectors | None = None  # the Documents each colour's request gets its embeddings for
    upstream_seconds: float = 0.0  # the last upstream exchange, send to answer


class GrpcFace(GrpcForwarder):
    """The proxy's gRPC listener: `await start()` / `await stop()` on the loop that serves REST."""

    # 8 parameters: the REST app's own collaborators (live config, metrics, guard observer, text in,
    # shadow sender), shared rather than rebuilt, so both faces decide and count as one.
    def __init__(
        self, live: LiveConfig, metrics: Metrics, observer: Observer, settings: Upstream, upstream: str, listener: Grpc,
        inference: TextInference | None = None,
        *, shadow: ShadowSender,
    ):
        limits = live.snapshot.config.limits
        server_options = (
            ("grpc.max_receive_message_length", limits.max_body_bytes),  # read at start-up, as the REST listener's
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ) + listener_keepalive_options(listener)
        channel_options = UPSTREAM_CHANNEL_OPTIONS + upstream_keepalive_options(listener)
        super().__init__(
            upstream, METHODS, host=listener.host, port=listener.port, server_options=server_options, channel_options=channel_options,
        )
        self.live = live
        self.metrics = metrics
        self.observer = observer
        self.settings = settings
        self.inference = inference  # routes with `embed`
        self.shadow = shadow  # the REST app's: one max_inflight per route for both faces
        self.in_flight = 0

    async def serve_call(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        snapshot = self.live.snapshot  # the one read: config, table and effective split together
        limits = snapshot.config.limits
        if self.in_flight >= limits.max_concurrency:
            series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, UNROUTED_OPERATION, GRPC)
            series.upstream_error("overloaded")
            series.observe(503, time.perf_counter() - started)
            message = f"Service overloaded: {limits.max_concurrency} requests in progress (limits.max_concurrency)"
            raise GrpcCallError(Code.RESOURCE_EXHAUSTED, message)
        self.in_flight += 1
        try:
            return await self._dispatch(self._call(method, request, context, snapshot, started))
        finally:
            self.in_flight -= 1

    def _call(self, method: str, request: bytes, context: aio.ServicerContext, snapshot: Snapshot, started: float) -> Call:
        received = context.invocation_metadata() or ()
        client: dict[bytes, bytes] = {}
        metadata = []
        for key, value in received:
            raw = value if isinstance(value, bytes) else value.encode()
            if key in _CREDENTIALS and key.encode() in client:
                raise GrpcCallError(Code.INVALID_ARGUMENT, f"Wrong input: the `{key}` metadata is sent more than once; send it once")
            client.setdefault(key.encode(), raw)
            if key not in RESERVED_METADATA and not key.startswith("grpc-"):
                metadata.append((key, value))
        budget = self.settings.timeout
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining)
        return Call(GRPC_METHODS[method], request, client, metadata, snapshot, started, time.monotonic() + budget, context)

    # ------------------------------------------------------------ decisions

    async def _dispatch(self, call: Call) -> bytes:
        spec, snapshot = call.method, call.snapshot
        grant = self._authenticate(call) if snapshot.clients is not None else None
        table = snapshot.table
        if not spec.about_collection:
            self._authorize(call, grant, None, [])
            if spec.path == ALIASES_METHOD and (table.routes or table.reserved is not None):
                self._screen_aliases(call)
            return await self._unrouted(call, call.request)
        if not table.routes and table.reserved is None and grant is None:
            return await self._unrouted(call, call.request)  # nothing to decide: the bytes as sent
        deep = _WIRE_ROUTABLE.get(spec.path)
        message = read_name(call.request, deep) if deep is not None else None
        if message is not None:  # the request's one name, from the wire: no batch, no lookups
            name, inner, lookups = message.name, [], []
        else:
            message = _parse(spec, call.request)
            name = message.collection_name
            inner = _inner_requests(message, spec)
            lookups = list(_lookups(message)) if spec.kind is Kind.READ else []
        route = call.route = table.routes.get(name)
        if any(request.collection_name != name for request in inner):
            different = next(request.collection_name for request in inner if request.collection_name != name)
            if route is not None or different in table.routes or table.reserved in (name, different):
                raise GrpcCallError(
                    Code.INVALID_ARGUMENT,
                    f"Wrong input: `{spec.batch}` names `{different}`, the batch `{name}`: every request of a batch "
                    "names the batch's own collection",
                )
        reserved = table.reserved
        if reserved is not None and (name == reserved or any(getattr(m, f) == reserved for m, f in lookups)):
            raise GrpcCallError(Code.PERMISSION_DENIED, reserved_message(reserved))
        self._authorize(call, grant, name, [getattr(m, f) for m, f in lookups])
        if route is None:
            return await self._unrouted(call, call.request)
        pinned = None
        if (route.settings.embed is not None and self.inference is not None) or snapshot.vector_sizes:
            if type(message) is WireName:  # Documents and raw vectors are read from the parsed message
                message = _parse(spec, call.request)
            pinned = self._find_vectors(call, message)  # the plain path skips this
        kind = spec.kind
        if kind is Kind.READ:
            forced = route.forced_colour(call.client)
            if forced is None and pinned is not None:
                forced = pinned  # a raw vector only this colour's collection takes
                self.metrics.pinned.labels(route.name, pinned).inc()
            colour = forced or route.split_colour(snapshot.threshold(route), call.client, call.request)
            return await self._read(call, message, inner, lookups, colour, forced is not None)
        if kind is Kind.WRITE:
            policy = route.settings.writes
            if pinned is not None:
                policy = pinned
                self.metrics.pinned.labels(route.name, pinned).inc()
            if policy == "both":
                return await self._write_both(call, message, inner)
            return await self._answer(call, policy, message, inner, lookups)
        if kind is Kind.INFO:
            colour = route.forced_colour(call.client) or BLUE
            return await self._answer(call, colour, message, inner, lookups)
        raise GrpcCallError(Code.INVALID_ARGUMENT, logical_refusal(route, spec.operation))

    def _find_vectors(self, call: Call, message: Message) -> str | None:
        """On a route with `embed`, the call's Documents (kept on the call); the colour its raw vectors
        pin it to (by the embedders' sizes, or on a route without `embed` preflight's), or None."""
        route, operation = call.route, call.method.operation
        if route.settings.embed is not None and self.inference is not None:
            passthrough = call.snapshot.config.passthrough_models
            call.vectors, pinned = self.inference.prepare_message(route, operation, message, passthrough)
            return pinned
        sizes = call.snapshot.vector_sizes.get(route.name)
        found = find_message_vectors(operation, message, frozenset(), True) if sizes is not None else None
        return sizes.pinned(found.raw) if found is not None else None

    def _authenticate(self, call: Call) -> Grant | None:
        """With `clients`: who sends the call (UNAUTHENTICATED when no one the proxy knows); the client's
        credential never goes upstream, the proxy's own key does. Qdrant's health check needs none."""
        call.metadata = [(key, value) for key, value in call.metadata if key not in _CREDENTIALS]
        if call.method.probe:
            return None
        grant = call.snapshot.clients.authenticate(call.client.get(b"api-key"), call.client.get(b"authorization"), time.time())
        if isinstance(grant, Unauthenticated):
            raise GrpcCallError(Code.UNAUTHENTICATED, grant.message)
        if self.settings.api_key:
            call.metadata.append(("api-key", self.settings.api_key))
        return grant

    def _authorize(self, call: Call, grant: Grant | None, collection: str | None, lookups: list[str]) -> None:
        if grant is None:
            return
        spec = call.method
        if collection is None:
            what = f"{spec.rest_method} {spec.rest_path.decode()}"
        else:
            what = spec.operation
            if call.route is not None:
                collection = call.route.name
        message = grant.refusal(collection, spec.write, what)
        if message is None and grant.scoped and spec.kind is Kind.READ:
            for name in lookups:  # a lookup reads another collection: in scope too, as Qdrant would check it
                message = message or grant.refusal(name, False, what)
        if message is not None:
            raise GrpcCallError(Code.PERMISSION_DENIED, message)

    def _screen_aliases(self, call: Call) -> None:
        """An alias change naming a logical collection (INVALID_ARGUMENT) or the reserved one (PERMISSION_DENIED)."""
        message = _parse(call.method, call.request)
        document = {"actions": [{action.WhichOneof("action"): _fields(getattr(action, action.WhichOneof("action")))}
                                for action in message.actions if action.WhichOneof("action")]}
        table = call.snapshot.table
        refusal = alias_refusal(document, table.routes)
        if refusal is not None:
            raise GrpcCallError(Code.INVALID_ARGUMENT, refusal)
        names = {name for action in document["actions"] for change in action.values() for name in change.values()}
        if table.reserved is not None and table.reserved in names:
            raise GrpcCallError(Code.PERMISSION_DENIED, reserved_message(table.reserved))

    def _lookup_colour(self, call: Call, other: CompiledRoute, colour: str) -> str:
        """A second route named in the call: its own decision for the same key, once per call (as REST)."""
        if other is call.route:
            return colour
        colours = call.lookup_colours
        if colours is None:
            colours = call.lookup_colours = {}
        decided = colours.get(other.name)
        if decided is None:
            decided = colours[other.name] = other.forced_colour(call.client) or other.split_colour(
                call.snapshot.threshold(other), call.client, call.request
            )
        return decided

    async def _colour_request(
        self, call: Call, message: Message | WireName, inner: list[Message], lookups: list[tuple[Message, str]], colour: str,
    ) -> bytes:
        """`colour`'s request bytes, the one place they are built: every collection name as `colour`'s
        physical one (lookups naming other routes: theirs) and, on a route with `embed`, `colour`'s own
        model's embeddings in place of the Documents; fields this schema does not know are kept. Any
        colour, any number of times, in any order, on the one parsed message. Raises GrpcCallError
        (UNAVAILABLE; DEADLINE_EXCEEDED on a timeout) with REST's message when `colour`'s embedder fails."""
        found = call.vectors
        if found is not None:
            try:
                embedded = await self.inference.embeddings(found, call.route, call.method.operation, colour)
            except EmbedFailure as failure:
                code = Code.DEADLINE_EXCEEDED if failure.kind == "timeout" else Code.UNAVAILABLE
                raise GrpcCallError(code, failure.detail) from None
            found.fill(embedded)  # from here to the bytes without a pause: another colour's build cannot interleave
        physical = call.route.collection(colour)
        if type(message) is WireName:
            return message.replaced(call.request, physical)
        message.collection_name = physical
        for request in inner:
            request.collection_name = physical
        if lookups:
            names = call.lookup_names
            if names is None:
                names = call.lookup_names = [getattr(holder, field) for holder, field in lookups]
            routes = call.snapshot.table.routes
            for (holder, field), name in zip(lookups, names):
                other = routes.get(name) if name != physical else None
                setattr(holder, field, other.collection(self._lookup_colour(call, other, colour)) if other is not None else name)
        return message.SerializeToString()

    # ------------------------------------------------------------ sending

    async def _read(self, call: Call, message: Message | WireName, inner, lookups, colour: str, forced: bool) -> bytes:
        route = call.route
        may_fail_over = colour == GREEN and not forced and route.settings.failover
        announced = None if may_fail_over else self._announce(call, colour, route.collection(colour))
        outcome = await self._routed(call, colour, message, inner, lookups)
        failed_over = (
            may_fail_over and isinstance(outcome, GrpcCallError)
            and outcome.code in FAILURE_CODES
            and call.deadline - time.monotonic() >= self.settings.timeout * FAILOVER_SHARE
        )
        if failed_over:
            # The client never sees a green failure it can be spared: answer from blue (as REST does).
            self.metrics.failovers.labels(route.name).inc()
            colour = BLUE
            outcome = await self._routed(call, BLUE, message, inner, lookups, since=time.perf_counter())
        elif route.settings.shadow is not None and self.shadow.sampled(route, call.method.operation):
            # Started once the call has ended: the client's answer is sent before the shadow begins.
            launch = functools.partial(
                self.shadow.launch, GrpcShadowRead(self, call, outcome, message, inner, lookups), colour, forced, not isinstance(outcome, GrpcCallError),
            )
            call.context.add_done_callback(lambda _context: launch())
        return await self._reply(call, colour, route.collection(colour), outcome, announced)

    async def _answer(self, call: Call, colour: str, message: Message, inner: list[Message], lookups) -> bytes:
        collection = call.route.collection(colour)
        announced = self._announce(call, colour, collection)
        outcome = await self._routed(call, colour, message, inner, lookups)
        return await self._reply(call, colour, collection, outcome, announced)

    async def _write_both(self, call: Call, message: Message | WireName, inner: list[Message]) -> bytes:
        """Sent to both at once (each embedded with its own model); acknowledged only when both succeed,
        else the failing side's status."""
        route = call.route
        blue, green = await asyncio.gather(self._routed(call, BLUE, message, inner, []), self._routed(call, GREEN, message, inner, []))
        if isinstance(blue, GrpcCallError):
            return await self._reply(call, BLUE, route.blue, blue)
        if isinstance(green, GrpcCallError):
            return await self._reply(call, GREEN, route.green, green)
        return await self._reply(call, "both", f"{route.blue},{route.green}", blue)

    @staticmethod
    def _announce(call: Call, colour: str, collection: str) -> asyncio.Task:
        """The colour's initial metadata, sent while the upstream call runs: grpc.aio sends it as a batch
        of its own, which would otherwise add its round through grpc core to every call's latency."""
        task = asyncio.ensure_future(call.context.send_initial_metadata(_colour_metadata(colour, collection)))
        task.add_done_callback(_consume_failure)
        return task

    async def _reply(
        self, call: Call, colour: str, collection: str, outcome: bytes | GrpcCallError, announced: asyncio.Task | None = None,
    ) -> bytes:
        """The answer, its colour's initial metadata sent first (or already, when `announced`)."""
        if announced is None:
            await call.context.send_initial_metadata(_colour_metadata(colour, collection))
        else:
            await announced
        if isinstance(outcome, GrpcCallError):
            raise outcome
        return outcome

    async def _routed(
        self, call: Call, colour: str, message: Message, inner: list[Message], lookups, since: float | None = None,
    ) -> bytes | GrpcCallError:
        """Send `colour`'s request to its physical collection; `since` starts the clock of a retry."""
        route = call.route
        series = self.metrics.series(route.name, colour, route.collection(colour), call.method.operation, GRPC)
        started = call.started if since is None else since
        try:
            request = await self._colour_request(call, message, inner, lookups, colour)
        except GrpcCallError as failure:  # its embedder failed: nothing went upstream; REST's 502 / 504 for the metrics
            seconds = time.perf_counter() - started
            series.observe(504 if failure.code is Code.DEADLINE_EXCEEDED else 502, seconds)
            self.observer.observe(route.name, colour, call.method.operation, None, seconds)
            return failure
        outcome = await self._exchange(call, request, series, started)
        seconds = time.perf_counter() - started
        if isinstance(outcome, GrpcCallError):
            seen = None if outcome.code in FAILURE_CODES else GrpcOutcome(_HTTP_STATUS.get(outcome.code, 500))
        elif route.settings.guard is not None and call.method.operation in SEARCH_OPERATIONS:
            seen = search_outcome(call.method, outcome)
        else:
            seen = _ANSWERED
        self.observer.observe(route.name, colour, call.method.operation, seen, seconds)
        return outcome

    async def _unrouted(self, call: Call, request: bytes) -> bytes:
        series = self.metrics.series(UNROUTED, NO_COLOUR, UNROUTED, call.method.operation, GRPC)
        outcome = await self._exchange(call, request, series, call.started)
        if isinstance(outcome, GrpcCallError):
            raise outcome
        return outcome

    async def _exchange(self, call: Call, request: bytes, series, started: float) -> bytes | GrpcCallError:
        remaining = call.deadline - time.monotonic()
        sent = time.perf_counter()
        try:
            if remaining <= 0:
                raise GrpcCallError(Code.DEADLINE_EXCEEDED, "Deadline exceeded: no time left for the upstream call")
            answer = await self.forward(call.method.path, request, call.metadata, remaining)
        except GrpcCallError as error:
            kind = _UPSTREAM_ERROR_KIND.get(error.code)
            if kind is not None:
                series.upstream_error(kind)
            series.observe(_HTTP_STATUS.get(error.code, 500), time.perf_counter() - started)
            return error
        answered = time.perf_counter()
        call.upstream_seconds = answered - sent
        series.observe(200, answered - started)
        return answer


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _keepalive(listener: Grpc) -> list[tuple[str, int]]:
    """A ping every keepalive_time; no answer within keepalive_timeout closes the connection. grpc core
    waits for an answer ping_timeout (default a minute), not keepalive_timeout alone: both are set."""
    return [
        ("grpc.keepalive_time_ms", _ms(listener.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(listener.keepalive_timeout)),
        ("grpc.http2.ping_timeout_ms", _ms(listener.keepalive_timeout)),
    ]


def listener_keepalive_options(listener: Grpc) -> tuple[tuple[str, int], ...]:
    """grpc core's server arguments for `grpc:`'s keepalive and connection limits (absent: grpc's never)."""
    options = _keepalive(listener) + [
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(listener.min_ping_interval)),
        ("grpc.keepalive_permit_without_calls", int(listener.permit_keepalive_without_calls)),
    ]
    if listener.max_connection_idle is not None:
        options.append(("grpc.max_connection_idle_ms", _ms(listener.max_connection_idle)))
    if listener.max_connection_age is not None:
        options.append(("grpc.max_connection_age_ms", _ms(listener.max_connection_age)))
        options.append(("grpc.max_connection_age_grace_ms", _ms(listener.max_connection_age_grace)))
    return tuple(options)


def upstream_keepalive_options(listener: Grpc) -> tuple[tuple[str, int], ...]:
    """The upstream channels ping too, idle or not, so a dead upstream connection is replaced before a
    call waits on it (Qdrant accepts pings at any rate)."""
    return tuple(_keepalive(listener)) + (
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    )


class GrpcShadowRead:
    """A sampled gRPC read as the shared shadow bookkeeping (proxy.dataplane.shadow) asks of it. The other
    colour's request is built by the face's `_colour_request` from the call's own parsed message (which
    it maps, and embeds, for any colour, any number of times), and sent with the answered call's metadata within
    `upstream.timeout` (the client has its answer: its deadline no longer applies). The exchange is the
    shadow's own: no request metrics, no guard window but the pair's."""

    __slots__ = ("face", "call", "answer", "message", "inner", "lookups", "route", "operation", "answered_seconds")

    def __init__(self, face: GrpcFace, call: Call, answer: bytes | GrpcCallError, message: Message | WireName, inner, lookups):
        self.face, self.call, self.answer = face, call, answer
        self.message, self.inner, self.lookups = message, inner, lookups
        self.route, self.operation, self.answered_seconds = call.route, call.method.operation, call.upstream_seconds

    def may_hold_raw_vectors(self) -> bool:
        return True  # told by walking the message, which the sizes check does only when the sizes differ

    def raw_vectors(self) -> list[tuple[str, int]]:
        return raw_vectors(_parse(self.call.method, self.call.request))

    def answered_ids(self) -> list[list[Hashable]]:
        return self._ranked_ids(self.answer)

    async def shadow_ids(self, colour: str) -> tuple[list[list[Hashable]], float]:
        call, face = self.call, self.face
        spec = call.method
        try:
            request = await face._colour_request(call, self.message, self.inner, self.lookups, colour)
            sent = time.perf_counter()
            answer = await face.forward(spec.path, request, call.metadata, face.settings.timeout)
        except GrpcCallError as error:
            raise ShadowFailed(f"{error.code.name}: {error.details}") from None
        seconds = time.perf_counter() - sent
        try:
            return self._ranked_ids(answer), seconds
        except UnreadableResult as exc:
            raise ShadowFailed(str(exc)) from None

    def _ranked_ids(self, answer: bytes) -> list[list[Hashable]]:
        try:
            response = METHODS[self.call.method.path].response.FromString(answer)
        except DecodeError:
            raise UnreadableResult("the answer is not the method's response message") from None
        return ranked_ids_of_message(self.operation, response)


def _parse(spec: GrpcMethod, request: bytes) -> Message:
    try:
        return METHODS[spec.path].request.FromString(request)
    except DecodeError as exc:
        raise GrpcCallError(Code.INVALID_ARGUMENT, f"Wrong input: the request is not a valid {spec.path} message: {exc}") from None


def _inner_requests(message: Message, spec: GrpcMethod) -> list[Message]:
    return list(getattr(message, spec.batch)) if spec.batch is not None else []


def _lookups(message: Message) -> Iterator[tuple[Message, str]]:
    """Every (message, field) in the request that names a second collection: `lookup_from` (prefetches
    and batch requests included) and `with_lookup`."""
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        for child in (value if field.is_repeated else (value,)):
            name = LOOKUP_FIELDS.get(child.DESCRIPTOR.name)
            if name is not None:
                yield child, name
            else:
                yield from _lookups(child)


def _fields(change: Message) -> dict:
    return {field.name: value for field, value in change.ListFields() if isinstance(value, str)}

