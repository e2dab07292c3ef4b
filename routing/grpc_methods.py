"""Qdrant's 51 gRPC methods, each decided by its REST twin: one operations table for both protocols.

Every method names the REST request that does the same thing (method and path); its operation name
and kind come from `routing.operations.classify` on that path, so a gRPC call is read / write / info /
refused exactly as the REST call would be. Pure: method paths and message field names only (the gRPC
face parses and rewrites the messages).

Where collection names sit in a request (Qdrant's .proto files): `collection_name` at the top of every
method about one collection; the inner requests of a batch (`batch`, each with its own
`collection_name`, which must equal the outer one); and a second collection read by a lookup, in any
`LookupLocation.collection_name` (`lookup_from`, prefetches included) or `WithLookup.collection`.
Alias changes (`UpdateAliases`) carry names in their actions, checked by the REST alias rules.
"""
from __future__ import annotations

from dataclasses import dataclass

from routing.clients import is_health_probe
from routing.operations import UNROUTED_OPERATION, Kind, classify, is_write

# Message type -> its field naming a second collection that a lookup reads.
LOOKUP_FIELDS = {"LookupLocation": "collection_name", "WithLookup": "collection"}
ALIASES_METHOD = "/qdrant.Collections/UpdateAliases"
HEALTH_METHOD = "/qdrant.Qdrant/HealthCheck"


@dataclass(frozen=True, slots=True)
class GrpcMethod:
    path: str  # `/qdrant.Points/Query`
    rest_method: str  # the REST twin: `POST`
    rest_path: bytes  # `/collections/{name}/points/query` (`{name}` literal), or the path outside collections
    operation: str
    kind: Kind | None  # None: not about one collection (listing, aliases, full snapshots, health)
    batch: str | None  # the repeated field of inner requests, each naming the collection again
    write: bool  # needs write access (`clients`), as `is_write` decides for the twin
    probe: bool  # answered without a credential, as Qdrant's own health probe is

    @property
    def about_collection(self) -> bool:
        return self.kind is not None


def _points(name: str, method: str, below: str, batch: str | None = None) -> tuple[str, str, str, str | None]:
    return f"/qdrant.Points/{name}", method, below, batch


# path -> (REST method, REST path below `/collections/{name}`, batch field); None below: outside collections.
_COLLECTION_TWINS: tuple[tuple[str, str, str, str | None], ...] = (
    _points("Upsert", "PUT", "points"),
    _points("Delete", "POST", "points/delete"),
    _points("Get", "POST", "points"),
    _points("UpdateVectors", "PUT", "points/vectors"),
    _points("DeleteVectors", "POST", "points/vectors/delete"),
    _points("SetPayload", "POST", "points/payload"),
    _points("OverwritePayload", "PUT", "points/payload"),
    _points("DeletePayload", "POST", "points/payload/delete"),
    _points("ClearPayload", "POST", "points/payload/clear"),
    _points("CreateFieldIndex", "PUT", "index"),
    _points("DeleteFieldIndex", "DELETE", "index/{field}"),
    _points("CreateVectorName", "PUT", "vectors/{vector}"),
    _points("DeleteVectorName", "DELETE", "vectors/{vector}"),
    _points("Search", "POST", "points/search"),
    _points("SearchBatch", "POST", "points/search/batch", "search_points"),
    _points("SearchGroups", "POST", "points/search/groups"),
    _points("Scroll", "POST", "points/scroll"),
    _points("Recommend", "POST", "points/recommend"),
    _points("RecommendBatch", "POST", "points/recommend/batch", "recommend_points"),
    _points("RecommendGroups", "POST", "points/recommend/groups"),
    _points("Discover", "POST", "points/discover"),
    _points("DiscoverBatch", "POST", "points/discover/batch", "discover_points"),
    _points("Count", "POST", "points/count"),
    _points("UpdateBatch", "POST", "points/batch"),
    _points("Query", "POST", "points/query"),
    _points("QueryBatch", "POST", "points/query/batch", "query_points"),
    _points("QueryGroups", "POST", "points/query/groups"),
    _points("Facet", "POST", "facet"),
    _points("SearchMatrixPairs", "POST", "points/search/matrix/pairs"),
    _points("SearchMatrixOffsets", "POST", "points/search/matrix/offsets"),
    ("/qdrant.Collections/Get", "GET", "", None),
    ("/qdrant.Collections/Create", "PUT", "", None),
    ("/qdrant.Collections/Update", "PATCH", "", None),
    ("/qdrant.Collections/Delete", "DELETE", "", None),
    ("/qdrant.Collections/ListCollectionAliases", "GET", "aliases", None),
    ("/qdrant.Collections/CollectionClusterInfo", "GET", "cluster", None),
    ("/qdrant.Collections/CollectionExists", "GET", "exists", None),
    ("/qdrant.Collections/UpdateCollectionClusterSetup", "POST", "cluster", None),
    ("/qdrant.Collections/CreateShardKey", "PUT", "shards", None),
    ("/qdrant.Collections/DeleteShardKey", "POST", "shards/delete", None),
    ("/qdrant.Collections/ListShardKeys", "GET", "shards", None),
    ("/qdrant.Snapshots/Create", "POST", "snapshots", None),
    ("/qdrant.Snapshots/List", "GET", "snapshots", None),
    ("/qdrant.Snapshots/Delete", "DELETE", "snapshots/{snapshot}", None),
)
_OTHER_TWINS: tuple[tuple[str, str, str], ...] = (
    ("/qdrant.Collections/List", "GET", "/collections"),
    (ALIASES_METHOD, "POST", "/collections/aliases"),
    ("/qdrant.Collections/ListAliases", "GET", "/aliases"),
    ("/qdrant.Snapshots/CreateFull", "POST", "/snapshots"),
    ("/qdrant.Snapshots/ListFull", "GET", "/snapshots"),
    ("/qdrant.Snapshots/DeleteFull", "DELETE", "/snapshots/{snapshot}"),
    (HEALTH_METHOD, "GET", "/healthz"),
)


def _compile() -> dict[str, GrpcMethod]:
    table = {}
    for path, method, below, batch in _COLLECTION_TWINS:
        operation, kind = classify(method, below)
        rest_path = ("/collections/{name}/" + below).rstrip("/").encode()
        table[path] = GrpcMethod(path, method, rest_path, operation, kind, batch,
                                 is_write(method, kind, operation, rest_path), False)
    for path, method, rest in _OTHER_TWINS:
        rest_path = rest.encode()
        table[path] = GrpcMethod(path, method, rest_path, UNROUTED_OPERATION, None, None,
                                 is_write(method, None, "", rest_path), is_health_probe(rest_path))
    return table


GRPC_METHODS: dict[str, GrpcMethod] = _compile()
