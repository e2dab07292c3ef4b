"""The request as one colour's physical collection gets it: its path, its body (its own model's
embeddings on an `embed` route, collection names in a read's body mapped for it) and its headers.
The client's request goes in that form to the colour it was routed to; a shadow read in the other
colour's form to the other.
"""
from __future__ import annotations

from proxy.dataplane.inference import TextInference
from proxy.dataplane.read_bodies import ReadBodies
from proxy.dataplane.request import Request
from routing.operations import Kind
from routing.rewrite import may_name_collections
from routing.table import CompiledRoute, rewrite_path

_CONTENT_ENCODING = b"content-encoding"

Form = tuple[bytes, bytes, list[tuple[bytes, bytes]]]  # path, body, headers


class UpstreamForms:
    def __init__(self, inference: TextInference | None, read_bodies: ReadBodies):
        self.inference = inference  # routes with `embed`
        self.read_bodies = read_bodies

    async def form(self, request: Request, colour: str) -> Form:
        """`colour`'s form of the request. Raises EmbedFailure when its embedder fails, UnreadableBody
        for a read body naming collections that cannot be parsed (nothing was sent: refuse it)."""
        route = request.route
        body, headers = request.body, request.headers
        if request.vectors is not None:
            body = await self.inference.body_for(request, colour)
            if request.plain_body is not None and request.plain_body is not request.body:  # sent decoded: the coding header goes
                headers = [(name, value) for name, value in headers if name != _CONTENT_ENCODING]
        # Writes go byte for byte (but for embedded Documents), the same bytes to both colours. A
        # coded read body was decoded by admission.
        plain = body if request.vectors is not None or request.plain_body is None else request.plain_body
        if request.kind is Kind.READ and may_name_collections(plain):
            physical = {
                name: other.collection(colour if other is route else lookup_colour(request, other))
                for name, other in request.snapshot.table.routes.items()
            }
            rewritten = await self.read_bodies.rewrite(plain, physical)
            if rewritten is not None:
                body = rewritten
                if plain is not request.body:  # sent decoded: the coding header goes
                    headers = [(name, value) for name, value in headers if name != _CONTENT_ENCODING]
        return rewrite_path(request.canonical, route.segment(colour)), body, headers


def lookup_colour(request: Request, other: CompiledRoute) -> str:
    """The colour of another route named in this request's body: that route's own decision for the
    same key (its forced colour, or its effective split), decided once per request."""
    colours = request.lookup_colours
    if colours is None:
        colours = request.lookup_colours = {}
    colour = colours.get(other.name)
    if colour is None:
        colour = other.forced_colour(request.client_headers) or other.split_colour(
            request.snapshot.threshold(other), request.client_headers, request.body
        )
        colours[other.name] = colour
    return colour
