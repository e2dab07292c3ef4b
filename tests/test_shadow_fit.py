"""Which searches can be sent as they are to the other colour: raw vectors against its vector sizes."""
from __future__ import annotations

import pytest

from routing.vector_sizes import fits, raw_vectors, vector_sizes

V3 = [0.1, 0.2, 0.3]
V2 = [0.5, 0.5]


@pytest.mark.parametrize("operation, body, expected", [
    ("query", {"query": V3, "limit": 5}, [("", 3)]),
    ("query", {"query": {"nearest": V3}, "using": "dense"}, [("dense", 3)]),
    ("query", {"query": 17}, []),  # a point id
    ("query", {"query": {"text": "hello", "model": "m"}}, []),  # text for the upstream to embed
    ("query", {"query": {"indices": [1, 7], "values": [0.2, 0.4]}, "using": "sparse"}, []),
    ("query", {"query": [V2, V2]}, [("", 2), ("", 2)]),  # a multivector
    ("query", {"prefetch": [{"query": V3, "using": "a"}, {"prefetch": {"query": V2, "using": "b"}}],
               "query": {"fusion": "rrf"}}, [("a", 3), ("b", 2)]),
    ("query", {"query": {"recommend": {"positive": [1, V3], "negative": [V3]}}}, [("", 3), ("", 3)]),
    ("query", {"query": {"discover": {"target": V3, "context": [{"positive": V2, "negative": 4}]}}}, [("", 3), ("", 2)]),
    ("query", {"query": {"context": {"positive": V2, "negative": V2}}}, [("", 2), ("", 2)]),
    ("query", {"query": {"relevance_feedback": {"target": V3, "feedback": [{"example": V2, "score": 1}]}}},
     [("", 3), ("", 2)]),
    ("search", {"vector": V3, "limit": 3}, [("", 3)]),
    ("search", {"vector": {"name": "dense", "vector": V2}}, [("dense", 2)]),
    ("recommend", {"positive": [1, 2, 3], "using": "dense"}, []),  # ids, not a vector of three
    ("recommend", {"positive": [V3], "negative": [5]}, [("", 3)]),
    ("discover", {"target": 5, "context": [{"positive": V3, "negative": 2}]}, [("", 3)]),
    ("query_batch", {"searches": [{"query": V3}, {"query": V2, "using": "small"}]}, [("", 3), ("small", 2)]),
    ("search_batch", {"searches": [{"vector": V3}]}, [("", 3)]),
])
def test_raw_vectors_in_every_position(operation, body, expected):
    assert raw_vectors(operation, body) == expected


def test_vector_sizes_from_collection_info():
    unnamed = {"config": {"params": {"vectors": {"size": 384, "distance": "Cosine"}}}}
    named = {"config": {"params": {"vectors": {"dense": {"size": 1024, "distance": "Dot"}}, "sparse_vectors": {}}}}
    assert vector_sizes(unnamed) == {"": 384}
    assert vector_sizes(named) == {"dense": 1024}
    assert vector_sizes({"status": "green"}) is None


def test_fits_needs_the_name_and_the_size():
    assert fits([("", 3)], {"": 3})
    assert fits([], {"": 3})  # ids and text only: nothing to check
    assert not fits([("", 3)], {"": 1024})
    assert not fits([("dense", 3)], {"": 3})


# ---------------------------------------------------------------- the same over gRPC (proxy.dataplane.grpc_vectors)

def _dense(values):
    from qdrant_client import grpc as q

    return q.VectorInput(dense=q.DenseVector(data=values))


def _grpc_cases():
    from qdrant_client import grpc as q

    return [
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(nearest=_dense(V3)), limit=5), [("", 3)]),
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(nearest=_dense(V3)), using="dense"), [("dense", 3)]),
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(nearest=q.VectorInput(id=q.PointId(num=17)))), []),
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(nearest=q.VectorInput(
            document=q.Document(text="hello", model="m")))), []),
        ("Query", q.QueryPoints(collection_name="c", using="sparse", query=q.Query(nearest=q.VectorInput(
            sparse=q.SparseVector(indices=[1, 7], values=[0.2, 0.4])))), []),
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(nearest=q.VectorInput(multi_dense=q.MultiDenseVector(
            vectors=[q.DenseVector(data=V2), q.DenseVector(data=V2)])))), [("", 2), ("", 2)]),
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(fusion=q.Fusion.RRF), prefetch=[
            q.PrefetchQuery(query=q.Query(nearest=_dense(V3)), using="a"),
            q.PrefetchQuery(prefetch=[q.PrefetchQuery(query=q.Query(nearest=_dense(V2)), using="b")]),
            q.PrefetchQuery(query=q.Query(nearest=_dense(V2))),  # no `using` of its own: the unnamed vector
        ], using="outer"), [("a", 3), ("b", 2), ("", 2)]),
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(recommend=q.RecommendInput(
            positive=[q.VectorInput(id=q.PointId(num=1)), _dense(V3)], negative=[_dense(V3)]))), [("", 3), ("", 3)]),
        ("Query", q.QueryPoints(collection_name="c", query=q.Query(discover=q.DiscoverInput(
            target=_dense(V3), context=q.ContextInput(pairs=[q.ContextInputPair(positive=_dense(V2), negative=q.VectorInput(
                id=q.PointId(num=4)))])))), [("", 3), ("", 2)]),
        ("Query", q.QueryPoints(collection_name="c", lookup_from=q.LookupLocation(collection_name="o", vector_name="x"),
                                query=q.Query(nearest=q.VectorInput(id=q.PointId(num=3)))), []),
        ("Search", q.SearchPoints(collection_name="c", vector=V3, limit=3), [("", 3)]),
        ("Search", q.SearchPoints(collection_name="c", vector=V2, vector_name="dense"), [("dense", 2)]),
        ("Search", q.SearchPoints(collection_name="c", vector=[0.2, 0.4], sparse_indices=q.SparseIndices(data=[1, 7])), []),
        ("Recommend", q.RecommendPoints(collection_name="c", positive=[q.PointId(num=1)], using="dense"), []),
        ("Recommend", q.RecommendPoints(collection_name="c", positive_vectors=[q.Vector(data=V3)],
                                        negative_vectors=[q.Vector(dense=q.DenseVector(data=V3))]), [("", 3), ("", 3)]),
        ("Recommend", q.RecommendPoints(collection_name="c", positive_vectors=[q.Vector(data=V2 + V2, vectors_count=2)]),
         [("", 2), ("", 2)]),  # a multivector, flat (deprecated form)
        ("Discover", q.DiscoverPoints(collection_name="c", target=q.TargetVector(single=q.VectorExample(id=q.PointId(num=5))),
                                      context=[q.ContextExamplePair(positive=q.VectorExample(vector=q.Vector(data=V3)),
                                                                    negative=q.VectorExample(id=q.PointId(num=2)))]), [("", 3)]),
        ("QueryBatch", q.QueryBatchPoints(collection_name="c", query_points=[
            q.QueryPoints(collection_name="c", query=q.Query(nearest=_dense(V3))),
            q.QueryPoints(collection_name="c", query=q.Query(nearest=_dense(V2)), using="small"),
        ]), [("", 3), ("small", 2)]),
        ("SearchGroups", q.SearchPointGroups(collection_name="c", vector=V3, group_by="g", limit=2, group_size=1), [("", 3)]),
    ]


@pytest.mark.parametrize("case", range(len(_grpc_cases())))
def test_raw_vectors_in_every_grpc_position(case):
    """Built with qdrant-client's messages, read as the face reads the bytes: with the proxy's own schema."""
    from proxy.dataplane.grpc_vectors import raw_vectors as grpc_raw_vectors
    from proxy.grpc_schema import METHODS

    method, request, expected = _grpc_cases()[case]
    parsed = METHODS[f"/qdrant.Points/{method}"].request.FromString(request.SerializeToString())
    assert grpc_raw_vectors(parsed) == expected
