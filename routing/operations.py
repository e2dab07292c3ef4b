"""What a request under `/collections/{name}/...` does: a bounded operation name and its kind.

The kind decides how a routed request is sent:
- READ: split between blue and green by the key's bucket;
- WRITE: follows the route's `writes` policy;
- INFO: a GET about the collection itself (info, exists, aliases, snapshots list, ...): blue;
- ADMIN: creates, changes or deletes the collection or its layout: refused for a logical name.
"""
from __future__ import annotations

from enum import Enum


class Kind(Enum):
    READ = "read"
    WRITE = "write"
    INFO = "info"
    ADMIN = "admin"


# (method, path below the collection) -> (operation, kind). Paths are `/`-joined segments.
_EXACT: dict[tuple[str, str], tuple[str, Kind]] = {
    ("GET", ""): ("collection_info", Kind.INFO),
    ("PUT", ""): ("create_collection", Kind.ADMIN),
    ("PATCH", ""): ("update_collection", Kind.ADMIN),
    ("DELETE", ""): ("delete_collection", Kind.ADMIN),
    ("GET", "exists"): ("collection_exists", Kind.INFO),
    ("POST", "points"): ("retrieve", Kind.READ),
    ("PUT", "points"): ("upsert", Kind.WRITE),
    ("POST", "points/query"): ("query", Kind.READ),
    ("POST", "points/query/batch"): ("query_batch", Kind.READ),
    ("POST", "points/query/groups"): ("query_groups", Kind.READ),
    ("POST", "points/search"): ("search", Kind.READ),
    ("POST", "points/search/batch"): ("search_batch", Kind.READ),
    ("POST", "points/search/groups"): ("search_groups", Kind.READ),
    ("POST", "points/search/matrix/pairs"): ("matrix_pairs", Kind.READ),
    ("POST", "points/search/matrix/offsets"): ("matrix_offsets", Kind.READ),
    ("POST", "points/recommend"): ("recommend", Kind.READ),
    ("POST", "points/recommend/batch"): ("recommend_batch", Kind.READ),
    ("POST", "points/recommend/groups"): ("recommend_groups", Kind.READ),
    ("POST", "points/discover"): ("discover", Kind.READ),
    ("POST", "points/discover/batch"): ("discover_batch", Kind.READ),
    ("POST", "points/scroll"): ("scroll", Kind.READ),
    ("POST", "points/count"): ("count", Kind.READ),
    ("POST", "facet"): ("facet", Kind.READ),
    ("POST", "points/delete"): ("delete", Kind.WRITE),
    ("PUT", "points/vectors"): ("update_vectors", Kind.WRITE),
    ("POST", "points/vectors/delete"): ("delete_vectors", Kind.WRITE),
    ("POST", "points/payload"): ("set_payload", Kind.WRITE),
    ("PUT", "points/payload"): ("overwrite_payload", Kind.WRITE),
    ("POST", "points/payload/delete"): ("delete_payload", Kind.WRITE),
    ("POST", "points/payload/clear"): ("clear_payload", Kind.WRITE),
    ("POST", "points/batch"): ("batch", Kind.WRITE),
    ("PUT", "index"): ("create_index", Kind.ADMIN),
    ("GET", "aliases"): ("aliases", Kind.INFO),
}

# First path segment -> operation family for everything not listed exactly.
_FAMILIES = {"index": "index", "cluster": "cluster", "shards": "shards", "snapshots": "snapshots"}

# Operations whose successful result is a list of scored points (or groups): the guard's empty rule.
SEARCH_OPERATIONS = frozenset(
    {
        "query", "query_batch", "query_groups",
        "search", "search_batch", "search_groups",
        "recommend", "recommend_batch", "recommend_groups",
        "discover", "discover_batch",
    }
)

# Operations split between blue and green (the guard judges these).
READ_OPERATIONS = frozenset(op for op, kind in _EXACT.values() if kind is Kind.READ)

# Every label value `operation` can take: bounded, whatever clients send.
UNROUTED_OPERATION = "passthrough"
# OPTIONS on a routed collection: a browser's CORS preflight, passed to blue and answered unchanged.
CORS_PREFLIGHT_OPERATION = "cors_preflight"
OPERATIONS = (
    frozenset(op for op, _ in _EXACT.values()) | frozenset(_FAMILIES.values()) | {"other", CORS_PREFLIGHT_OPERATION}
)


def classify(method: str, below_collection: str) -> tuple[str, Kind]:
    """`below_collection` is the path after `/collections/{name}`, without leading or trailing `/`."""
    hit = _EXACT.get((method, below_collection))
    if hit is not None:
        return hit
    head, _, rest = below_collection.partition("/")
    if head == "points" and method == "GET" and rest and "/" not in rest:
        return "retrieve", Kind.READ  # GET /points/{id}
    family = _FAMILIES.get(head, "other")
    # GET about the collection goes to blue; anything else unknown may change it: refused.
    return family, (Kind.INFO if method in ("GET", "HEAD") else Kind.ADMIN)


def is_write(method: str, kind: Kind | None, operation: str = "", canonical_path: bytes = b"") -> bool:
    """Whether a request needs write access: writes and admin calls on a collection; outside any
    collection (`kind` None), everything but GET and HEAD (alias changes, cluster calls). Snapshots
    too, even listed or downloaded: one holds every point (Qdrant keeps them to manage access)."""
    if operation == "snapshots" or canonical_path.startswith(b"/snapshots"):
        return True
    if kind is None:
        return method not in ("GET", "HEAD")
    return kind is Kind.WRITE or kind is Kind.ADMIN
