"""Whether a search can be sent as it is to the other colour: its raw vectors against that colour's
vector sizes. Pure (the I/O side reads the sizes from the upstream's collection info).

A raw vector is a list of numbers in a vector position of a search body (a multivector is a list
of such lists); ids, sparse vectors and text (`{"text": ...}`) are not raw vectors. Its vector name
is the level's `using` (query, recommend, discover), the search API's `{"name": ..., "vector": [...]}`,
or "" for the collection's unnamed vector. Positions: `query` (and inside it `nearest`, `recommend`,
`discover`, `context`, `relevance_feedback`), `vector`, `positive[]`, `negative[]`, `target`,
`context[]`, `feedback[].example`, at the top level, in every nested `prefetch` and in each
`searches[]` of a batch.
"""
from __future__ import annotations

from typing import Any

from routing.layout import dense_sizes, vectors_of
from routing.operations import SEARCH_OPERATIONS

_BATCH = frozenset(op for op in SEARCH_OPERATIONS if op.endswith("_batch"))
_ONE_VECTOR = ("query", "nearest", "vector", "target", "example")
_EXAMPLES = ("positive", "negative")
_NESTED = ("recommend", "discover", "context", "relevance_feedback", "feedback")


def raw_vectors(operation: str, document: Any) -> list[tuple[str, int]]:
    """(vector name, length) of every raw vector in a search-type request body (parsed JSON)."""
    if not isinstance(document, dict):
        return []
    searches = document.get("searches") if operation in _BATCH else [document]
    found: list[tuple[str, int]] = []
    for search in searches if isinstance(searches, list) else ():
        _search_level(search, found)
    return found


def _search_level(node: Any, found: list) -> None:
    if not isinstance(node, dict):
        return
    using = node.get("using")
    _walk(node, using if isinstance(using, str) else "", found)
    prefetch = node.get("prefetch")
    for nested in prefetch if isinstance(prefetch, list) else [prefetch]:
        _search_level(nested, found)


def _walk(node: dict, name: str, found: list, context_pair: bool = False) -> None:
    for key in _ONE_VECTOR:
        if key in node:
            _vector_input(node[key], name, found)
    for key in _EXAMPLES:
        examples = node.get(key)
        if context_pair:  # a context pair's positive and negative are one example each
            _vector_input(examples, name, found)
            continue
        for example in examples if isinstance(examples, list) else ():
            _vector_input(example, name, found)
    for key in _NESTED:
        nested = node.get(key)
        for item in nested if isinstance(nested, list) else [nested]:
            if isinstance(item, dict):
                _walk(item, name, found, context_pair=key == "context")


def _vector_input(value: Any, name: str, found: list) -> None:
    if isinstance(value, list):
        if value and all(_is_number(x) for x in value):
            found.append((name, len(value)))
        elif value and all(isinstance(row, list) and row and all(_is_number(x) for x in row) for row in value):
            found.extend((name, len(row)) for row in value)  # a multivector: each row has the vector's size
    elif isinstance(value, dict):
        if "indices" in value:
            return  # sparse: no fixed size
        if isinstance(value.get("name"), str) and "vector" in value:
            _vector_input(value["vector"], value["name"], found)  # the search API's named vector
            return
        _walk(value, name, found)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def vector_sizes(collection_info: Any) -> dict[str, int] | None:
    """Vector name ("" for the unnamed one) -> size, from `GET /collections/{name}`'s `result`;
    None when it does not say."""
    return dense_sizes(vectors_of(collection_info)) or None


def fits(vectors: list[tuple[str, int]], sizes: dict[str, int]) -> bool:
    """Every raw vector names a vector the collection has, with its size."""
    return all(sizes.get(name) == length for name, length in vectors)
