"""The Qdrant REST API over the store: a raw ASGI app with a dict router and Qdrant's envelope.

qdrant-edge calls are synchronous and hold the GIL, so handlers call them directly on the event loop:
requests are served one at a time, which keeps every handler atomic without locks. Fine for a
development upstream; a search on 10,000 points takes well under a millisecond.
"""
from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

import qdrant_edge as qe
from pydantic import BaseModel, TypeAdapter
from qdrant_client.http import models

from bluegreen_dev.embedded import convert, writes
from bluegreen_dev.embedded.convert import edge_id, id_json, record_json, scored_point_json
from bluegreen_dev.embedded.errors import ApiError, from_edge, not_found, unsupported
from bluegreen_dev.embedded.request import Request
from bluegreen_dev.embedded.store import Collection, Store

log = logging.getLogger(__name__)

# qdrant-client 1.20 accepts a server whose major version is equal and minor differs by at most one.
QDRANT_VERSION = "1.19.0"
# Qdrant's own top-level paths: anything else under them that is not routed here is "not supported".
QDRANT_ROOTS = frozenset({"collections", "aliases", "cluster", "snapshots", "telemetry", "metrics", "issues", "locks"})

_POINT_INSERT = TypeAdapter(models.PointInsertOperations)
_POINTS_SELECTOR = TypeAdapter(models.PointsSelector)
# What qdrant-edge raises (plain Exception) or its argument conversion raises; anything else is a bug here.
_EDGE_ERRORS = (Exception, ValueError, TypeError)


class PlainText(str):
    """A handler result sent as text/plain, like Qdrant's health endpoints."""


class BareJson(dict):
    """A handler result sent without the envelope, like Qdrant's version document at `GET /`."""


class FileResult:
    """A handler result streamed as a file (a snapshot download)."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size


FILE_CHUNK = 1 << 20
GRPC_GRACE_SECONDS = 2.0
# Qdrant answers CORS preflights itself (actix-cors: any origin, method and header).
CORS_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def _path_segments(scope: dict) -> list[str]:
    # raw_path keeps %2F inside a segment apart from the separators; trailing slashes are trimmed like Qdrant.
    raw = scope.get("raw_path")
    path = raw.decode("latin-1").split("?", 1)[0] if raw else scope["path"]
    return [unquote(segment) for segment in path.strip("/").split("/") if segment]


def _json_bytes(document: dict) -> bytes:
    # Compact like Qdrant's serde, so e.g. an empty search answer contains exactly `"result":[]`.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _update_result(operation_id: int, wait: bool) -> dict:
    return {"operation_id": operation_id, "status": "completed" if wait else "acknowledged"}


class EmbeddedQdrant:
    """ASGI app. The store opens in the constructor (so the app also works without a lifespan) and
    closes on lifespan shutdown. With `grpc_address` (host, port), the lifespan also serves Qdrant's
    gRPC API there, on the same event loop."""

    def __init__(self, data_dir: Path, grpc_address: tuple[str, int] | None = None):
        self.store = Store(data_dir)
        self.grpc_address = grpc_address
        self.grpc_server: Any = None
        self.root_routes: dict[tuple[str, tuple[str, ...]], Callable[[Request], Any]] = {
            ("GET", ()): self.version,
            ("GET", ("healthz",)): lambda _: PlainText("healthz check passed"),
            ("GET", ("livez",)): lambda _: PlainText("livez check passed"),
            ("GET", ("readyz",)): lambda _: PlainText("all shards are ready"),
            ("GET", ("collections",)): self.list_collections,
            ("GET", ("aliases",)): self.list_aliases,
            ("POST", ("collections", "aliases")): self.change_aliases,
        }
        # Paths below /collections/{name}; "*" is the last segment's parameter.
        self.collection_routes: dict[tuple[str, tuple[str, ...]], Callable[[Request], Any]] = {
            ("GET", ()): self.get_collection,
            ("PUT", ()): self.create_collection,
            ("DELETE", ()): self.delete_collection,
            ("GET", ("exists",)): self.collection_exists,
            ("GET", ("aliases",)): self.collection_aliases,
            ("PUT", ("points",)): self.upsert,
            ("POST", ("points",)): self.retrieve,
            ("GET", ("points", "*")): self.get_point,
            ("POST", ("points", "delete")): self.delete_points,
            ("POST", ("points", "payload")): self.set_payload,
            ("PUT", ("points", "payload")): self.overwrite_payload,
            ("POST", ("points", "payload", "delete")): self.delete_payload,
            ("POST", ("points", "payload", "clear")): self.clear_payload,
            ("PUT", ("points", "vectors")): self.update_vectors,
            ("POST", ("points", "vectors", "delete")): self.delete_vectors,
            ("POST", ("points", "query")): self.query,
            ("POST", ("points", "query", "batch")): self.query_batch,
            ("POST", ("points", "search")): self.search,
            ("POST", ("points", "search", "batch")): self.search_batch,
            ("POST", ("points", "scroll")): self.scroll,
            ("POST", ("points", "count")): self.count,
            ("POST", ("facet",)): self.facet,
            ("PUT", ("index",)): self.create_index,
            ("DELETE", ("index", "*")): self.delete_index,
            ("POST", ("points", "batch")): self.batch_update,
            ("POST", ("points", "recommend")): self.recommend,
            ("POST", ("points", "recommend", "batch")): self.recommend_batch,
            ("POST", ("points", "recommend", "groups")): self.recommend_groups,
            ("POST", ("points", "discover")): self.discover,
            ("POST", ("points", "discover", "batch")): self.discover_batch,
            ("POST", ("points", "query", "groups")): self.query_groups,
            ("POST", ("points", "search", "groups")): self.search_groups,
            ("GET", ("snapshots",)): self.list_snapshots,
            ("POST", ("snapshots",)): self.create_snapshot,
            ("PUT", ("snapshots", "recover")): self.recover_snapshot,
            ("GET", ("snapshots", "*")): self.download_snapshot,
            ("DELETE", ("snapshots", "*")): self.delete_snapshot,
        }

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._start_grpc()
                except Exception as exc:  # noqa: BLE001 - e.g. the port is taken: fail the startup with why
                    await send({"type": "lifespan.startup.failed", "message": f"gRPC listener: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.grpc_server is not None:
                    await self.grpc_server.stop(grace=GRPC_GRACE_SECONDS)
                self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_grpc(self) -> None:
        if self.grpc_address is None:
            return
        from bluegreen_dev.embedded.grpc_api import start_grpc_server  # grpcio only when asked for

        self.grpc_server = await start_grpc_server(self, *self.grpc_address)

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        request_headers = dict(scope["headers"])
        origin = request_headers.get(b"origin")
        if scope["method"] == "OPTIONS":
            await self._preflight(request_headers, send)
            return
        head = scope["method"] == "HEAD"  # answered as GET, without the body
        query = parse_qs(scope["query_string"].decode("latin-1"))
        request = Request("GET" if head else scope["method"], scope["path"], query, b"".join(chunks))
        status, content_type, body = self.handle(request, _path_segments(scope), started)
        headers = [(b"content-type", content_type)]
        if origin:
            headers += [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
        if isinstance(body, FileResult):
            await self._send_file(body, headers, head, send)
            return
        if accepts_gzip(request_headers.get(b"accept-encoding", b"")):  # as Qdrant's REST server compresses
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers += [(b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _preflight(self, request_headers: dict, send: Callable) -> None:
        """A CORS preflight: 200 echoing the origin and the requested headers; 400 if it is not one."""
        origin = request_headers.get(b"origin")
        method = request_headers.get(b"access-control-request-method")
        if not origin or not method:
            body = b"CORS preflight needs Origin and Access-Control-Request-Method"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", CORS_METHODS),
            (b"vary", b"origin, access-control-request-method, access-control-request-headers"),
            (b"content-length", b"0"),
        ]
        requested = request_headers.get(b"access-control-request-headers")
        if requested:
            headers.append((b"access-control-allow-headers", requested))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _send_file(self, result: FileResult, headers: list, head: bool, send: Callable) -> None:
        headers = [(b"content-type", b"application/octet-stream"), *headers[1:],
                   (b"content-length", str(result.size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if head:
            await send({"type": "http.response.body", "body": b""})
            return
        with open(result.path, "rb") as source:
            while chunk := source.read(FILE_CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def handle(self, request: Request, segments: list[str], started: float) -> tuple[int, bytes, "bytes | FileResult"]:
        """Route and run one request; every failure becomes Qdrant's error envelope, never a traceback."""
        try:
            result = self._route(request, segments)(request)
            if isinstance(result, PlainText):
                return 200, b"text/plain; charset=utf-8", result.encode()
            if isinstance(result, BareJson):
                return 200, b"application/json", _json_bytes(result)
            if isinstance(result, FileResult):
                return 200, b"application/octet-stream", result
            document = {"result": result, "status": "ok", "time": time.perf_counter() - started}
            return 200, b"application/json", _json_bytes(document)
        except ApiError as exc:
            status, message = exc.status, exc.message
        except Exception as exc:  # noqa: BLE001 - the server must answer whatever happens
            if type(exc) in _EDGE_ERRORS:
                error = from_edge(exc)
                status, message = error.status, error.message
            else:
                log.exception("%s %s failed", request.method, request.path)
                status, message = 500, f"Service internal error: {type(exc).__name__}: {exc}"
        document = {"status": {"error": message}, "time": time.perf_counter() - started}
        return status, b"application/json", _json_bytes(document)

    def _route(self, request: Request, segments: list[str]) -> Callable[[Request], Any]:
        method = request.method
        handler = self.root_routes.get((method, tuple(segments)))
        if handler is not None:
            return handler
        if len(segments) >= 2 and segments[0] == "collections":
            rest = tuple(segments[2:])
            request.collection_name = segments[1]
            handler = self.collection_routes.get((method, rest))
            if handler is None and rest:
                handler = self.collection_routes.get((method, rest[:-1] + ("*",)))
                request.path_param = rest[-1]
            if handler is not None:
                return handler
        endpoint = f"`{method} {request.path}`"
        if segments and segments[0] in QDRANT_ROOTS:
            raise unsupported(endpoint)
        raise not_found(f"{endpoint} is not supported by the embedded upstream (qdrant-edge)")

    def _collection(self, request: Request) -> Collection:
        return self.store.resolve(request.collection_name)

    def _write(self, request: Request, operation: qe.UpdateOperation) -> dict:
        operation_id = self._collection(request).apply(operation)
        return _update_result(operation_id, request.wait)

    def _query_converter(self, collection: Collection) -> convert.QueryConverter:
        def fetch_vector(collection_name: str | None, point_id: convert.PointId, vector_name: str) -> Any:
            source = collection if collection_name is None else self.store.resolve(collection_name)
            return source.fetch_vector(point_id, vector_name)

        return convert.QueryConverter(fetch_vector)

    # ------------------------------------------------------------ service

    def version(self, _: Request) -> BareJson:
        return BareJson(title="qdrant - vector search engine", version=QDRANT_VERSION)

    def list_collections(self, _: Request) -> dict:
        return {"collections": [{"name": name} for name in sorted(self.store.collections)]}

    def list_aliases(self, _: Request) -> dict:
        return {"aliases": [{"alias_name": a, "collection_name": c} for a, c in sorted(self.store.aliases.items())]}

    def change_aliases(self, request: Request) -> bool:
        self.store.change_aliases(request.parse(models.ChangeAliasesOperation).actions)
        return True

    # ------------------------------------------------------------ collections

    def get_collection(self, request: Request) -> dict:
        return self._collection(request).info()

    def create_collection(self, request: Request) -> bool:
        self.store.create(request.collection_name, request.parse(models.CreateCollection))
        return True

    def delete_collection(self, request: Request) -> bool:
        return self.store.delete(request.collection_name)

    def collection_exists(self, request: Request) -> dict:
        return {"exists": self.store.exists(request.collection_name)}

    def collection_aliases(self, request: Request) -> dict:
        name = self._collection(request).name
        aliases = sorted(a for a, c in self.store.aliases.items() if c == name)
        return {"aliases": [{"alias_name": a, "collection_name": name} for a in aliases]}

    def create_index(self, request: Request) -> dict:
        body = request.parse(models.CreateFieldIndex)
        schema = convert.field_schema(body.field_schema)
        result = self._write(request, qe.UpdateOperation.create_field_index(body.field_name, schema))
        params = body.field_schema if isinstance(body.field_schema, BaseModel) else None
        self._collection(request).record_index(body.field_name, params and params.model_dump(mode="json", exclude_none=True))
        return result

    def delete_index(self, request: Request) -> dict:
        result = self._write(request, qe.UpdateOperation.delete_field_index(request.path_param))
        self._collection(request).record_index(request.path_param, None)
        return result

    # ------------------------------------------------------------ snapshots

    def list_snapshots(self, request: Request) -> list:
        return self.store.list_snapshots(request.collection_name)

    def create_snapshot(self, request: Request) -> dict:
        return self.store.create_snapshot(request.collection_name)

    def download_snapshot(self, request: Request) -> FileResult:
        return FileResult(self.store.snapshot_file(request.collection_name, request.path_param))

    def delete_snapshot(self, request: Request) -> bool:
        self.store.delete_snapshot(request.collection_name, request.path_param)
        return True

    def recover_snapshot(self, request: Request) -> bool:
        """`{"location": "file:///path"}`: a local snapshot file (this upstream downloads nothing)."""
        location = request.parse(models.SnapshotRecover).location
        if not location.startswith("file://"):
            raise unsupported("snapshot recovery from a URL other than file://")
        path = Path(unquote(location[len("file://"):]))
        if not path.is_file():
            raise not_found(f"Snapshot file {path} not found")
        self.store.recover(request.collection_name, path)
        return True

    # ------------------------------------------------------------ writes

    def upsert(self, request: Request) -> dict:
        return self._write(request, writes.upsert(request.parse(_POINT_INSERT)))

    def delete_points(self, request: Request) -> dict:
        return self._write(request, writes.delete(request.parse(_POINTS_SELECTOR)))

    def set_payload(self, request: Request) -> dict:
        return self._write(request, writes.set_payload(request.parse(models.SetPayload)))

    def overwrite_payload(self, request: Request) -> dict:
        return self._write(request, writes.overwrite_payload(request.parse(models.SetPayload)))

    def delete_payload(self, request: Request) -> dict:
        return self._write(request, writes.delete_payload(request.parse(models.DeletePayload)))

    def clear_payload(self, request: Request) -> dict:
        return self._write(request, writes.clear_payload(request.parse(_POINTS_SELECTOR)))

    def update_vectors(self, request: Request) -> dict:
        return self._write(request, writes.update_vectors(request.parse(models.UpdateVectors)))

    def delete_vectors(self, request: Request) -> dict:
        return self._write(request, writes.delete_vectors(request.parse(models.DeleteVectors)))

    def batch_update(self, request: Request) -> list:
        """points/batch: applied in order, like Qdrant; one result per operation."""
        operations = writes.batch(request.parse(models.UpdateOperations))
        collection = self._collection(request)
        return [_update_result(collection.apply(operation), request.wait) for operation in operations]

    # ------------------------------------------------------------ reads

    def retrieve(self, request: Request) -> list:
        body = request.parse(models.PointRequest)
        records = self._collection(request).shard.retrieve(
            [edge_id(i) for i in body.ids],
            with_payload=convert.with_payload(body.with_payload, True),
            with_vector=convert.with_vector(body.with_vector),
        )
        return [record_json(r) for r in records]

    def get_point(self, request: Request) -> dict:
        raw = request.path_param
        point_id = edge_id(int(raw) if raw.isdigit() else raw)
        records = self._collection(request).shard.retrieve([point_id], with_payload=True, with_vector=True)
        if not records:
            raise not_found(f"No point with id {raw} found")
        return record_json(records[0])

    def query(self, request: Request) -> dict:
        body = request.parse(models.QueryRequest)
        collection = self._collection(request)
        points = collection.shard.query(self._query_converter(collection).request(body))
        return {"points": [scored_point_json(p, bool(body.with_vector)) for p in points]}

    def query_batch(self, request: Request) -> list:
        body = request.parse(models.QueryRequestBatch)
        collection = self._collection(request)
        converter = self._query_converter(collection)
        batch = qe.QueryBatchRequest([converter.request(search) for search in body.searches])
        return [
            {"points": [scored_point_json(p, bool(search.with_vector)) for p in points]}
            for search, points in zip(body.searches, collection.shard.query_batch(batch))
        ]

    def search(self, request: Request) -> list:
        body = request.parse(convert.SearchRequest)
        points = self._collection(request).shard.query(convert.search_to_edge(body))
        return [scored_point_json(p) for p in points]

    def search_batch(self, request: Request) -> list:
        body = request.parse(convert.SearchRequestBatch)
        batch = qe.QueryBatchRequest([convert.search_to_edge(search) for search in body.searches])
        return [[scored_point_json(p) for p in points] for points in self._collection(request).shard.query_batch(batch)]

    def _legacy_read(self, collection: Collection, body: Any) -> list:
        """A recommend or discover request, answered as the equivalent query (a bare list of points)."""
        points = collection.shard.query(self._query_converter(collection).request(body.to_query()))
        return [scored_point_json(p, bool(body.with_vector)) for p in points]

    def recommend(self, request: Request) -> list:
        return self._legacy_read(self._collection(request), request.parse(convert.RecommendRequest))

    def recommend_batch(self, request: Request) -> list:
        collection = self._collection(request)
        return [self._legacy_read(collection, search) for search in request.parse(convert.RecommendRequestBatch).searches]

    def discover(self, request: Request) -> list:
        return self._legacy_read(self._collection(request), request.parse(convert.DiscoverRequest))

    def discover_batch(self, request: Request) -> list:
        collection = self._collection(request)
        return [self._legacy_read(collection, search) for search in request.parse(convert.DiscoverRequestBatch).searches]

    def query_groups(self, request: Request) -> dict:
        body = request.parse(models.QueryGroupsRequest)
        query = models.QueryRequest(**{field: getattr(body, field) for field in models.QueryRequest.model_fields
                                       if field in models.QueryGroupsRequest.model_fields})
        return self._groups(request, query, body.group_by, body.group_size, body.limit, body.with_lookup)

    def search_groups(self, request: Request) -> dict:
        body = request.parse(convert.SearchGroupsRequest)
        return self._groups(request, body.to_query(), body.group_by, body.group_size, body.limit, body.with_lookup)

    def recommend_groups(self, request: Request) -> dict:
        body = request.parse(convert.RecommendGroupsRequest)
        return self._groups(request, body.to_query(), body.group_by, body.group_size, body.limit, body.with_lookup)

    def _groups(self, request: Request, query: models.QueryRequest, group_by: str, group_size: int | None,
                limit: int | None, with_lookup: Any) -> dict:
        """Qdrant's grouped search: the best hits per value of `group_by`, best groups first.

        Runs the query for more and more hits (group_size x limit x 2, then x4 each round) until
        every group is full or the collection has no more hits.
        """
        collection = self._collection(request)
        group_size = group_size or 3
        limit = limit if limit is not None else convert.DEFAULT_LIMIT
        converter = self._query_converter(collection)
        fetch = max(1, group_size * limit * 2)
        while True:
            hits = collection.shard.query(converter.request(query.model_copy(update={"limit": fetch, "offset": None, "with_payload": True})))
            groups: dict[Any, list] = {}
            for hit in hits:
                for value in convert.group_values(hit.payload, group_by):
                    if value not in groups and len(groups) < limit:
                        groups[value] = []
                    if value in groups and len(groups[value]) < group_size:
                        groups[value].append(hit)
            full = len(groups) == limit and all(len(g) == group_size for g in groups.values())
            if full or len(hits) < fetch:
                break
            fetch *= 4
        out = []
        for value, members in groups.items():
            rendered = []
            for hit in members:
                point = scored_point_json(hit, bool(query.with_vector))
                payload = convert.select_payload(hit.payload, query.with_payload)
                point.pop("payload", None)
                if payload is not None:
                    point["payload"] = payload
                rendered.append(point)
            out.append({"id": value, "hits": rendered})
        if with_lookup is not None:
            self._add_lookups(out, with_lookup)
        return {"groups": out}

    def _add_lookups(self, groups: list[dict], with_lookup: Any) -> None:
        """`with_lookup`: each group's id looked up as a point id in another collection."""
        if isinstance(with_lookup, str):
            name, with_payload, with_vectors = with_lookup, True, False
        else:
            name, with_payload, with_vectors = with_lookup.collection, with_lookup.with_payload, with_lookup.with_vectors
        source = self.store.resolve(name)
        wanted = {}
        for group in groups:
            try:
                wanted[group["id"]] = edge_id(group["id"])
            except ApiError:  # a value that cannot be a point id has no lookup
                continue
        records = source.shard.retrieve(list(wanted.values()), with_payload=convert.with_payload(with_payload, True),
                                        with_vector=convert.with_vector(with_vectors))
        by_id = {id_json(record.id): record_json(record) for record in records}
        for group in groups:
            if group["id"] in by_id:
                group["lookup"] = by_id[group["id"]]

    def scroll(self, request: Request) -> dict:
        body = request.parse(models.ScrollRequest)
        records, next_offset = self._collection(request).shard.scroll(qe.ScrollRequest(
            offset=None if body.offset is None else edge_id(body.offset),
            limit=body.limit if body.limit is not None else convert.DEFAULT_LIMIT,
            filter=convert.to_filter(body.filter),
            with_payload=convert.with_payload(body.with_payload, True),
            with_vector=convert.with_vector(body.with_vector),
            order_by=convert.order_by(body.order_by),
        ))
        return {
            "points": [record_json(r) for r in records],
            "next_page_offset": None if next_offset is None else id_json(next_offset),
        }

    def count(self, request: Request) -> dict:
        body = request.parse(models.CountRequest)
        exact = body.exact if body.exact is not None else True
        return {"count": self._collection(request).shard.count(qe.CountRequest(exact=exact, filter=convert.to_filter(body.filter)))}

    def facet(self, request: Request) -> dict:
        body = request.parse(models.FacetRequest)
        response = self._collection(request).shard.facet(qe.FacetRequest(
            body.key,
            limit=body.limit if body.limit is not None else convert.DEFAULT_LIMIT,
            exact=bool(body.exact),
            filter=convert.to_filter(body.filter),
        ))
        return {"hits": [{"value": hit.value, "count": hit.count} for hit in response.hits]}


def accepts_gzip(accept_encoding: bytes) -> bool:
    """An Accept-Encoding value names gzip with a non-zero quality (gzip is the one coding served here)."""
    for token in accept_encoding.split(b","):
        coding, _, params = token.partition(b";")
        if coding.strip().lower() in (b"gzip", b"x-gzip"):
            quality = params.strip().lower()
            if not quality.startswith(b"q="):
                return True
            try:
                return float(quality[2:]) > 0
            except ValueError:  # a malformed quality: not an acceptance
                return False
    return False


def create_app(data_dir: str | Path, grpc_address: tuple[str, int] | None = None) -> EmbeddedQdrant:
    """The ASGI app serving the collections under `data_dir` (created if missing), and gRPC on
    `grpc_address` (host, port) while its lifespan runs, if given."""
    return EmbeddedQdrant(Path(data_dir), grpc_address)
