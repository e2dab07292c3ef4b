"""Texts sent instead of vectors (Qdrant's `Document`) and raw dense vectors in a gRPC request message.

The gRPC twin of routing.documents, on Qdrant's protobuf messages: it walks any generated classes of
Qdrant's .proto files by their descriptors (it imports none of them). `find_message_vectors` finds
every Document in a vector position, with the vector name it is for, and the name and length of every
raw dense vector; `MessageVectors.fill` then puts a colour's embeddings in place of the Documents, in
the message itself (the caller serialises it), each written as qdrant-client writes a list of floats:
`dense { data: [...] }` of its `Vector` or `VectorInput`.

Vector positions are the `Vector` and `VectorInput` messages wherever they sit in a request:
`VectorInput` in the query API at every depth (nearest, recommend, discover, context, relevance
feedback, nearest with MMR; top level, every prefetch, every request of a batch), `Vector` in points'
vectors (upsert, update vectors, the upsert and update-vectors operations of a batch) and in the older
recommend and discover APIs' example vectors, which over gRPC can carry a Document too (REST's cannot).
The older search API's `vector` (a list of floats) is a raw vector. The vector name is the nearest
enclosing level's `using` (the search API's `vector_name`) or a `NamedVectors` key; else "" (UNNAMED).
Ids, sparse vectors, `Image` and `InferenceObject` are neither Documents nor dense vectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from routing.documents import UNNAMED, VECTOR_OPERATIONS, texts_by_vector

# Vector position message -> its oneof of vector kinds.
POSITIONS = {"Vector": "vector", "VectorInput": "variant"}
_NAME_FIELDS = ("using", "vector_name")  # a level's field naming the vector of the positions below it
_RAW_FIELD = "vector"  # the search API's raw vector: repeated float
_SPARSE_FIELD = "sparse_indices"  # set: the search API's `vector` holds a sparse vector's values

_SINGLE, _REPEATED, _MAP = 0, 1, 2


@dataclass(slots=True)
class MessageSite:
    """One Document: its `holder` (a Vector or VectorInput) gets a dense vector instead."""

    holder: Any
    vector: str  # vector name it is for (UNNAMED: the unnamed vector)
    text: str
    model: str  # as the client sent it; the colour's embedder decides, not this
    original: Any  # a copy of the Document, put back where a colour has no embedder for its vector


@dataclass(slots=True)
class MessageVectors:
    message: Any  # the parsed request, changed in place by `fill`
    sites: list[MessageSite] = field(default_factory=list)
    raw: list[tuple[str, int]] = field(default_factory=list)  # (vector name, length) of raw dense vectors

    def texts_by_vector(self) -> dict[str, list[str]]:
        """Texts per vector name, in site order (the order `fill` expects)."""
        return texts_by_vector(self.sites)

    def fill(self, vectors: dict[str, list[list[float]]]) -> None:
        """Each Document replaced by its vector (`vectors[name][i]`: the i-th Document for that vector
        name; a name missing from `vectors` keeps its Documents as sent). Every site is set on every
        call, so one parsed message serves each colour in turn."""
        taken: dict[str, int] = {}
        for site in self.sites:
            embedded = vectors.get(site.vector)
            if embedded is None:
                site.holder.document.CopyFrom(site.original)
                continue
            index = taken.get(site.vector, 0)
            taken[site.vector] = index + 1
            site.holder.dense.data[:] = embedded[index]  # replaces the Document: one kind per position


def find_message_vectors(operation: str, message: Any, passthrough_models: frozenset[str], with_raw: bool) -> MessageVectors | None:
    """The Documents (and, with `with_raw`, raw vector lengths) of a request message, or None when there
    is nothing: a method whose REST twin has no vector positions, or none of either kind in it."""
    if operation not in VECTOR_OPERATIONS:
        return None
    found = MessageVectors(message)
    _walk(message, UNNAMED, found, passthrough_models, with_raw)
    if not found.sites and not found.raw:
        return None
    return found


# ---------------------------------------------------------------- walking

@dataclass(frozen=True, slots=True)
class _Plan:
    """What of a message type is walked: its fields that can hold a vector position, nothing else."""

    name_field: str | None  # names the vector of the positions below (`using`, `vector_name`)
    raw_field: bool  # the search API's `vector`: a raw vector
    children: tuple[tuple[str, int, str | None], ...]  # (field, _SINGLE/_REPEATED/_MAP, its position's oneof or None)


_PLANS: dict[Any, _Plan] = {}


def _walk(message: Any, name: str, found: MessageVectors, passthrough: frozenset[str], with_raw: bool) -> None:
    plan = _PLANS.get(message.DESCRIPTOR) or _plan(message.DESCRIPTOR)
    if plan.name_field is not None:
        name = getattr(message, plan.name_field)
    if plan.raw_field and with_raw:
        raw = getattr(message, _RAW_FIELD)
        if raw and not message.HasField(_SPARSE_FIELD):
            found.raw.append((name, len(raw)))
    for field_name, shape, oneof in plan.children:
        if shape == _SINGLE:
            if not message.HasField(field_name):
                continue
            items = ((name, getattr(message, field_name)),)
        elif shape == _REPEATED:
            items = ((name, item) for item in getattr(message, field_name))
        else:
            items = getattr(message, field_name).items()  # a NamedVectors map: its key names the vector
        for item_name, item in items:
            if oneof is None:
                _walk(item, item_name, found, passthrough, with_raw)
            else:
                _position(item, oneof, item_name, found, passthrough, with_raw)


def _position(holder: Any, oneof: str, name: str, found: MessageVectors, passthrough: frozenset[str], with_raw: bool) -> None:
    kind = holder.WhichOneof(oneof)
    if kind == "document":
        document = holder.document
        if document.model.lower() not in passthrough:
            original = type(document)()
            original.CopyFrom(document)
            found.sites.append(MessageSite(holder, name, document.text, document.model, original))
    elif not with_raw:
        return
    elif kind == "dense":
        found.raw.append((name, len(holder.dense.data)))
    elif kind == "multi_dense":
        found.raw.extend((name, len(row.data)) for row in holder.multi_dense.vectors)  # each row has the vector's size
    elif kind is None and oneof == POSITIONS["Vector"] and holder.data and not holder.HasField("indices"):
        # The deprecated form: `data`, flattened rows when `vectors_count` is set (a multivector).
        rows = holder.vectors_count if holder.HasField("vectors_count") and holder.vectors_count else 1
        found.raw.append((name, len(holder.data) // rows))


def _plan(descriptor: Any) -> _Plan:
    fields = descriptor.fields_by_name
    children = []
    for child in descriptor.fields:
        target = child.message_type
        if target is None or not _reaches_position(target):
            continue
        if target.GetOptions().map_entry:
            value = target.fields_by_name["value"].message_type
            children.append((child.name, _MAP, POSITIONS.get(value.name)))
        else:
            children.append((child.name, _REPEATED if child.is_repeated else _SINGLE, POSITIONS.get(target.name)))
    plan = _Plan(
        name_field=next((name for name in _NAME_FIELDS if name in fields), None),
        raw_field=_has_raw_field(descriptor),
        children=tuple(children),
    )
    _PLANS[descriptor] = plan
    return plan


def _has_raw_field(descriptor: Any) -> bool:
    """The search API's request: its `vector` is a list of floats (sparse when `sparse_indices` is set)."""
    fields = descriptor.fields_by_name
    raw = fields.get(_RAW_FIELD)
    return raw is not None and raw.is_repeated and raw.type == FieldDescriptor.TYPE_FLOAT and _SPARSE_FIELD in fields


_REACHES: dict[Any, bool] = {}


def _reaches_position(descriptor: Any) -> bool:
    """Whether a message of this type is, or can hold, a vector position or the search API's raw vector
    (payloads and filters cannot)."""
    known = _REACHES.get(descriptor)
    if known is not None:
        return known
    seen, stack = {descriptor}, [descriptor]
    reaches = False
    while stack and not reaches:
        current = stack.pop()
        reaches = current.name in POSITIONS or _has_raw_field(current)
        for child in current.fields:
            if child.message_type is not None and child.message_type not in seen:
                seen.add(child.message_type)
                stack.append(child.message_type)
    _REACHES[descriptor] = reaches
    return reaches
