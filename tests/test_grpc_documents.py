"""routing.grpc_documents on Qdrant's messages (the proxy's generated classes, as the gRPC face parses
them): every Document position of every method found with its vector name and replaced by a dense
vector, the result equal to what qdrant-client's own converters write for the same request with
vectors, and the raw dense vectors' lengths for pinning."""
from __future__ import annotations

import pytest
from qdrant_client import grpc as qgrpc
from qdrant_client import models
from qdrant_client.conversions.conversion import RestToGrpc

from proxy.grpc_schema import METHODS, points_pb2
from routing.grpc_documents import POSITIONS, find_message_vectors
from routing.grpc_methods import GRPC_METHODS
from tests.test_grpc_transport import UNKNOWN_FIELD

# Qdrant's gRPC notes, method by method: how many places a Document can sit in its request.
DOCUMENT_POSITIONS = {
    "Upsert": 2, "UpdateVectors": 2, "Recommend": 2, "RecommendBatch": 2, "RecommendGroups": 2, "Discover": 3,
    "DiscoverBatch": 3, "UpdateBatch": 4, "Query": 22, "QueryBatch": 22, "QueryGroups": 22,
}
MAP_KEY = "named"


def position_paths(descriptor, on_path=()):
    """Every path (field name, shape) from a message type to a Vector or VectorInput; no type twice on a
    path (a prefetch inside a prefetch is the same positions again)."""
    on_path = on_path + (descriptor,)
    for field in descriptor.fields:
        target = field.message_type
        if target is None:
            continue
        if target.GetOptions().map_entry:
            if target.fields_by_name["value"].message_type.name in POSITIONS:
                yield ((field.name, "map"),)
            continue
        step = (field.name, "repeated" if field.is_repeated else "single")
        if target.name in POSITIONS:
            yield (step,)
        elif target not in on_path:
            for rest in position_paths(target, on_path):
                yield (step, *rest)


def with_document_at(request_class, path, text: str):
    """A request with one Document at `path`, every level's `using` set to a name of its own; returns
    (request, the position, the vector name the Document is for)."""
    request = holder = request_class()
    name = ""
    for depth, (field, shape) in enumerate(path):
        if "using" in holder.DESCRIPTOR.fields_by_name:
            holder.using = name = f"level{depth}"
        if shape == "repeated":
            holder = getattr(holder, field).add()
        elif shape == "map":
            holder, name = getattr(holder, field)[MAP_KEY], MAP_KEY
        else:
            holder = getattr(holder, field)
    holder.document.text = text
    holder.document.model = "sentence-transformers/all-minilm-l6-v2"
    return request, holder, name


def test_every_document_position_of_every_method_is_found_named_and_replaced():
    counted = {}
    for path_name, spec in GRPC_METHODS.items():
        request_class = METHODS[path_name].request
        paths = list(position_paths(request_class.DESCRIPTOR))
        if paths:
            counted[path_name.rsplit("/", 1)[1]] = len(paths)
        for path in paths:
            request, holder, name = with_document_at(request_class, path, "where is Paris")
            sent = request.SerializeToString()
            found = find_message_vectors(spec.operation, request, frozenset(), True)
            assert found is not None, (path_name, path)
            assert [(site.vector, site.text) for site in found.sites] == [(name, "where is Paris")], (path_name, path)
            assert found.raw == [] and found.texts_by_vector() == {name: ["where is Paris"]}
            found.fill({name: [[0.25, 0.5, 0.75]]})
            assert holder.WhichOneof(POSITIONS[holder.DESCRIPTOR.name]) == "dense" and list(holder.dense.data) == [0.25, 0.5, 0.75]
            again = request_class.FromString(request.SerializeToString())
            assert find_message_vectors(spec.operation, again, frozenset(), True).raw == [(name, 3)], (path_name, path)
            found.fill({})  # a colour without an embedder for this vector: the Document as sent
            assert request.SerializeToString() == sent, (path_name, path)
    assert counted == DOCUMENT_POSITIONS


def test_filled_requests_equal_what_qdrant_client_writes_for_the_same_vectors():
    def document(text):
        return models.Document(text=text, model="any")

    vectors = {"first": [0.1, 0.2, 0.3], "second": [0.4, 0.5, 0.6], "third": [0.7, 0.8, 0.9]}

    def query(nearest, positive):
        return models.QueryRequest(
            prefetch=[models.Prefetch(query=models.NearestQuery(nearest=nearest), using="dense", limit=5)],
            query=models.RecommendQuery(recommend=models.RecommendInput(positive=[positive, 7])),
            filter=models.Filter(must=[models.FieldCondition(key="text", match=models.MatchText(text="Paris"))]),
            limit=3,
        )

    def upsert(first, second, third):
        points = [models.PointStruct(id=1, vector=first, payload={"text": "first"}),
                  models.PointStruct(id=2, vector={"dense": second, "title": third})]
        return qgrpc.UpsertPoints(collection_name="docs", points=[RestToGrpc.convert_point_struct(p) for p in points])

    cases = [
        ("/qdrant.Points/Query",
         RestToGrpc.convert_query_request(query(document("first"), document("second")), "docs"),
         RestToGrpc.convert_query_request(query(vectors["first"], vectors["second"]), "docs"),
         {"dense": [vectors["first"]], "": [vectors["second"]]}),
        ("/qdrant.Points/Upsert",
         upsert(document("first"), document("second"), document("third")),
         upsert(vectors["first"], vectors["second"], vectors["third"]),
         {"": [vectors["first"]], "dense": [vectors["second"]], "title": [vectors["third"]]}),
    ]
    for path, with_text, with_vectors, embedded in cases:
        spec = GRPC_METHODS[path]
        request = METHODS[path].request.FromString(with_text.SerializeToString() + UNKNOWN_FIELD)
        found = find_message_vectors(spec.operation, request, frozenset(), False)
        assert found.texts_by_vector() == {name: [text for text, vector in vectors.items() if vector in each]
                                           for name, each in embedded.items()}
        found.fill(embedded)
        sent = request.SerializeToString()
        assert sent.endswith(UNKNOWN_FIELD)  # a field this schema does not know goes up as sent
        assert type(with_vectors).FromString(sent[:-len(UNKNOWN_FIELD)]) == with_vectors, path


def test_documents_of_models_qdrant_embeds_itself_are_left_as_sent():
    request = points_pb2.QueryPoints(
        collection_name="docs",
        prefetch=[
            points_pb2.PrefetchQuery(query=points_pb2.Query(nearest=points_pb2.VectorInput(
                document=points_pb2.Document(text="sparse words", model="Qdrant/BM25"))), using="bm25"),
            points_pb2.PrefetchQuery(query=points_pb2.Query(nearest=points_pb2.VectorInput(
                document=points_pb2.Document(text="dense words", model="any")))),
        ],
    )
    found = find_message_vectors("query", request, frozenset({"qdrant/bm25"}), True)
    assert [(site.vector, site.text) for site in found.sites] == [("", "dense words")]
    assert find_message_vectors("query", points_pb2.QueryPoints(
        collection_name="docs", query=points_pb2.Query(nearest=points_pb2.VectorInput(
            document=points_pb2.Document(text="sparse words", model="qdrant/bm25")))), frozenset({"qdrant/bm25"}), False) is None


def dense(values):
    return points_pb2.DenseVector(data=values)


@pytest.mark.parametrize("operation, request_, raw", [
    ("query", points_pb2.QueryPoints(query=points_pb2.Query(nearest=points_pb2.VectorInput(dense=dense([0.1] * 6)))), [("", 6)]),
    ("query", points_pb2.QueryPoints(using="title", query=points_pb2.Query(nearest=points_pb2.VectorInput(
        multi_dense=points_pb2.MultiDenseVector(vectors=[dense([0.1] * 3), dense([0.2] * 3)])))), [("title", 3), ("title", 3)]),
    ("query", points_pb2.QueryPoints(query=points_pb2.Query(nearest=points_pb2.VectorInput(
        sparse=points_pb2.SparseVector(values=[0.5], indices=[3])))), None),
    ("query", points_pb2.QueryPoints(query=points_pb2.Query(nearest=points_pb2.VectorInput(id={"num": 7}))), None),
    ("search", points_pb2.SearchPoints(vector=[0.1] * 4, vector_name="dense"), [("dense", 4)]),
    ("search", points_pb2.SearchPoints(vector=[0.5], sparse_indices=points_pb2.SparseIndices(data=[3])), None),
    ("search_batch", points_pb2.SearchBatchPoints(search_points=[points_pb2.SearchPoints(vector=[0.1] * 4)]), [("", 4)]),
    ("recommend", points_pb2.RecommendPoints(using="dense", positive_vectors=[points_pb2.Vector(dense=dense([0.1] * 5))]), [("dense", 5)]),
    ("discover", points_pb2.DiscoverPoints(target=points_pb2.TargetVector(single=points_pb2.VectorExample(
        vector=points_pb2.Vector(data=[0.1] * 8)))), [("", 8)]),  # the deprecated flat form
    ("upsert", points_pb2.UpsertPoints(points=[points_pb2.PointStruct(vectors=points_pb2.Vectors(
        vector=points_pb2.Vector(data=[0.1] * 6, vectors_count=2)))]), [("", 3)]),  # deprecated: 2 rows of 3
    ("upsert", points_pb2.UpsertPoints(points=[points_pb2.PointStruct(vectors=points_pb2.Vectors(vectors=points_pb2.NamedVectors(
        vectors={"dense": points_pb2.Vector(dense=dense([0.1] * 4))})))]), [("dense", 4)]),
    ("scroll", points_pb2.ScrollPoints(collection_name="docs"), None),  # no vector positions
])
def test_raw_dense_vectors_are_reported_with_their_name_and_length(operation, request_, raw):
    found = find_message_vectors(operation, request_, frozenset(), True)
    assert (found.raw if found is not None else None) == raw
    assert find_message_vectors(operation, request_, frozenset(), False) is None  # not asked for raw vectors
