"""routing.grpc_methods against Qdrant's own gRPC schema: every method decided, names where the table says."""
from __future__ import annotations

from proxy.grpc_schema import METHODS, points_pb2
from routing.grpc_methods import GRPC_METHODS, LOOKUP_FIELDS
from routing.operations import READ_OPERATIONS, Kind


def test_every_method_is_decided_and_names_sit_where_the_table_says():
    assert set(GRPC_METHODS) == set(METHODS) and len(GRPC_METHODS) == 51
    for path, method in GRPC_METHODS.items():
        fields = METHODS[path].request.DESCRIPTOR.fields_by_name
        assert ("collection_name" in fields) == method.about_collection, path
        if method.batch is not None:
            inner = fields[method.batch]
            assert inner.is_repeated and "collection_name" in inner.message_type.fields_by_name, path


def test_methods_take_their_rest_twins_operation_and_kind():
    expected = {
        "/qdrant.Points/Query": ("query", Kind.READ), "/qdrant.Points/SearchBatch": ("search_batch", Kind.READ),
        "/qdrant.Points/Get": ("retrieve", Kind.READ), "/qdrant.Points/Upsert": ("upsert", Kind.WRITE),
        "/qdrant.Points/UpdateBatch": ("batch", Kind.WRITE), "/qdrant.Points/CreateFieldIndex": ("create_index", Kind.ADMIN),
        "/qdrant.Collections/Get": ("collection_info", Kind.INFO), "/qdrant.Collections/Delete": ("delete_collection", Kind.ADMIN),
        "/qdrant.Collections/CollectionExists": ("collection_exists", Kind.INFO),
        "/qdrant.Snapshots/Create": ("snapshots", Kind.ADMIN), "/qdrant.Collections/List": ("passthrough", None),
    }
    for path, (operation, kind) in expected.items():
        assert (GRPC_METHODS[path].operation, GRPC_METHODS[path].kind) == (operation, kind), path
    reads = {m.operation for m in GRPC_METHODS.values() if m.kind is Kind.READ}
    assert reads == READ_OPERATIONS  # every REST read has its gRPC twin
    assert GRPC_METHODS["/qdrant.Snapshots/List"].write  # a snapshot holds every point, as on REST
    assert not GRPC_METHODS["/qdrant.Points/Search"].write and GRPC_METHODS["/qdrant.Collections/UpdateAliases"].write
    assert [m.path for m in GRPC_METHODS.values() if m.probe] == ["/qdrant.Qdrant/HealthCheck"]


def test_lookup_fields_are_qdrants():
    for message, field in LOOKUP_FIELDS.items():
        assert field in getattr(points_pb2, message).DESCRIPTOR.fields_by_name
