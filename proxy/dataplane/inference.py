"""Text in, each colour's vectors out: the data path's side of a route with `embed`.

For such a route the request's Documents (and raw vectors) are found once (`prepare`, over gRPC
`prepare_message`); each colour the request is sent to then gets its own model's embeddings
(`embeddings`; `body_for` the REST body with them): queries with the embedder's query prefix, writes
with its document prefix. A raw vector whose length fits only one colour pins the request to that
colour.
"""
from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import Message

from proxy.dataplane.request import Request
from proxy.dataplane.upstream import UpstreamFailure
from proxy.embedding.backend import Vector
from proxy.embedding.embedders import EmbedderError, EmbedderSet
from proxy.metrics import Metrics
from routing.config import RouteEmbed
from routing.documents import UNNAMED, WRITE_OPERATIONS, VectorsFound, find_vectors, pinned_colour
from routing.grpc_documents import MessageVectors, find_message_vectors
from routing.table import COLOURS, CompiledRoute

log = logging.getLogger("bluegreen.embed")


class EmbedFailure(UpstreamFailure):
    """The colour's embedder failed: answered like an upstream failure (502, or 504 on a timeout) and
    counted as that colour's failure."""


class TextInference:
    def __init__(self, embedders: EmbedderSet, metrics: Metrics):
        self.embedders = embedders
        self.metrics = metrics

    def prepare(self, request: Request) -> str | None:
        """Find the Documents of a request on a route with `embed` (kept on `request.vectors`); return the
        colour its raw vectors pin it to, if their length fits only one (blue when none fits: Qdrant's
        dimension error then comes from blue), else None."""
        route = request.route
        embed = route.settings.embed
        pinnable = self._pinnable(embed)
        body = request.plain_body if request.plain_body is not None else request.body
        found = find_vectors(request.operation, body, request.snapshot.config.passthrough_models, pinnable)
        if found is None:
            return None
        if found.sites:
            request.vectors = found
        return self._pinned(embed, found.raw) if pinnable else None

    def prepare_message(
        self, route: CompiledRoute, operation: str, message: Message, passthrough_models: frozenset[str],
    ) -> tuple[MessageVectors | None, str | None]:
        """`prepare` for a gRPC request message: its Documents (None: none), and the colour its raw
        vectors pin it to (or None)."""
        embed = route.settings.embed
        pinnable = self._pinnable(embed)
        found = find_message_vectors(operation, message, passthrough_models, pinnable)
        if found is None:
            return None, None
        return (found if found.sites else None), (self._pinned(embed, found.raw) if pinnable else None)

    async def body_for(self, request: Request, colour: str) -> bytes:
        """The request body with `colour`'s embeddings in place of its Documents. Raises EmbedFailure."""
        found = request.vectors
        return found.fill(await self.embeddings(found, request.route, request.operation, colour))

    async def embeddings(
        self, found: VectorsFound | MessageVectors, route: CompiledRoute, operation: str, colour: str,
    ) -> dict[str, list[Vector]]:
        """`colour`'s embeddings of the texts found, per vector name (as `fill` takes them): writes with
        the document prefix, the rest with the query prefix. Raises EmbedFailure."""
        kind = "document" if operation in WRITE_OPERATIONS else "query"
        calls = {}
        for vector, texts in found.texts_by_vector().items():
            name = route.settings.embed.embedder_for(colour, vector)
            if name is None:
                continue  # no embedder for this vector: its Documents go up as sent
            embedder = self.embedders.get(name)
            if embedder is None:  # a reload removed it while this request was in flight
                raise EmbedFailure("embedder", f"Embedding failed: embedder `{name}` is not configured (route {route.name}, {colour})")
            calls[vector] = embedder.embed(texts, kind)
            if log.isEnabledFor(logging.DEBUG):
                models = sorted({site.model for site in found.sites if site.vector == vector})
                log.debug("route %s, %s: %d texts for vector %r (client model %s) embedded by %s", route.name, colour, len(texts), vector, models, name)
        try:
            results = await asyncio.gather(*calls.values())
        except EmbedderError as error:
            kind = "timeout" if error.kind == "timeout" else "embedder"
            raise EmbedFailure(kind, f"Embedding failed: {error} (route {route.name}, {colour})") from None
        return dict(zip(calls, results))

    def _pinned(self, embed: RouteEmbed, raw: list[tuple[str, int]]) -> str | None:
        if not raw:
            return None
        return pinned_colour(raw, lambda colour, name: self._dimensions(embed, colour, name), COLOURS)

    def _pinnable(self, embed: RouteEmbed) -> bool:
        """Whether the two colours' vectors can differ in length (else raw vectors are not looked at)."""
        for vector in _vector_names(embed):
            blue, green = (self._dimensions(embed, colour, vector) for colour in COLOURS)
            if blue != green:
                return True
        return False

    def _dimensions(self, embed: RouteEmbed, colour: str, vector: str) -> int | None:
        name = embed.embedder_for(colour, vector)
        embedder = self.embedders.get(name) if name is not None else None
        return embedder.dimensions if embedder is not None else None


def _vector_names(embed: RouteEmbed) -> set[str]:
    names = set()
    for choice in (embed.blue, embed.green):
        names.update(choice if isinstance(choice, dict) else (UNNAMED,))
    return names
