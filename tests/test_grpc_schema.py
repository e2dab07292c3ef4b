"""proxy.grpc_schema: Qdrant's gRPC messages under our own proto package, byte-compatible with qdrant-client's."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2
from qdrant_client import grpc as client_grpc

from proxy import grpc_schema
from proxy.grpc_schema import METHODS, points_pb2
from tests.support import REPO_ROOT

QDRANT_CLIENT_VERSION = importlib.metadata.version("qdrant-client")
CLIENT_SERVICES = ("points_service_pb2", "collections_service_pb2", "snapshots_service_pb2", "qdrant_pb2")


def client_methods() -> dict[str, tuple[str, str]]:
    """Every method qdrant-client's own descriptors declare: path -> (request, response) full names."""
    import importlib

    table = {}
    for name in CLIENT_SERVICES:
        module = importlib.import_module(f"qdrant_client.grpc.{name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                table[f"/{service.full_name}/{method.name}"] = (method.input_type.full_name, method.output_type.full_name)
    return table


def client_query_with_document() -> client_grpc.QueryPoints:
    return client_grpc.QueryPoints(
        collection_name="docs",
        query=client_grpc.Query(nearest=client_grpc.VectorInput(
            document=client_grpc.Document(text="what is a vector database", model="sentence-transformers/all-minilm-l6-v2"),
        )),
        prefetch=[client_grpc.PrefetchQuery(
            query=client_grpc.Query(nearest=client_grpc.VectorInput(dense=client_grpc.DenseVector(data=[0.25, -1.5, 3.0]))),
            limit=50,
            filter=client_grpc.Filter(must=[client_grpc.Condition(field=client_grpc.FieldCondition(
                key="lang", match=client_grpc.Match(keyword="en")))]),
        )],
        limit=7,
        with_payload=client_grpc.WithPayloadSelector(enable=True),
        lookup_from=client_grpc.LookupLocation(collection_name="other", vector_name="v"),
    )


def client_search_batch() -> client_grpc.SearchBatchPoints:
    searches = [
        client_grpc.SearchPoints(collection_name="docs", vector=[1.0, 0.0, 0.5], limit=3, score_threshold=0.1,
                                 with_payload=client_grpc.WithPayloadSelector(include=client_grpc.PayloadIncludeSelector(fields=["n"]))),
        client_grpc.SearchPoints(collection_name="docs", vector=[0.0, 1.0, 0.5], limit=5, offset=2),
    ]
    return client_grpc.SearchBatchPoints(collection_name="docs", search_points=searches, timeout=30)


def client_upsert() -> client_grpc.UpsertPoints:
    payload = {
        "n": client_grpc.Value(integer_value=12),
        "tags": client_grpc.Value(list_value=client_grpc.ListValue(values=[client_grpc.Value(string_value="a")])),
        "nested": client_grpc.Value(struct_value=client_grpc.Struct(fields={"x": client_grpc.Value(double_value=0.5)})),
    }
    point = client_grpc.PointStruct(
        id=client_grpc.PointId(uuid="5c56c793-69f3-4fbf-87e6-c4bf54c28c26"),
        vectors=client_grpc.Vectors(vector=client_grpc.Vector(
            document=client_grpc.Document(text="hello", model="m"))),
        payload=payload,
    )
    return client_grpc.UpsertPoints(collection_name="docs", wait=True, points=[point])


@pytest.mark.parametrize("build", [client_query_with_document, client_search_batch, client_upsert])
def test_client_bytes_parse_and_reserialise_identically(build):
    client_message = build()
    wire = client_message.SerializeToString(deterministic=True)
    ours = getattr(points_pb2, type(client_message).DESCRIPTOR.name).FromString(wire)
    assert ours.SerializeToString(deterministic=True) == wire
    # and back: what we write, qdrant-client reads as the message it sent
    again = type(client_message)()
    again.ParseFromString(ours.SerializeToString())
    assert again == client_message
    assert ours.collection_name == "docs"


def test_document_text_is_readable_in_our_messages():
    ours = points_pb2.QueryPoints.FromString(client_query_with_document().SerializeToString())
    assert ours.query.nearest.document.text == "what is a vector database"
    assert ours.lookup_from.collection_name == "other"
    assert list(ours.prefetch[0].query.nearest.dense.data) == [0.25, -1.5, 3.0]


def test_a_field_this_schema_does_not_know_survives_parse_and_serialise():
    known = client_search_batch().SerializeToString()
    # field 4000, wire type 2 (length-delimited), 5 bytes: what a newer client might send
    unknown = bytes([0x82, 0xFA, 0x01, 0x05]) + b"later"
    ours = points_pb2.SearchBatchPoints.FromString(known + unknown)
    assert ours.collection_name == "docs"
    assert ours.SerializeToString() == known + unknown
    ours.collection_name = "docs_v2"  # a rewrite keeps the unknown field too
    rewritten = ours.SerializeToString()
    assert rewritten.endswith(unknown)
    assert client_grpc.SearchBatchPoints.FromString(rewritten).collection_name == "docs_v2"


def test_method_table_is_qdrants_51_methods_with_the_same_messages():
    expected = client_methods()
    assert len(METHODS) == 51 and set(METHODS) == set(expected)
    services = {method.service for method in METHODS.values()}
    assert services == {"Points", "Collections", "Snapshots", "Qdrant"}
    for path, method in METHODS.items():
        request, response = expected[path]
        assert method.request.DESCRIPTOR.full_name == "bluegreen." + request
        assert method.response.DESCRIPTOR.full_name == "bluegreen." + response
        assert path == f"/qdrant.{method.service}/{method.name}"
    assert METHODS["/qdrant.Points/Query"].request is points_pb2.QueryPoints
    assert METHODS["/qdrant.Points/Query"].response is points_pb2.QueryResponse
    assert METHODS["/qdrant.Qdrant/HealthCheck"].response is grpc_schema.qdrant_pb2.HealthCheckReply
    assert METHODS["/qdrant.Collections/UpdateAliases"].request is grpc_schema.collections_pb2.ChangeAliases


def _normalised(file_proto: descriptor_pb2.FileDescriptorProto) -> bytes:
    """A file descriptor with our package and paths put back to Qdrant's, options dropped (protoc versions differ there)."""
    text = str(file_proto).replace("bluegreen/qdrant/", "").replace("bluegreen.qdrant", "qdrant")
    from google.protobuf import text_format

    normal = text_format.Parse(text, descriptor_pb2.FileDescriptorProto())
    normal.ClearField("options")
    return normal.SerializeToString(deterministic=True)


@pytest.mark.skipif(QDRANT_CLIENT_VERSION != "1.20.0",
                    reason=f"the vendored protos are qdrant-client 1.20.0's; {QDRANT_CLIENT_VERSION} is installed")
@pytest.mark.parametrize("module", ["collections_pb2", "json_with_int_pb2", "points_pb2", "qdrant_common_pb2", "qdrant_pb2",
                                    "points_service_pb2", "collections_service_pb2", "snapshots_service_pb2"])
def test_generated_schema_is_qdrant_client_1_20s_schema(module):
    import importlib

    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    importlib.import_module(f"proxy.grpc_schema.generated.{module}").DESCRIPTOR.CopyToProto(ours)
    importlib.import_module(f"qdrant_client.grpc.{module}").DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == "bluegreen.qdrant" and ours.name.startswith("bluegreen/qdrant/")
    assert _normalised(ours) == _normalised(theirs)


@pytest.mark.parametrize("order", [
    "import proxy.grpc_schema; import qdrant_client.grpc; from qdrant_client import QdrantClient",
    "import qdrant_client.grpc; from qdrant_client.conversions.conversion import GrpcToRest; import proxy.grpc_schema",
])
def test_both_schemas_import_into_one_process_in_either_order(order):
    check = (
        f"{order}\n"
        "import collections, sys\n"
        "assert collections.OrderedDict, 'stdlib collections shadowed'\n"
        "assert not [m for m in sys.modules if m.endswith('_pb2') and '.' not in m], 'a generated module imported by a bare name'\n"
        "from proxy.grpc_schema import METHODS, points_pb2\n"
        "from qdrant_client import grpc\n"
        "assert points_pb2.QueryPoints is not grpc.QueryPoints\n"
        "assert points_pb2.QueryPoints.__module__ == 'proxy.grpc_schema.generated.points_pb2'\n"
        "print(len(METHODS))\n"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "51"
