"""Empty-result detection on Qdrant's own response shapes, compact and otherwise."""
from __future__ import annotations

import gzip
import json
import zlib

import pytest

from routing.operations import SEARCH_OPERATIONS
from routing.results import is_empty_result, readable_accept_encoding

POINT = {"id": 7, "version": 3, "score": 0.83, "payload": None}
GROUP = {"id": "g1", "hits": [POINT]}


def compact(result) -> bytes:
    return json.dumps({"result": result, "status": "ok", "time": 0.0012}, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "operation, result, empty",
    [
        ("search", [], True),
        ("search", [POINT], False),
        ("recommend", [], True),
        ("discover", [POINT, POINT], False),
        ("query", {"points": []}, True),
        ("query", {"points": [POINT]}, False),
        ("query_groups", {"groups": []}, True),
        ("search_groups", {"groups": [GROUP]}, False),
        ("recommend_groups", {"groups": []}, True),
        ("search_batch", [[], []], True),
        ("search_batch", [[], [POINT]], False),
        ("recommend_batch", [[]], True),
        ("discover_batch", [[POINT]], False),
        ("query_batch", [{"points": []}, {"points": []}], True),
        ("query_batch", [{"points": []}, {"points": [POINT]}], False),
    ],
)
def test_search_type_results(operation, result, empty):
    assert is_empty_result(operation, compact(result)) is empty
    # The same answer pretty-printed (not Qdrant's own layout) is parsed and agrees.
    assert is_empty_result(operation, json.dumps({"result": result}, indent=2).encode()) is empty


@pytest.mark.parametrize("operation", ["scroll", "count", "retrieve", "facet", "upsert", "collection_info", "other"])
def test_other_operations_are_not_judged(operation):
    assert is_empty_result(operation, compact([])) is None
    assert is_empty_result(operation, compact({"points": []})) is None


def test_every_search_operation_is_judged():
    shapes = {"query": {"points": []}, "query_batch": [{"points": []}]}
    for operation in SEARCH_OPERATIONS:
        if operation.endswith("_groups"):
            result = {"groups": []}
        elif operation.endswith("_batch"):
            result = shapes.get(operation, [[]])
        else:
            result = shapes.get(operation, [])
        assert is_empty_result(operation, compact(result)) is True, operation


@pytest.mark.parametrize(
    "operation, body",
    [
        ("search", b""),
        ("search", b"not json"),
        ("search", b'{"status":{"error":"Not found"},"time":0}'),
        ("query", compact({"count": 3})),
        ("search", b"[1, 2]"),
        ("search_batch", compact([])),  # a batch of no requests
        ("search_batch", compact([[], {"count": 1}])),
        ("query_batch", compact({"points": []})),
    ],
)
def test_bodies_not_understood_are_not_judged(operation, body):
    assert is_empty_result(operation, body) is None


@pytest.mark.parametrize("coding", [b"gzip", b"x-gzip", b"deflate", b"deflate-raw", b"identity", None])
@pytest.mark.parametrize("result, empty", [({"points": []}, True), ({"points": [POINT]}, False)])
def test_compressed_results_are_decoded(coding, result, empty):
    """Qdrant compresses answers for clients that accept it (actix's Compress middleware)."""
    body = compact(result)
    if coding in (b"gzip", b"x-gzip"):
        body = gzip.compress(body)
    elif coding == b"deflate":
        body = zlib.compress(body)
    elif coding == b"deflate-raw":  # raw deflate, as some servers send it under `deflate`
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body, coding = compressor.compress(body) + compressor.flush(), b"deflate"
    assert is_empty_result("query", body, coding) is empty


def test_unreadable_codings_and_corrupt_bodies_are_not_judged():
    assert is_empty_result("query", compact({"points": []}), b"br") is None
    assert is_empty_result("query", b"\x1f\x8b not really gzip", b"gzip") is None


@pytest.mark.parametrize(
    "sent, forwarded",
    [
        (b"gzip, deflate, br, zstd", b"gzip, deflate"),  # qdrant-client with brotli and zstandard installed
        (b"br;q=1.0, gzip;q=0.8, *;q=0.1", b"gzip;q=0.8"),
        (b"GZip", b"GZip"),
        (b"br, zstd", None),
        (b"identity", b"identity"),
    ],
)
def test_accept_encoding_is_narrowed_to_readable_codings(sent, forwarded):
    assert readable_accept_encoding(sent) == forwarded


def _decoded_peak(operation: str, body: bytes, coding: bytes | None) -> tuple[bool | None, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        verdict = is_empty_result(operation, body, coding)
        return verdict, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("operation", ["search", "query", "search_batch", "query_batch"])
def test_large_compressed_answers_are_decoded_only_as_far_as_needed(operation):
    """A 2 MB gzip answer can hold 200 MB of JSON: the guard decodes a bounded head of it, not all."""
    points = [POINT] * 400_000  # about 20 MB of JSON, 0.3 MB compressed
    result = {
        "search": points, "query": {"points": points},
        "search_batch": [[], points], "query_batch": [{"points": []}, {"points": points}],
    }[operation]
    body = gzip.compress(compact(result), 1)
    verdict, peak = _decoded_peak(operation, body, b"gzip")
    assert verdict is False
    assert peak < 1024 * 1024  # bytes allocated while judging: the answer itself is 20 MB decoded


def test_large_answer_with_no_point_in_view_is_not_judged():
    body = compact([[] for _ in range(40_000)])  # 40,000 empty results: larger than what is decoded
    assert is_empty_result("search_batch", body) is None
    assert is_empty_result("search_batch", compact([[], []])) is True


def test_deeply_nested_answer_is_not_judged():
    body = b'{"result":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    assert is_empty_result("search_batch", body) is None
