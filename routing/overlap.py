"""How much two colours' answers to the same search agree: ranked point ids, overlap@k and RBO.

Pure. `ranked_ids` reads the point ids, best first, from a Qdrant answer of any search-type
operation (one list per sub-request for the batch forms), `ranked_ids_of_message` the same from a
parsed gRPC answer; `overlap_at_k` and `rank_biased_overlap` score two such lists.

Depth. Both scores look at the top `k` of each list. When both lists are shorter than `k` (a
`limit` below `k`, or a filter that matched fewer points) they are compared at the longer list's
length, so two identical answers of 5 points score 1.0, not 0.5. A list that ends before the other
is taken as ending there (a search returns every match up to its limit), so the missing places
count as disagreement. Two empty lists carry no information about ranking: both scores are None.

RBO. Rank-biased overlap (Webber, Moffat and Zobel 2010) with persistence `p`: a weighted mean
over depths d of the overlap share X_d / d, weight (1 - p) p^(d-1); at p = 0.9 the top 10 ranks
carry about 86 % of the weight. Here it is the *extrapolated*
RBO_ext (their eq. 23, both lists evaluated to the common depth d as above): the agreement seen at
the last depth is assumed to continue, so identical lists score exactly 1.0 and disjoint ones 0.0,
whereas the truncated sum would give identical top-10 lists only 1 - 0.9^10 = 0.65.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Hashable

from routing.operations import SEARCH_OPERATIONS
from routing.results import decoded_body

RBO_PERSISTENCE = 0.9

_BATCH = frozenset(op for op in SEARCH_OPERATIONS if op.endswith("_batch"))
_GROUPS = frozenset(op for op in SEARCH_OPERATIONS if op.endswith("_groups"))


class UnreadableResult(ValueError):
    """An answer that is not a search result in Qdrant's shape (an error envelope, another coding, ...)."""


def ranked_ids(operation: str, result: Any) -> list[list[Hashable]]:
    """Point ids best first, one list per sub-request (a single request gives one list).

    `result` is the parsed `result` of Qdrant's answer: a list of points (search, recommend,
    discover), `{"points": [...]}` (query), `{"groups": [{"hits": [...]}, ...]}` (the groups forms:
    every group's hits in group order, a point repeated in two groups counted once), or for the
    batch forms a list of those.
    """
    if operation not in SEARCH_OPERATIONS:
        raise UnreadableResult(f"{operation}: not a search-type operation")
    if operation in _BATCH:
        if not isinstance(result, list):
            raise UnreadableResult(f"{operation}: result is not a list of answers")
        return [_single(operation, item) for item in result]
    return [_single(operation, result)]


def ranked_ids_from_body(operation: str, body: bytes, content_encoding: bytes | None = None) -> list[list[Hashable]]:
    """`ranked_ids` of a raw answer body (gzip and deflate decoded)."""
    plain = decoded_body(body, content_encoding)
    if plain is None:
        raise UnreadableResult("the answer's content coding cannot be read")
    try:
        result = json.loads(plain)["result"]
    except (ValueError, KeyError, TypeError):
        raise UnreadableResult("the answer holds no `result`") from None
    return ranked_ids(operation, result)


def _single(operation: str, result: Any) -> list[Hashable]:
    if operation in _GROUPS:
        groups = result.get("groups") if isinstance(result, dict) else None
        if not isinstance(groups, list):
            raise UnreadableResult(f"{operation}: result holds no `groups` list")
        return _each_once(_point_ids(_hits(operation, group)) for group in groups)
    points = result.get("points") if isinstance(result, dict) else result
    if not isinstance(points, list):
        raise UnreadableResult(f"{operation}: result holds no list of points")
    return _point_ids(points)


def _hits(operation: str, group: Any) -> list:
    hits = group.get("hits") if isinstance(group, dict) else None
    if not isinstance(hits, list):
        raise UnreadableResult(f"{operation}: a group holds no `hits` list")
    return hits


def _each_once(groups: Iterable[list[Hashable]]) -> list[Hashable]:
    """Every group's ids in group order, a point repeated in two groups counted once."""
    ids: list[Hashable] = []
    seen: set = set()
    for group in groups:
        for point_id in group:
            if point_id not in seen:
                seen.add(point_id)
                ids.append(point_id)
    return ids


def ranked_ids_of_message(operation: str, response: Any) -> list[list[Hashable]]:
    """`ranked_ids` of a parsed gRPC answer to a search-type method (`QueryResponse`,
    `SearchBatchResponse`, `QueryGroupsResponse`, ...), read through the fields all of them share:
    `result` (the points; a batch: one `result` per sub-request; groups: `groups`, each with `hits`)
    and each point's `id` (`num` as an integer, `uuid` as a string)."""
    if operation not in SEARCH_OPERATIONS:
        raise UnreadableResult(f"{operation}: not a search-type operation")
    result = response.result
    if operation in _BATCH:
        return [_message_ids(item.result) for item in result]
    if operation in _GROUPS:
        return [_each_once(_message_ids(group.hits) for group in result.groups)]
    return [_message_ids(result)]


def _message_ids(points: Iterable[Any]) -> list[Hashable]:
    ids = []
    for point in points:
        which = point.id.WhichOneof("point_id_options")
        if which is None:
            raise UnreadableResult("a point has no `num` or `uuid` id")
        ids.append(getattr(point.id, which))
    return ids


def _point_ids(points: list) -> list[Hashable]:
    ids = []
    for point in points:
        point_id = point.get("id") if isinstance(point, dict) else None
        if not isinstance(point_id, (int, str)) or isinstance(point_id, bool):
            raise UnreadableResult("a point has no integer or string `id`")
        ids.append(point_id)
    return ids


def _depth(a: list, b: list, k: int) -> int:
    return min(k, max(len(a), len(b)))


def overlap_at_k(a: list[Hashable], b: list[Hashable], k: int) -> float | None:
    """|top-k of a ∩ top-k of b| / depth (k, or the longer list's length when both are shorter);
    None when both are empty."""
    depth = _depth(a, b, k)
    if depth == 0:
        return None
    return len(set(a[:depth]) & set(b[:depth])) / depth


def rank_biased_overlap(a: list[Hashable], b: list[Hashable], k: int, p: float = RBO_PERSISTENCE) -> float | None:
    """Extrapolated RBO of the top k of each list (see the module's notes); None when both are empty."""
    depth = _depth(a, b, k)
    if depth == 0:
        return None
    seen_a: set = set()
    seen_b: set = set()
    shared = 0
    weighted = 0.0
    weight = 1.0
    for d in range(1, depth + 1):
        x = a[d - 1] if d <= len(a) else None
        y = b[d - 1] if d <= len(b) else None
        if x is not None and y is not None and x == y:
            shared += 1
        else:
            if x is not None:
                shared += x in seen_b
                seen_a.add(x)
            if y is not None:
                shared += y in seen_a
                seen_b.add(y)
        weight *= p
        weighted += shared / d * weight
    return (1 - p) / p * weighted + shared / depth * weight
