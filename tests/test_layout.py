"""routing/layout.py: the walk over a collection's vector layout, as Qdrant's info documents give it."""
from __future__ import annotations

from routing.layout import dense_sizes, is_unnamed, vector_names, vector_params, vectors_of

UNNAMED_INFO = {"status": "green", "config": {"params": {"vectors": {"size": 384, "distance": "Cosine"}}}}
NAMED_INFO = {"config": {"params": {
    "vectors": {"title": {"size": 4, "distance": "Euclid"}, "dense": {"size": 1024, "distance": "Dot", "multivector_config": {}}},
    "sparse_vectors": {"bm25": {"modifier": "idf"}},
}}}


def test_unnamed_and_named_layouts():
    unnamed, named = vectors_of(UNNAMED_INFO), vectors_of(NAMED_INFO)
    assert is_unnamed(unnamed) and not is_unnamed(named)
    assert vector_names(unnamed) == [""] and vector_names(named) == ["dense", "title"]
    assert vector_params(unnamed, "")["distance"] == "Cosine" and vector_params(named, "title")["size"] == 4
    assert dense_sizes(unnamed) == {"": 384} and dense_sizes(named) == {"dense": 1024, "title": 4}


def test_documents_that_do_not_say():
    for info in (None, [], {}, {"config": None}, {"config": []}, {"config": {"params": None}}, {"config": {"params": {}}}):
        assert vectors_of(info) is None
        assert dense_sizes(vectors_of(info)) == {} and vector_names(vectors_of(info)) == []
    assert not is_unnamed({"size": "384"})  # a size that is not a number is no vector
    assert dense_sizes({"a": {"size": None}, "b": "junk", "c": {"size": 3}}) == {"c": 3}
