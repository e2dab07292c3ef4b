"""Qdrant's gRPC API over the embedded upstream's REST core: one generic translation, no second engine.

Each gRPC request becomes the REST request qdrant-client would send for the same call (its fields
converted by qdrant-client's `GrpcToRest`, plus a few reshapes where the two APIs differ), runs
through `EmbeddedQdrant.handle` on the event loop like any REST request (so it is just as atomic),
and the REST result comes back through `RestToGrpc` into the gRPC response. REST errors become gRPC
statuses the way Qdrant maps its errors, with Qdrant's message. Methods without a REST equivalent
here answer UNIMPLEMENTED.
"""
from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python
from qdrant_client import grpc as qgrpc
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc
from qdrant_client.http import models

from bluegreen_dev.embedded.request import Request
from bluegreen_dev.embedded.errors import ApiError, unsupported
from proxy.grpc_schema import METHODS

log = logging.getLogger(__name__)

# Request fields REST carries in the query string, not the body. Only `wait` and `timeout` are passed on:
# ordering and read consistency mean nothing on one node.
QUERY_FIELDS = frozenset({"wait", "timeout", "ordering", "read_consistency"})
# gRPC field name -> REST body field name, where they differ.
REST_NAMES = {"with_vectors": "with_vector", "shard_key_selector": "shard_key"}
# REST status -> gRPC code: the inverse of how Qdrant maps one error to both (its StorageError).
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    423: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(status, grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.INVALID_ARGUMENT)


# ------------------------------------------------------------ gRPC request -> REST body

def _vector_example(message: qgrpc.VectorExample) -> Any:
    kind = message.WhichOneof("example")
    return GrpcToRest.convert_point_id(message.id) if kind == "id" else GrpcToRest.convert_vector(message.vector)


# Messages qdrant-client has no GrpcToRest converter for, in the shape REST uses.
LOCAL_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "VectorExample": _vector_example,
    "TargetVector": lambda message: _vector_example(message.single),
    "SparseIndices": lambda message: list(message.data),
    "PayloadIndexParams": GrpcToRest.convert_payload_schema_params,  # named for what it converts to
}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _converter(type_name: str) -> Callable[[Any], Any] | None:
    return LOCAL_CONVERTERS.get(type_name) or getattr(GrpcToRest, f"convert_{_snake(type_name)}", None)


def rest_fields(message: Message) -> dict[str, Any]:
    """A message's set fields in REST's shape: qdrant-client's converter for each field's type where
    it has one, else the same walk one level down. Path and query fields are left out."""
    body = {}
    for field, value in message.ListFields():
        if field.name == "collection_name" or field.name in QUERY_FIELDS:
            continue
        body[REST_NAMES.get(field.name, field.name)] = _rest_value(field, value)
    return body


def _rest_value(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        if value_field.message_type is not None and value_field.message_type.name == "Value":
            return GrpcToRest.convert_payload(value)
        return {key: _rest_single(value_field, item) for key, item in value.items()}
    if field.is_repeated:
        return [_rest_single(field, item) for item in value]
    return _rest_single(field, value)


def _rest_single(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        converter = _converter(field.message_type.name)
        return converter(value) if converter else rest_fields(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        converter = _converter(field.enum_type.name)
        return converter(value) if converter else field.enum_type.values_by_number[value].name
    return value


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value, exclude_none=True)


def _expand_selector(body: dict, field: str) -> dict:
    """A PointsSelector field spread into the body as REST has it: `points: [...]` or `filter: {...}`."""
    selector = body.pop(field, None)
    if selector is not None:
        body.update(_jsonable(selector))
    return body


def _search_vector(body: dict) -> dict:
    """SearchPoints' `vector` + `vector_name` + `sparse_indices` as REST's one `vector`."""
    values, name, indices = body.pop("vector", []), body.pop("vector_name", None), body.pop("sparse_indices", None)
    if indices is not None:
        body["vector"] = {"name": name, "vector": {"indices": indices, "values": values}}
    else:
        body["vector"] = {"name": name, "vector": values} if name else values
    return body


def _recommend_examples(body: dict) -> dict:
    """Point ids and vectors, two gRPC fields each, are one REST list of examples."""
    for side in ("positive", "negative"):
        examples = body.pop(side, []) + body.pop(f"{side}_vectors", [])
        if examples:
            body[side] = examples
    return body


def _field_schema(body: dict) -> dict:
    params, field_type = body.pop("field_index_params", None), body.pop("field_type", None)
    if params is not None:
        body["field_schema"] = params
    elif field_type is not None:  # FieldTypeKeyword -> keyword
        body["field_schema"] = field_type.removeprefix("FieldType").lower()
    return body


def _delete_vectors(body: dict) -> dict:
    body["vector"] = body.pop("vectors", [])
    return _expand_selector(body, "points_selector")


def _renamed(**names: str) -> Callable[[dict], dict]:
    def rename(body: dict) -> dict:
        return {names.get(key, key): value for key, value in body.items()}
    return rename


def _batch(field: str, reshape: Callable[[dict], dict] = lambda body: body) -> Callable[[dict], dict]:
    """A batch request: its inner requests (the same shape as the single one) as REST's `searches`."""
    def searches(body: dict) -> dict:
        # each inner request is a dict from rest_fields, or a model where qdrant-client converts it whole (QueryPoints)
        return {"searches": [reshape(inner if isinstance(inner, dict) else _jsonable(inner)) for inner in body.pop(field, [])]}
    return searches


# ------------------------------------------------------------ REST result -> gRPC response

def _list_of(convert: Callable[[Any], Any]) -> Callable[[list], list]:
    return lambda items: [convert(item) for item in items]


def _batch_results(convert: Callable[[Any], list]) -> Callable[[list], list]:
    return lambda batches: [qgrpc.BatchResult(result=convert(batch)) for batch in batches]


@functools.cache
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)


_scored = _list_of(RestToGrpc.convert_scored_point)
_records = _list_of(RestToGrpc.convert_record)


@dataclass(frozen=True, slots=True)
class Reply:
    """How a REST result becomes the response: validated as `model`, converted, set on `field`."""

    model: Any
    convert: Callable[[Any], Any] = lambda value: value
    field: str | None = "result"

    def build(self, response_class: type[Message], result: Any, elapsed: float) -> Message:
        value = self.convert(_adapter(self.model).validate_python(result))
        response = response_class(**({} if self.field is None else {self.field: value}))
        if "time" in response_class.DESCRIPTOR.fields_by_name:
            response.time = elapsed
        return response


def _query_points(page: models.QueryResponse) -> list:
    return _scored(page.points)


UPDATE = Reply(models.UpdateResult, RestToGrpc.convert_update_result)
UPDATES = Reply(list[models.UpdateResult], _list_of(RestToGrpc.convert_update_result))
RECORDS = Reply(list[models.Record], _records)
SCORED = Reply(list[models.ScoredPoint], _scored)
SCORED_BATCH = Reply(list[list[models.ScoredPoint]], _batch_results(_scored))
QUERY = Reply(models.QueryResponse, _query_points)
QUERY_BATCH = Reply(list[models.QueryResponse], _batch_results(_query_points))
GROUPS = Reply(models.GroupsResult, RestToGrpc.convert_groups_result)
COUNT = Reply(models.CountResult, RestToGrpc.convert_count_result)
FACET = Reply(models.FacetResponse, lambda page: [RestToGrpc.convert_facet_value_hit(hit) for hit in page.hits], "hits")
COLLECTION = Reply(models.CollectionInfo, RestToGrpc.convert_collection_info)
COLLECTIONS = Reply(models.CollectionsResponse,
                    lambda page: [RestToGrpc.convert_collection_description(c) for c in page.collections], "collections")
EXISTS = Reply(models.CollectionExistence, lambda page: qgrpc.CollectionExists(exists=page.exists))
ALIASES = Reply(models.CollectionsAliasesResponse,
                lambda page: [RestToGrpc.convert_alias_description(a) for a in page.aliases], "aliases")
SNAPSHOT = Reply(models.SnapshotDescription, RestToGrpc.convert_snapshot_description, "snapshot_description")
SNAPSHOTS = Reply(list[models.SnapshotDescription], _list_of(RestToGrpc.convert_snapshot_description), "snapshot_descriptions")
DONE = Reply(bool)
TIME_ONLY = Reply(bool, field=None)


def _scroll(response_class: type[Message], result: Any, elapsed: float) -> Message:
    page = models.ScrollResult.model_validate(result)
    response = response_class(result=_records(page.points), time=elapsed)
    if page.next_page_offset is not None:
        response.next_page_offset.CopyFrom(RestToGrpc.convert_extended_point_id(page.next_page_offset))
    return response


def _health(response_class: type[Message], result: Any, elapsed: float) -> Message:
    return response_class(title=result["title"], version=result["version"])


@dataclass(frozen=True, slots=True)
class Route:
    """One gRPC method as a REST call: method, path (`{collection_name}`, `{snapshot_name}`, `{field_name}`
    filled from the request), the body reshaped from `rest_fields`, and how the result comes back."""

    method: str
    path: str
    reply: Reply | Callable[[type[Message], Any, float], Message]
    reshape: Callable[[dict], dict] | None = lambda body: body  # None: no body

    def rest_request(self, request: Message) -> tuple[list[str], dict[str, list[str]], bytes]:
        segments = [getattr(request, part[1:-1]) if part.startswith("{") else part for part in self.path.strip("/").split("/") if part]
        query = {}
        for field, value in request.ListFields():
            if field.name == "wait":
                query["wait"] = ["true" if value else "false"]
            elif field.name == "timeout":
                query["timeout"] = [str(value)]
        body = b""
        if self.reshape is not None:
            body = json.dumps(_jsonable(self.reshape(rest_fields(request))), separators=(",", ":")).encode()
        return segments, query, body

    def response(self, response_class: type[Message], result: Any, elapsed: float) -> Message:
        if isinstance(self.reply, Reply):
            return self.reply.build(response_class, result, elapsed)
        return self.reply(response_class, result, elapsed)


C = "/collections/{collection_name}"
SELECTOR = functools.partial(_expand_selector, field="points")
PAYLOAD_SELECTOR = functools.partial(_expand_selector, field="points_selector")
NO_BODY = None
ROUTES: dict[str, Route] = {
    "/qdrant.Points/Upsert": Route("PUT", f"{C}/points", UPDATE),
    "/qdrant.Points/Delete": Route("POST", f"{C}/points/delete", UPDATE, SELECTOR),
    "/qdrant.Points/Get": Route("POST", f"{C}/points", RECORDS),
    "/qdrant.Points/UpdateVectors": Route("PUT", f"{C}/points/vectors", UPDATE),
    "/qdrant.Points/DeleteVectors": Route("POST", f"{C}/points/vectors/delete", UPDATE, _delete_vectors),
    "/qdrant.Points/SetPayload": Route("POST", f"{C}/points/payload", UPDATE, PAYLOAD_SELECTOR),
    "/qdrant.Points/OverwritePayload": Route("PUT", f"{C}/points/payload", UPDATE, PAYLOAD_SELECTOR),
    "/qdrant.Points/DeletePayload": Route("POST", f"{C}/points/payload/delete", UPDATE, PAYLOAD_SELECTOR),
    "/qdrant.Points/ClearPayload": Route("POST", f"{C}/points/payload/clear", UPDATE, SELECTOR),
    "/qdrant.Points/CreateFieldIndex": Route("PUT", f"{C}/index", UPDATE, _field_schema),
    "/qdrant.Points/DeleteFieldIndex": Route("DELETE", f"{C}/index/{{field_name}}", UPDATE, NO_BODY),
    "/qdrant.Points/Search": Route("POST", f"{C}/points/search", SCORED, _search_vector),
    "/qdrant.Points/SearchBatch": Route("POST", f"{C}/points/search/batch", SCORED_BATCH, _batch("search_points", _search_vector)),
    "/qdrant.Points/SearchGroups": Route("POST", f"{C}/points/search/groups", GROUPS, _search_vector),
    "/qdrant.Points/Scroll": Route("POST", f"{C}/points/scroll", _scroll),
    "/qdrant.Points/Recommend": Route("POST", f"{C}/points/recommend", SCORED, _recommend_examples),
    "/qdrant.Points/RecommendBatch": Route("POST", f"{C}/points/recommend/batch", SCORED_BATCH, _batch("recommend_points", _recommend_examples)),
    "/qdrant.Points/RecommendGroups": Route("POST", f"{C}/points/recommend/groups", GROUPS, _recommend_examples),
    "/qdrant.Points/Discover": Route("POST", f"{C}/points/discover", SCORED),
    "/qdrant.Points/DiscoverBatch": Route("POST", f"{C}/points/discover/batch", SCORED_BATCH, _batch("discover_points")),
    "/qdrant.Points/Count": Route("POST", f"{C}/points/count", COUNT),
    "/qdrant.Points/UpdateBatch": Route("POST", f"{C}/points/batch", UPDATES),
    "/qdrant.Points/Query": Route("POST", f"{C}/points/query", QUERY),
    "/qdrant.Points/QueryBatch": Route("POST", f"{C}/points/query/batch", QUERY_BATCH, _batch("query_points")),
    "/qdrant.Points/QueryGroups": Route("POST", f"{C}/points/query/groups", GROUPS),
    "/qdrant.Points/Facet": Route("POST", f"{C}/facet", FACET),
    "/qdrant.Collections/Get": Route("GET", C, COLLECTION, NO_BODY),
    "/qdrant.Collections/List": Route("GET", "/collections", COLLECTIONS, NO_BODY),
    "/qdrant.Collections/Create": Route("PUT", C, DONE, _renamed(vectors_config="vectors", sparse_vectors_config="sparse_vectors")),
    "/qdrant.Collections/Delete": Route("DELETE", C, DONE, NO_BODY),
    "/qdrant.Collections/UpdateAliases": Route("POST", "/collections/aliases", DONE),
    "/qdrant.Collections/ListCollectionAliases": Route("GET", f"{C}/aliases", ALIASES, NO_BODY),
    "/qdrant.Collections/ListAliases": Route("GET", "/aliases", ALIASES, NO_BODY),
    "/qdrant.Collections/CollectionExists": Route("GET", f"{C}/exists", EXISTS, NO_BODY),
    "/qdrant.Snapshots/Create": Route("POST", f"{C}/snapshots", SNAPSHOT, NO_BODY),
    "/qdrant.Snapshots/List": Route("GET", f"{C}/snapshots", SNAPSHOTS, NO_BODY),
    "/qdrant.Snapshots/Delete": Route("DELETE", f"{C}/snapshots/{{snapshot_name}}", TIME_ONLY, NO_BODY),
    "/qdrant.Qdrant/HealthCheck": Route("GET", "/", _health, NO_BODY),
}
# Not here, so UNIMPLEMENTED (the REST core has no such endpoint either): Points CreateVectorName,
# DeleteVectorName, SearchMatrixPairs, SearchMatrixOffsets; Collections Update, CollectionClusterInfo,
# UpdateCollectionClusterSetup, CreateShardKey, DeleteShardKey, ListShardKeys; Snapshots CreateFull,
# ListFull, DeleteFull.


# ------------------------------------------------------------ the server

class EmbeddedGrpcHandler(grpc.GenericRpcHandler):
    """All of Qdrant's 51 methods: the routed ones through the REST core, the rest UNIMPLEMENTED."""

    def __init__(self, app: Any):
        self.app = app
        self.handlers = {}
        for path, method in METHODS.items():
            request_class = getattr(qgrpc, method.request.DESCRIPTOR.name)
            response_class = getattr(qgrpc, method.response.DESCRIPTOR.name)
            self.handlers[path] = grpc.unary_unary_rpc_method_handler(
                self._behaviour(path, ROUTES.get(path), response_class),
                request_deserializer=request_class.FromString,
                response_serializer=response_class.SerializeToString,
            )

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(handler_call_details.method)

    def _behaviour(self, path: str, route: Route | None, response_class: type[Message]):
        async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
            if route is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, unsupported(f"the gRPC method {path}").message)
            status, message, response = self.call(route, request, response_class)
            if response is None:
                await context.abort(status, message)
            return response

        return behaviour

    def call(self, route: Route, request: Message, response_class: type[Message]) -> tuple[grpc.StatusCode | None, str, Message | None]:
        """Run one call through the REST core, synchronously on the event loop (atomic like a REST request)."""
        started = time.perf_counter()
        try:
            segments, query, body = route.rest_request(request)
        except (ValueError, TypeError, KeyError, ApiError) as exc:  # what qdrant-client's converters raise on odd input
            return grpc.StatusCode.INVALID_ARGUMENT, f"Wrong input: {exc}", None
        rest = Request(route.method, "/" + "/".join(quote(s, safe="") for s in segments), query, body)
        status, _, payload = self.app.handle(rest, segments, started)
        document = json.loads(payload)
        if status != 200:
            return grpc_code(status), document["status"]["error"], None
        result = document if route.path == "/" else document["result"]
        try:
            return None, "", route.response(response_class, result, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a conversion bug answers INTERNAL, never kills the server
            log.exception("%s: converting the REST result failed", route.path)
            return grpc.StatusCode.INTERNAL, f"Service internal error: {type(exc).__name__}: {exc}", None


async def start_grpc_server(app: Any, host: str, port: int) -> grpc.aio.Server:
    """A grpc.aio server on the running event loop (the REST app's), serving `app`'s collections."""
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared one
        # Keepalive pings accepted on idle connections too, as Qdrant (tonic) accepts them: the proxy's
        # upstream channels send them (grpc core's server default would answer GOAWAY too_many_pings).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ])
    server.add_generic_rpc_handlers((EmbeddedGrpcHandler(app),))
    server.add_insecure_port(f"{host}:{port}")  # raises "Failed to bind to address ..." when it cannot listen
    await server.start()
    return server
