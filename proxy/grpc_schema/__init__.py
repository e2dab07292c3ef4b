"""Qdrant's gRPC messages for the proxy's gRPC face, and the table of its 51 methods.

The messages are generated (`python -m proxy.grpc_schema.generate`) from Qdrant's own .proto files in
`proto/` (from qdrant-client 1.20.0, Apache-2.0; see proto/NOTICE) under the proto package
`bluegreen.qdrant`, so they never collide with qdrant-client's `qdrant.*` messages in one process.
Protobuf's wire format carries field numbers only, so these messages read and write exactly the bytes
Qdrant and its clients do, unknown (newer) fields included. Method paths are Qdrant's own
(`/qdrant.Points/Query`): `METHODS` maps each to its request and response classes.
"""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from proxy.grpc_schema.generated import (
    collections_pb2,
    collections_service_pb2,
    json_with_int_pb2,
    points_pb2,
    points_service_pb2,
    qdrant_common_pb2,
    qdrant_pb2,
    snapshots_service_pb2,
)

__all__ = [
    "METHODS", "QDRANT_PACKAGE", "Method",
    "collections_pb2", "json_with_int_pb2", "points_pb2", "qdrant_common_pb2", "qdrant_pb2",
]

# The proto package Qdrant serves its services under: the first part of every method path.
QDRANT_PACKAGE = "qdrant"
_SERVICE_MODULES = (points_service_pb2, collections_service_pb2, snapshots_service_pb2, qdrant_pb2)


@dataclass(frozen=True, slots=True)
class Method:
    """One unary gRPC method of Qdrant: `/qdrant.{service}/{name}`."""

    path: str
    service: str
    name: str
    request: type[Message]
    response: type[Message]


def _methods() -> dict[str, Method]:
    table = {}
    for module in _SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{QDRANT_PACKAGE}.{service.name}/{method.name}"
                table[path] = Method(path, service.name, method.name,
                                     GetMessageClass(method.input_type), GetMessageClass(method.output_type))
    return table


# Method path (as on the wire) -> its messages; the four services Points, Collections, Snapshots, Qdrant.
METHODS: dict[str, Method] = _methods()
