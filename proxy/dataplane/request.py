"""The request carrier at the bottom of the data path: what every step of a request reads and fills in,
and the interface of whoever watches the upstream exchanges. Imports nothing else of the data path
but the snapshot it was read from and the upstream's answer type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from proxy.dataplane.live import Snapshot
from proxy.dataplane.upstream import UpstreamResponse
from routing.clients import Grant
from routing.documents import VectorsFound
from routing.operations import UNROUTED_OPERATION, Kind
from routing.table import CompiledRoute

ORIGIN = b"origin"


class Observer(Protocol):
    """Sees every routed upstream exchange (the rollout guard listens here); `response` is None when
    none came."""

    def observe(self, route: str, colour: str, operation: str, response: UpstreamResponse | None, seconds: float) -> None: ...


@dataclass(slots=True)
class Request:
    """One client request as it flows through the data path: read once, carried through every step."""

    method: str
    path: bytes  # the raw path as received (what an unrouted request forwards)
    query: bytes
    client_headers: dict[bytes, bytes]  # by lower-case name, the first value of each (first_values)
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
    grant: Grant | None = None  # the client, authenticated on the head (with `clients`, but for a probe)

    @property
    def origin(self) -> bytes | None:
        """A browser's Origin: the proxy's own answers then carry CORS headers."""
        return self.client_headers.get(ORIGIN)


def first_values(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Each header's first value by name: the one reading of a header used everywhere (as Starlette's
    `Headers` reads one)."""
    return dict(reversed(headers))
