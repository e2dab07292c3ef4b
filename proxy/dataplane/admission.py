"""Who may send what, before anything is forwarded: one reading of the headers, clients (`clients`:
authenticated on the head, authorized once the body is in), a coded body decoded, alias actions.

Each check answers None (go on) or what the client gets: a message (401) or (status, message).
"""
from __future__ import annotations

import time
from urllib.parse import unquote_to_bytes

from proxy.dataplane.read_bodies import ReadBodies
from proxy.dataplane.request import Request
from proxy.dataplane.upstream import UpstreamClient, without_client_credentials
from routing.aliases import ALIASES_PATH
from routing.clients import Unauthenticated, is_health_probe
from routing.operations import Kind, is_write
from routing.reserved import body_may_name, path_names_reserved, reserved_message
from routing.rewrite import UndecodableBody, UnreadableBody, decode_request_body

CONTENT_ENCODING = b"content-encoding"
# Headers that change how a request is read, framed, addressed or authenticated: a second copy is
# refused, since the proxy and the upstream could each read a different one.
SINGLE_HEADERS = frozenset(
    {b"content-encoding", b"content-length", b"content-type", b"transfer-encoding", b"host", b"api-key", b"authorization"}
)


def duplicated_header(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first of SINGLE_HEADERS sent more than once, if any (the caller checks only when some name
    repeats at all)."""
    seen = set()
    for name, _ in headers:
        if name in SINGLE_HEADERS:
            if name in seen:
                return name.decode("latin-1")
            seen.add(name)
    return None


class Admission:
    def __init__(self, upstream: UpstreamClient, read_bodies: ReadBodies):
        self.upstream = upstream
        self.read_bodies = read_bodies

    def authenticate(self, request: Request) -> str | None:
        """With `clients`, on the head: who sends the request (kept as `request.grant`); the 401
        message when no one the proxy knows. Qdrant's probes need no credential, and get none sent."""
        if is_health_probe(request.canonical):
            request.headers = without_client_credentials(request.headers)
            return None
        grant = request.snapshot.clients.authenticate(
            request.client_headers.get(b"api-key"), request.client_headers.get(b"authorization"), time.time()
        )
        if isinstance(grant, Unauthenticated):
            return grant.message
        request.grant = grant
        return None

    async def screen(self, request: Request, located: tuple[bytes, str] | None) -> tuple[int, str] | None:
        """Checks before forwarding: a coded read body decoded (or refused), clients' scopes, alias
        actions. A body these must read and cannot: 400."""
        try:
            route = request.route
            if route is not None and (request.kind is Kind.READ or route.settings.embed is not None):
                plain_body(request)  # decoded now: the rewrite (or the search for texts) reads it
            return (
                await self.admit(request, located) or await self._alias_refusal(request)
                or await self._reserved_refusal(request, located)
            )
        except (UndecodableBody, UnreadableBody) as exc:
            return 400, f"Wrong input: {exc}"

    async def admit(self, request: Request, located: tuple[bytes, str] | None) -> tuple[int, str] | None:
        """With `clients`: authorize the client authenticated on the head (403), and swap its credential
        for the proxy's key. Without it, nothing: the client's own credential goes upstream as sent."""
        grant = request.grant
        if grant is None:  # no `clients`, or a probe
            return None
        if located is None or request.canonical == ALIASES_PATH:
            collection, what = None, f"{request.method} {request.canonical.decode('latin-1')}"
        else:
            collection = request.route.name if request.route is not None else _collection_name(located[0])
            what = request.operation
        write = is_write(request.method, request.kind, request.operation, request.canonical)
        message = grant.refusal(collection, write, what)
        if message is None and grant.scoped and request.kind is Kind.READ:
            # A lookup reads another collection: in scope too, as Qdrant would check it.
            for name in await self.read_bodies.collections_named(plain_body(request)):
                message = message or grant.refusal(name, False, what)
        if message is not None:
            return 403, message
        request.headers = self.upstream.own_headers(request.headers)
        return None

    async def _alias_refusal(self, request: Request) -> tuple[int, str] | None:
        """An alias change naming a logical collection: 400 (it only exists at the proxy)."""
        routes = request.snapshot.table.routes
        if request.canonical != ALIASES_PATH or request.method != "POST" or not routes:
            return None
        colours = {name: (route.blue, route.green) for name, route in routes.items()}
        message = await self.read_bodies.alias_refusal(plain_body(request), colours)
        return None if message is None else (400, message)


    async def _reserved_refusal(self, request: Request, located: tuple[bytes, str] | None) -> tuple[int, str] | None:
        """The proxy's own collection (the Qdrant state store's): 403 by path, alias change or lookup."""
        reserved = request.snapshot.table.reserved
        if reserved is None:
            return None
        if located is not None and path_names_reserved(located[0], reserved):
            return 403, reserved_message(reserved)
        aliases = request.canonical == ALIASES_PATH
        if request.kind is not Kind.READ and not aliases:
            return None
        body = plain_body(request)
        if not body_may_name(body, reserved):
            return None
        names = await (self.read_bodies.alias_names(body) if aliases else self.read_bodies.collections_named(body))
        return (403, reserved_message(reserved)) if reserved in names else None


def plain_body(request: Request) -> bytes:
    """The body as Qdrant will read it (Content-Encoding undone); UndecodableBody when it cannot be."""
    if request.plain_body is None:
        coding = request.client_headers.get(CONTENT_ENCODING)
        request.plain_body = (
            decode_request_body(request.body, coding, request.snapshot.config.limits.max_body_bytes)
            if coding else request.body
        )
    return request.plain_body


def _collection_name(segment: bytes) -> str:
    """A path segment as the collection name Qdrant reads from it (fully percent-decoded)."""
    return unquote_to_bytes(segment).decode("utf-8", "replace") if b"%" in segment else segment.decode("utf-8", "replace")
