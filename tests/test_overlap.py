"""Ranked ids from Qdrant answers, overlap@k and rank-biased overlap, on hand-computed cases."""
from __future__ import annotations

import gzip
import json

import pytest

from routing.overlap import UnreadableResult, overlap_at_k, rank_biased_overlap, ranked_ids, ranked_ids_from_body

UUID = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"


# ---------------------------------------------------------------- ids from each answer shape


def test_query_answer_is_one_ranked_list():
    result = {"points": [{"id": 7, "score": 0.9}, {"id": UUID, "score": 0.8}, {"id": 3, "score": 0.1}]}
    assert ranked_ids("query", result) == [[7, UUID, 3]]


@pytest.mark.parametrize("operation", ["search", "recommend", "discover"])
def test_list_answers_are_one_ranked_list(operation):
    assert ranked_ids(operation, [{"id": 2, "score": 1.0}, {"id": 1, "score": 0.5}]) == [[2, 1]]


def test_batch_answers_are_one_list_per_sub_request():
    assert ranked_ids("search_batch", [[{"id": 1}], [], [{"id": 3}, {"id": 2}]]) == [[1], [], [3, 2]]
    assert ranked_ids("query_batch", [{"points": [{"id": 5}]}, {"points": []}]) == [[5], []]


def test_groups_are_read_in_group_order_each_point_once():
    result = {"groups": [
        {"id": "a", "hits": [{"id": 3}, {"id": 1}]},
        {"id": "b", "hits": [{"id": 2}, {"id": 3}]},  # a point with two group values comes twice
    ]}
    assert ranked_ids("query_groups", result) == [[3, 1, 2]]
    assert ranked_ids("search_groups", {"groups": []}) == [[]]


@pytest.mark.parametrize("operation, result", [
    ("scroll", {"points": []}),
    ("query", {"status": "weird"}),
    ("query", {"points": [{"score": 1.0}]}),
    ("query", {"points": [{"id": True}]}),
    ("search_batch", {"points": []}),
    ("query_groups", {"groups": [{"id": 1}]}),
])
def test_shapes_that_are_not_search_results_are_refused(operation, result):
    with pytest.raises(UnreadableResult):
        ranked_ids(operation, result)


def test_raw_bodies_are_decoded_and_error_envelopes_refused():
    body = json.dumps({"result": {"points": [{"id": 4}, {"id": 9}]}, "status": "ok", "time": 0.001}).encode()
    assert ranked_ids_from_body("query", body) == [[4, 9]]
    assert ranked_ids_from_body("query", gzip.compress(body), b"gzip") == [[4, 9]]
    with pytest.raises(UnreadableResult):
        ranked_ids_from_body("query", b'{"status":{"error":"Not found"},"time":0}')
    with pytest.raises(UnreadableResult):
        ranked_ids_from_body("query", body, b"br")


# ---------------------------------------------------------------- scores


def test_identical_and_disjoint_lists():
    top = list(range(10))
    assert overlap_at_k(top, top, 10) == 1.0
    assert rank_biased_overlap(top, top, 10) == pytest.approx(1.0)
    assert overlap_at_k(top, list(range(10, 20)), 10) == 0.0
    assert rank_biased_overlap(top, list(range(10, 20)), 10) == 0.0


def test_seven_of_ten_shared():
    blue = list(range(10))
    green = [0, 1, 2, 3, 4, 5, 6, 10, 11, 12]
    assert overlap_at_k(blue, green, 10) == pytest.approx(0.7)
    # X_d = d for d <= 7, then 7: sum_{d<=7} 0.9^d + sum_{d=8..10} 7/d 0.9^d, times 1/9, + 0.7 * 0.9^10.
    expected = (sum(0.9**d for d in range(1, 8)) + sum(7 / d * 0.9**d for d in range(8, 11))) / 9 + 0.7 * 0.9**10
    assert rank_biased_overlap(blue, green, 10) == pytest.approx(expected)
    assert rank_biased_overlap(blue, green, 10) == pytest.approx(0.8682, abs=1e-4)


def test_a_swapped_pair():
    # X_1 = 0, X_2 = 2: (0.1 / 0.9) * (2/2 * 0.81) + 2/2 * 0.81 = 0.09 + 0.81
    assert rank_biased_overlap([1, 2], [2, 1], 10) == pytest.approx(0.9)
    assert overlap_at_k([1, 2], [2, 1], 10) == 1.0


def test_a_change_in_third_place():
    # X = 1, 1, 2: (0.9 + 0.5 * 0.81 + 2/3 * 0.729) / 9 + 2/3 * 0.729 = 0.199 + 0.486
    assert rank_biased_overlap([1, 2, 3], [1, 3, 4], 10) == pytest.approx(0.685)
    assert overlap_at_k([1, 2, 3], [1, 3, 4], 10) == pytest.approx(2 / 3)


def test_a_list_that_ends_early_counts_the_missing_places_as_disagreement():
    # Depth 3 (the longer list): X = 1, 1, 1: (0.9 + 0.405 + 0.243) / 9 + 1/3 * 0.729 = 0.172 + 0.243
    assert rank_biased_overlap([1], [1, 2, 3], 10) == pytest.approx(0.415)
    assert overlap_at_k([1], [1, 2, 3], 10) == pytest.approx(1 / 3)
    assert overlap_at_k([], [1, 2, 3], 10) == rank_biased_overlap([1, 2, 3], [], 10) == 0.0


def test_only_the_top_k_counts():
    a = list(range(20))
    b = list(range(10)) + list(range(100, 110))
    assert overlap_at_k(a, b, 10) == 1.0
    assert rank_biased_overlap(a, b, 10) == pytest.approx(1.0)
    assert overlap_at_k(a, b, 20) == 0.5


def test_two_empty_answers_are_not_scored():
    assert overlap_at_k([], [], 10) is None
    assert rank_biased_overlap([], [], 10) is None


# ---------------------------------------------------------------- ids from gRPC answers (parsed protobuf)


def _scored(*ids):
    from qdrant_client import grpc as q

    return [q.ScoredPoint(id=q.PointId(uuid=i) if isinstance(i, str) else q.PointId(num=i), score=1.0) for i in ids]


def _parsed(method: str, response):
    """As the gRPC face reads an answer: its bytes parsed with the proxy's own schema."""
    from proxy.grpc_schema import METHODS

    return METHODS[f"/qdrant.Points/{method}"].response.FromString(response.SerializeToString())


def test_grpc_answers_give_the_same_ranked_ids_as_their_rest_twins():
    from qdrant_client import grpc as q

    from routing.overlap import ranked_ids_of_message

    assert ranked_ids_of_message("query", _parsed("Query", q.QueryResponse(result=_scored(7, UUID, 3)))) == [[7, UUID, 3]]
    for method, operation in (("Search", "search"), ("Recommend", "recommend"), ("Discover", "discover")):
        response = getattr(q, f"{method}Response")(result=_scored(2, 1))
        assert ranked_ids_of_message(operation, _parsed(method, response)) == [[2, 1]]
    batch = q.SearchBatchResponse(result=[q.BatchResult(result=_scored(1)), q.BatchResult(), q.BatchResult(result=_scored(3, 2))])
    assert ranked_ids_of_message("search_batch", _parsed("SearchBatch", batch)) == [[1], [], [3, 2]]
    assert ranked_ids_of_message("query_batch", _parsed("QueryBatch", q.QueryBatchResponse())) == []
    groups = q.QueryGroupsResponse(result=q.GroupsResult(groups=[
        q.PointGroup(id=q.GroupId(string_value="a"), hits=_scored(3, 1)),
        q.PointGroup(id=q.GroupId(string_value="b"), hits=_scored(2, 3)),  # a point with two group values comes twice
    ]))
    assert ranked_ids_of_message("query_groups", _parsed("QueryGroups", groups)) == [[3, 1, 2]]
    assert ranked_ids_of_message("search_groups", _parsed("SearchGroups", q.SearchGroupsResponse())) == [[]]


def test_grpc_answers_that_are_not_search_results_are_refused():
    from qdrant_client import grpc as q

    from routing.overlap import ranked_ids_of_message

    with pytest.raises(UnreadableResult):  # a point without an id
        ranked_ids_of_message("query", _parsed("Query", q.QueryResponse(result=[q.ScoredPoint(score=1.0)])))
    with pytest.raises(UnreadableResult):
        ranked_ids_of_message("scroll", _parsed("Query", q.QueryResponse()))
