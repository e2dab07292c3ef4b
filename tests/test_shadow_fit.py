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
