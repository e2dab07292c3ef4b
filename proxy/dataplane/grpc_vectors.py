"""The raw vectors of a parsed gRPC search request, as `routing.vector_sizes.raw_vectors` reads them from a
REST body: (vector name, length) of each, for the shadow's check that a request fits the other colour.

Pure. A raw vector is a `DenseVector` (a `MultiDenseVector` is one per row), a `Vector`'s deprecated
flat `data` (`vectors_count` rows of equal length) or the `vector` of `SearchPoints` /
`SearchPointGroups`; sparse vectors, ids and text are not raw vectors. Its vector name is the `using`
(`vector_name` for the search methods) of the nearest search level above it (the request, a prefetch,
each request of a batch), "" when that level names none, as Qdrant reads it.
"""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_NAMING_FIELDS = ("using", "vector_name")
_FLAT_SEARCH = frozenset({"SearchPoints", "SearchPointGroups"})  # `vector` + `vector_name` + `sparse_indices`


def raw_vectors(message: Message) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    _walk(message, "", found)
    return found


def _walk(message: Message, name: str, found: list[tuple[str, int]]) -> None:
    descriptor = message.DESCRIPTOR
    kind = descriptor.name
    if kind == "LookupLocation":
        return  # its `vector_name` is the lookup collection's; it holds ids, never vectors
    fields = descriptor.fields_by_name
    for naming in _NAMING_FIELDS:
        if naming in fields:
            name = getattr(message, naming)
    if kind == "DenseVector":
        if message.data:
            found.append((name, len(message.data)))
        return
    if kind == "Vector" and message.data and not message.HasField("indices"):
        rows = message.vectors_count if message.HasField("vectors_count") and message.vectors_count > 0 else 1
        found.extend([(name, len(message.data) // rows)] * rows)
    elif kind in _FLAT_SEARCH and message.vector and not message.HasField("sparse_indices"):
        found.append((name, len(message.vector)))
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.GetOptions().map_entry:
            continue
        for child in (value if field.is_repeated else (value,)):
            _walk(child, name, found)
