"""Qdrant REST shapes (qdrant-client's pydantic models) to qdrant-edge objects, and edge results back to JSON."""
from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import Enum
from typing import Any, Callable, Optional, Union

import qdrant_edge as qe
from pydantic import BaseModel
from qdrant_client.http import models

from bluegreen_dev.embedded.errors import ApiError, unsupported, wrong_input

DEFAULT_LIMIT = 10  # Qdrant's default for query, scroll and prefetch
DEFAULT_RRF_K = 2  # Qdrant's default for `{"fusion": "rrf"}`
MAX_POINT_ID = 2**64 - 1

PointId = Union[int, uuid.UUID]


# ---------------------------------------------------------------- ids, vectors, payload selectors


def edge_id(value: Any) -> PointId:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_POINT_ID:
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ApiError(
        400,
        f"Format error in JSON body: value {value} is not a valid point ID, "
        "valid values are either an unsigned integer or a UUID",
    )


def id_json(point_id: PointId) -> int | str:
    return point_id if isinstance(point_id, int) else str(point_id)


def _vector_value(value: Any) -> Any:
    """One vector: dense (list of floats), multi-dense (list of lists) or sparse."""
    if isinstance(value, list):
        return value
    if isinstance(value, models.SparseVector):
        return qe.SparseVector(value.indices, value.values)
    raise unsupported("inference (`Document`, `Image` and `InferenceObject` vectors)")


def vector_struct(value: Any) -> Any:
    """A point's vectors: one unnamed vector, or a dict of named ones."""
    if isinstance(value, dict):
        return {name: _vector_value(vector) for name, vector in value.items()}
    return _vector_value(value)


def vector_json(value: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, dict):
        return {name: vector_json(vector) for name, vector in value.items()}
    if isinstance(value, qe.SparseVector):
        return {"indices": value.indices, "values": value.values}
    raise TypeError(f"unexpected vector type from qdrant-edge: {type(value).__name__}")


def with_payload(value: Any, default: bool) -> Any:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return qe.PayloadSelector.Include(value)
    if isinstance(value, models.PayloadSelectorInclude):
        return qe.PayloadSelector.Include(value.include)
    return qe.PayloadSelector.Exclude(value.exclude)


def with_vector(value: Any) -> Any:
    return False if value is None else value


# ---------------------------------------------------------------- points in, points out


def points_to_edge(body: models.PointsList | models.PointsBatch) -> list[qe.Point]:
    if isinstance(body, models.PointsList):
        return [qe.Point(edge_id(p.id), vector_struct(p.vector), p.payload) for p in body.points]
    batch = body.batch
    count = len(batch.ids)
    payloads = batch.payloads if batch.payloads is not None else [None] * count
    if isinstance(batch.vectors, dict):
        columns = batch.vectors
        if any(len(column) != count for column in columns.values()) or len(payloads) != count:
            raise wrong_input("batch ids, vectors and payloads must have the same length")
        vectors = [{name: column[i] for name, column in columns.items()} for i in range(count)]
    else:
        vectors = batch.vectors
        if len(vectors) != count or len(payloads) != count:
            raise wrong_input("batch ids, vectors and payloads must have the same length")
    return [qe.Point(edge_id(i), vector_struct(v), p) for i, v, p in zip(batch.ids, vectors, payloads)]


def scored_point_json(point: qe.ScoredPoint, include_vector: bool = True) -> dict:
    """Qdrant leaves out payload, vector and order_value when they are absent (serde skip_serializing_if)."""
    out = {"id": id_json(point.id), "version": point.version, "score": point.score}
    payload = point.payload
    if payload is not None:
        out["payload"] = payload
    if include_vector:
        vector = point.vector
        if vector is not None:
            out["vector"] = vector_json(vector)
    order_value = point.order_value
    if order_value is not None:
        out["order_value"] = order_value
    return out


def record_json(record: qe.Record) -> dict:
    out = {"id": id_json(record.id)}
    payload = record.payload
    if payload is not None:
        out["payload"] = payload
    vector = record.vector
    if vector is not None:
        out["vector"] = vector_json(vector)
    order_value = record.order_value
    if order_value is not None:
        out["order_value"] = order_value
    return out


# ---------------------------------------------------------------- filters


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def _geo_point(point: models.GeoPoint) -> qe.GeoPoint:
    return qe.GeoPoint(lon=point.lon, lat=point.lat)


def _match(match: Any) -> Any:
    if match is None:
        return None
    if isinstance(match, models.MatchValue):
        return qe.MatchValue(match.value)
    if isinstance(match, models.MatchAny):
        return qe.MatchAny(match.any)
    if isinstance(match, models.MatchExcept):
        return qe.MatchExcept(match.except_)
    if isinstance(match, models.MatchText):
        return qe.MatchText(match.text)
    if isinstance(match, models.MatchTextAny):
        return qe.MatchTextAny(match.text_any)
    if isinstance(match, models.MatchPhrase):
        return qe.MatchPhrase(match.phrase)
    if isinstance(match, models.MatchPrefix):
        return qe.MatchPrefix(match.prefix)
    if isinstance(match, models.MatchSubstring):
        return qe.MatchSubstring(match.substring)
    raise unsupported(f"match condition `{type(match).__name__}`")


def _range(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, models.Range):
        return qe.RangeFloat(gte=value.gte, gt=value.gt, lte=value.lte, lt=value.lt)
    return qe.RangeDateTime(gte=_iso(value.gte), gt=_iso(value.gt), lte=_iso(value.lte), lt=_iso(value.lt))


def _field_condition(condition: models.FieldCondition) -> qe.FieldCondition:
    box, radius, polygon, count = (
        condition.geo_bounding_box, condition.geo_radius, condition.geo_polygon, condition.values_count,
    )
    return qe.FieldCondition(
        condition.key,
        match=_match(condition.match),
        range=_range(condition.range),
        geo_bounding_box=box and qe.GeoBoundingBox(_geo_point(box.top_left), _geo_point(box.bottom_right)),
        geo_radius=radius and qe.GeoRadius(_geo_point(radius.center), radius.radius),
        geo_polygon=polygon and qe.GeoPolygon(
            [_geo_point(p) for p in polygon.exterior.points],
            [[_geo_point(p) for p in ring.points] for ring in polygon.interiors] if polygon.interiors else None,
        ),
        values_count=count and qe.ValuesCount(lt=count.lt, gt=count.gt, lte=count.lte, gte=count.gte),
        is_empty=condition.is_empty,
        is_null=condition.is_null,
    )


def _condition(condition: Any) -> Any:
    if isinstance(condition, models.FieldCondition):
        return _field_condition(condition)
    if isinstance(condition, models.Filter):
        return to_filter(condition)
    if isinstance(condition, models.HasIdCondition):
        return qe.HasIdCondition({edge_id(i) for i in condition.has_id})
    if isinstance(condition, models.IsEmptyCondition):
        return qe.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.IsNullCondition):
        return qe.IsNullCondition(condition.is_null.key)
    if isinstance(condition, models.HasVectorCondition):
        return qe.HasVectorCondition(condition.has_vector)
    if isinstance(condition, models.NestedCondition):
        return qe.NestedCondition(condition.nested.key, to_filter(condition.nested.filter))
    raise unsupported(f"filter condition `{type(condition).__name__}`")


def _conditions(value: Any) -> list | None:
    if value is None:
        return None
    return [_condition(c) for c in (value if isinstance(value, list) else [value])]


def to_filter(value: Optional[models.Filter]) -> qe.Filter | None:
    if value is None:
        return None
    min_should = value.min_should
    return qe.Filter(
        must=_conditions(value.must),
        should=_conditions(value.should),
        must_not=_conditions(value.must_not),
        min_should=min_should and qe.MinShould(_conditions(min_should.conditions), min_should.min_count),
    )


def excluding(base: qe.Filter | None, point_ids: set[PointId]) -> qe.Filter | None:
    """Qdrant leaves the points whose ids served as query examples out of the results."""
    if not point_ids:
        return base
    must_not = [qe.HasIdCondition(point_ids)]
    return qe.Filter(must=[base], must_not=must_not) if base is not None else qe.Filter(must_not=must_not)


def search_params(params: Optional[models.SearchParams]) -> qe.SearchParams | None:
    if params is None:
        return None
    if params.idf is not None:
        raise unsupported("search param `idf`")
    quantization, acorn = params.quantization, params.acorn
    return qe.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=bool(params.exact),
        quantization=quantization and qe.QuantizationSearchParams(
            ignore=bool(quantization.ignore), rescore=quantization.rescore, oversampling=quantization.oversampling,
        ),
        indexed_only=bool(params.indexed_only),
        acorn=acorn and qe.AcornSearchParams(enable=bool(acorn.enable), max_selectivity=acorn.max_selectivity),
    )


# ---------------------------------------------------------------- query, search


class SearchNamedVector(BaseModel):
    name: str
    vector: list[float]


class SearchNamedSparseVector(BaseModel):
    name: str
    vector: models.SparseVector


class SearchRequest(BaseModel):
    """The deprecated `/points/search` body, which qdrant-client 1.20 no longer models."""

    vector: Union[list[float], SearchNamedVector, SearchNamedSparseVector]
    filter: Optional[models.Filter] = None
    params: Optional[models.SearchParams] = None
    limit: int
    offset: Optional[int] = None
    with_payload: Optional[models.WithPayloadInterface] = None
    with_vector: Optional[models.WithVector] = None
    score_threshold: Optional[float] = None
    shard_key: Any = None  # one local shard: accepted and ignored


class SearchRequestBatch(BaseModel):
    searches: list[SearchRequest]


# The deprecated recommend and discover endpoints (still routed by Qdrant 1.19); qdrant-client 1.20 no
# longer models their bodies. Each becomes the equivalent `points/query` request.
ExampleOrVector = Union[int, str, list[float], models.SparseVector]


class _LegacyRead(BaseModel):
    filter: Optional[models.Filter] = None
    params: Optional[models.SearchParams] = None
    limit: int = DEFAULT_LIMIT
    offset: Optional[int] = None
    with_payload: Optional[models.WithPayloadInterface] = None
    with_vector: Optional[models.WithVector] = None
    score_threshold: Optional[float] = None
    using: Optional[str] = None
    lookup_from: Optional[models.LookupLocation] = None
    shard_key: Any = None  # one local shard: accepted and ignored

    def query_request(self, query: Any) -> models.QueryRequest:
        return models.QueryRequest(
            query=query, using=self.using, lookup_from=self.lookup_from, filter=self.filter, params=self.params,
            limit=self.limit, offset=self.offset, with_payload=self.with_payload, with_vector=self.with_vector,
            score_threshold=self.score_threshold,
        )


class RecommendRequest(_LegacyRead):
    positive: list[ExampleOrVector] = []
    negative: list[ExampleOrVector] = []
    strategy: Optional[models.RecommendStrategy] = None

    def to_query(self) -> models.QueryRequest:
        return self.query_request(models.RecommendQuery(recommend=models.RecommendInput(
            positive=self.positive, negative=self.negative, strategy=self.strategy)))


class RecommendRequestBatch(BaseModel):
    searches: list[RecommendRequest]


class ContextExamplePair(BaseModel):
    positive: ExampleOrVector
    negative: ExampleOrVector


class DiscoverRequest(_LegacyRead):
    target: Optional[ExampleOrVector] = None
    context: Optional[list[ContextExamplePair]] = None

    def to_query(self) -> models.QueryRequest:
        pairs = [models.ContextPair(positive=p.positive, negative=p.negative) for p in self.context or []]
        if self.target is None:
            return self.query_request(models.ContextQuery(context=pairs))
        return self.query_request(models.DiscoverQuery(discover=models.DiscoverInput(target=self.target, context=pairs)))


class DiscoverRequestBatch(BaseModel):
    searches: list[DiscoverRequest]


class _Groups(BaseModel):
    group_by: str
    group_size: int = 3
    with_lookup: Optional[models.WithLookupInterface] = None


class SearchGroupsRequest(SearchRequest, _Groups):
    def to_query(self) -> models.QueryRequest:
        vector = self.vector
        query, using = (vector, None) if isinstance(vector, list) else (vector.vector, vector.name)
        return models.QueryRequest(
            query=query, using=using, filter=self.filter, params=self.params, limit=self.limit,
            with_payload=self.with_payload, with_vector=self.with_vector, score_threshold=self.score_threshold)


class RecommendGroupsRequest(RecommendRequest, _Groups):
    pass


def select_payload(payload: dict | None, selector: Any) -> dict | None:
    """A payload as a request's `with_payload` asks for it (top-level keys)."""
    if payload is None or selector is None or selector is False:
        return None
    if selector is True:
        return payload
    if isinstance(selector, list):
        return {k: v for k, v in payload.items() if k in selector}
    if isinstance(selector, models.PayloadSelectorInclude):
        return {k: v for k, v in payload.items() if k in selector.include}
    return {k: v for k, v in payload.items() if k not in selector.exclude}


def group_values(payload: dict | None, key: str) -> list:
    """The values of `key` (a dotted path) a point is grouped under: strings and integers, arrays spread."""
    value: Any = payload or {}
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, (str, int)) and not isinstance(v, bool)]


def search_to_edge(request: SearchRequest) -> qe.QueryRequest:
    vector = request.vector
    if isinstance(vector, list):
        query = qe.Query.Nearest(vector)
    else:
        query = qe.Query.Nearest(_vector_value(vector.vector), using=vector.name)
    return qe.QueryRequest(
        limit=request.limit,
        offset=request.offset,
        query=query,
        filter=to_filter(request.filter),
        params=search_params(request.params),
        with_vector=with_vector(request.with_vector),
        with_payload=with_payload(request.with_payload, False),
        score_threshold=request.score_threshold,
    )


# fetch_vector(collection or None for the queried one, point id, vector name) -> the stored vector
FetchVector = Callable[[Optional[str], PointId, str], Any]


class QueryConverter:
    """Builds edge query requests; point ids given in place of vectors are looked up with `fetch_vector`."""

    def __init__(self, fetch_vector: FetchVector):
        self.fetch_vector = fetch_vector

    def request(self, request: models.QueryRequest) -> qe.QueryRequest:
        limit = request.limit if request.limit is not None else DEFAULT_LIMIT
        used_ids: set[PointId] = set()
        query = self._scoring(request.query, request.using, request.lookup_from, limit, used_ids)
        return qe.QueryRequest(
            limit=limit,
            offset=request.offset,
            query=query,
            prefetches=self._prefetches(request.prefetch),
            with_vector=with_vector(request.with_vector),
            with_payload=with_payload(request.with_payload, False),
            filter=excluding(to_filter(request.filter), used_ids),
            score_threshold=request.score_threshold,
            params=search_params(request.params),
        )

    def _prefetches(self, prefetch: Any) -> list[qe.Prefetch] | None:
        if prefetch is None:
            return None
        return [self._prefetch(p) for p in (prefetch if isinstance(prefetch, list) else [prefetch])]

    def _prefetch(self, prefetch: models.Prefetch) -> qe.Prefetch:
        limit = prefetch.limit if prefetch.limit is not None else DEFAULT_LIMIT
        used_ids: set[PointId] = set()
        query = self._scoring(prefetch.query, prefetch.using, prefetch.lookup_from, limit, used_ids)
        return qe.Prefetch(
            limit=limit,
            query=query,
            prefetches=self._prefetches(prefetch.prefetch),
            params=search_params(prefetch.params),
            filter=excluding(to_filter(prefetch.filter), used_ids),
            score_threshold=prefetch.score_threshold,
        )

    def _vector(self, value: Any, using: str | None, lookup_from: Any, used_ids: set[PointId]) -> Any:
        if isinstance(value, (int, str, uuid.UUID)) and not isinstance(value, bool):
            point_id = edge_id(value)
            collection = lookup_from.collection if lookup_from is not None else None
            name = (lookup_from.vector if lookup_from is not None and lookup_from.vector else using) or ""
            if collection is None:
                used_ids.add(point_id)
            return self.fetch_vector(collection, point_id, name)
        return _vector_value(value)

    def _scoring(self, query: Any, using: str | None, lookup_from: Any, limit: int, used_ids: set[PointId]) -> Any:
        def vector(value: Any) -> Any:
            return self._vector(value, using, lookup_from, used_ids)

        def pairs(context: Any) -> list[qe.ContextPair]:
            items = context if isinstance(context, list) else [context]
            return [qe.ContextPair(vector(pair.positive), vector(pair.negative)) for pair in items]

        if query is None:
            return None
        if isinstance(query, models.NearestQuery):
            if query.mmr is None:
                return qe.Query.Nearest(vector(query.nearest), using=using)
            diversity = query.mmr.diversity if query.mmr.diversity is not None else 0.5
            candidates = query.mmr.candidates_limit if query.mmr.candidates_limit is not None else limit
            return qe.Mmr(vector(query.nearest), lambda_=1.0 - diversity, candidates_limit=candidates, using=using)
        if isinstance(query, models.RecommendQuery):
            recommend = query.recommend
            positive = [vector(v) for v in recommend.positive or []]
            negative = [vector(v) for v in recommend.negative or []]
            strategy = recommend.strategy or models.RecommendStrategy.AVERAGE_VECTOR
            if strategy == models.RecommendStrategy.AVERAGE_VECTOR:
                return qe.Query.Nearest(average_vector(positive, negative), using=using)
            examples = qe.RecommendQuery(positive, negative)
            if strategy == models.RecommendStrategy.BEST_SCORE:
                return qe.Query.RecommendBestScore(examples, using=using)
            return qe.Query.RecommendSumScores(examples, using=using)
        if isinstance(query, models.DiscoverQuery):
            target = vector(query.discover.target)
            return qe.Query.Discover(qe.DiscoverQuery(target, pairs(query.discover.context)), using=using)
        if isinstance(query, models.ContextQuery):
            return qe.Query.Context(qe.ContextQuery(pairs(query.context)), using=using)
        if isinstance(query, models.OrderByQuery):
            return order_by(query.order_by)
        if isinstance(query, models.FusionQuery):
            return qe.Fusion.Rrf(k=DEFAULT_RRF_K) if query.fusion == models.Fusion.RRF else qe.Fusion.Dbsf()
        if isinstance(query, models.RrfQuery):
            k = query.rrf.k if query.rrf.k is not None else DEFAULT_RRF_K
            return qe.Fusion.Rrf(k=k, weights=query.rrf.weights)
        if isinstance(query, models.SampleQuery):
            return qe.Sample.Random
        if isinstance(query, BaseModel) and not isinstance(query, models.SparseVector):
            raise unsupported(f"query `{type(query).__name__}`")
        return qe.Query.Nearest(vector(query), using=using)


def average_vector(positive: list, negative: list) -> list[float]:
    """Qdrant's `average_vector` recommendation: avg(positive) + (avg(positive) - avg(negative))."""
    if not positive:
        raise wrong_input("Positive vectors should not be empty with `average_vector` strategy")
    if not all(isinstance(v, list) and (not v or not isinstance(v[0], list)) for v in positive + negative):
        raise unsupported("`average_vector` recommendation with sparse or multi-vectors")

    def mean(vectors: list[list[float]]) -> list[float]:
        return [sum(column) / len(vectors) for column in zip(*vectors)]

    average_positive = mean(positive)
    if not negative:
        return average_positive
    return [2 * p - n for p, n in zip(average_positive, mean(negative))]


def order_by(value: str | models.OrderBy | None) -> qe.OrderBy | None:
    if value is None:
        return None
    if isinstance(value, str):
        return qe.OrderBy(value)
    direction = None if value.direction is None else (
        qe.Direction.Asc if value.direction == models.Direction.ASC else qe.Direction.Desc
    )
    start = value.start_from
    if isinstance(start, (datetime, date)):
        start = start.isoformat()
    return qe.OrderBy(value.key, direction=direction, start_from=start)


# ---------------------------------------------------------------- collection config and payload indexes


def edge_enum(enum: Any, value: Enum | str | None, what: str) -> Any:
    """Qdrant's enum value to the edge member of the same name: `one_and_half_bits` -> OneAndHalfBits."""
    if value is None:
        return None
    text = value.value if isinstance(value, Enum) else value
    wanted = text.replace("_", "").lower()
    for name in dir(enum):
        if name.lower() == wanted and not name.startswith("_"):
            return getattr(enum, name)
    raise unsupported(f"{what} `{text}`")


def memory(value: Enum | str | None) -> qe.Memory | None:
    return edge_enum(qe.Memory, value, "memory placement")


HNSW_DEFAULTS = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000, "max_indexing_threads": 0}


def effective_hnsw(*diffs: Optional[models.HnswConfigDiff]) -> dict:
    """Qdrant's defaults overlaid with each diff in turn (collection level, then per vector)."""
    config = dict(HNSW_DEFAULTS)
    for diff in diffs:
        if diff is not None:
            config.update(diff.model_dump(exclude_none=True, mode="json"))
    return config


def _hnsw(*diffs: Optional[models.HnswConfigDiff]) -> qe.HnswIndexConfig | None:
    if diffs[-1] is None:
        return None
    config = effective_hnsw(*diffs)
    config["memory"] = memory(config.get("memory"))
    return qe.HnswIndexConfig(**config)


def quantization(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, models.ScalarQuantization):
        s = value.scalar
        return qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=s.quantile, always_ram=s.always_ram, memory=memory(s.memory),
        )
    if isinstance(value, models.ProductQuantization):
        p = value.product
        compression = edge_enum(qe.CompressionRatio, p.compression, "compression ratio")
        return qe.ProductQuantizationConfig(compression=compression, always_ram=p.always_ram, memory=memory(p.memory))
    if isinstance(value, models.BinaryQuantization):
        b = value.binary
        return qe.BinaryQuantizationConfig(
            always_ram=b.always_ram,
            encoding=edge_enum(qe.BinaryQuantizationEncoding, b.encoding, "binary quantization encoding"),
            query_encoding=edge_enum(qe.BinaryQuantizationQueryEncoding, b.query_encoding, "binary query encoding"),
            memory=memory(b.memory),
        )
    raise unsupported(f"quantization `{type(value).__name__}`")


def _vector_params(params: models.VectorParams, collection_hnsw: Optional[models.HnswConfigDiff]) -> qe.EdgeVectorParams:
    return qe.EdgeVectorParams(
        size=params.size,
        distance=edge_enum(qe.Distance, params.distance, "distance"),
        on_disk=params.on_disk,
        multivector_config=params.multivector_config and qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
        datatype=edge_enum(qe.VectorStorageDatatype, params.datatype, "vector datatype"),
        quantization_config=quantization(params.quantization_config),
        hnsw_config=_hnsw(collection_hnsw, params.hnsw_config),
        memory=memory(params.memory),
    )


def _sparse_params(params: models.SparseVectorParams) -> qe.EdgeSparseVectorParams:
    index = params.index or models.SparseIndexParams()
    return qe.EdgeSparseVectorParams(
        full_scan_threshold=index.full_scan_threshold,
        on_disk=index.on_disk,
        modifier=qe.Modifier.Idf if params.modifier == models.Modifier.IDF else None,
        datatype=edge_enum(qe.VectorStorageDatatype, index.datatype, "sparse vector datatype"),
        memory=memory(index.memory),
    )


def edge_config(create: models.CreateCollection) -> qe.EdgeConfig:
    """What qdrant-edge can apply; cluster, WAL and strict-mode settings have no meaning in one local shard."""
    vectors = create.vectors
    if isinstance(vectors, models.VectorParams):
        dense = _vector_params(vectors, create.hnsw_config)
    elif vectors:
        dense = {name: _vector_params(params, create.hnsw_config) for name, params in vectors.items()}
    else:
        dense = None
    optimizers = create.optimizers_config
    payload_memory = create.payload.memory if create.payload is not None else None
    return qe.EdgeConfig(
        vectors=dense,
        sparse_vectors={name: _sparse_params(p) for name, p in create.sparse_vectors.items()}
        if create.sparse_vectors else None,
        on_disk_payload=create.on_disk_payload,
        hnsw_config=_hnsw(create.hnsw_config),
        quantization_config=quantization(create.quantization_config),
        optimizers=optimizers and qe.EdgeOptimizersConfig(
            deleted_threshold=optimizers.deleted_threshold,
            vacuum_min_vector_number=optimizers.vacuum_min_vector_number,
            default_segment_number=optimizers.default_segment_number,
            max_segment_size=optimizers.max_segment_size,
            indexing_threshold=optimizers.indexing_threshold,
            prevent_unoptimized=optimizers.prevent_unoptimized,
        ),
        payload_memory=memory(payload_memory),
    )


_TEXT_PARAMS_EDGE_LACKS = ("stopwords", "stemmer", "scoring")


def field_schema(schema: Any) -> Any:
    if schema is None:
        raise wrong_input("field_schema is required")
    if isinstance(schema, models.PayloadSchemaType):
        return edge_enum(qe.PayloadSchemaType, schema, "payload schema type")
    params = schema.model_dump(exclude_none=True, mode="json")
    kind = params.pop("type")
    if "memory" in params:
        params["memory"] = memory(params["memory"])
    if kind == "text":
        for key in _TEXT_PARAMS_EDGE_LACKS:
            if key in params:
                raise unsupported(f"text index parameter `{key}`")
        params["tokenizer"] = edge_enum(qe.TokenizerType, params.get("tokenizer"), "tokenizer")
    return getattr(qe, f"{kind.capitalize()}IndexParams")(**params)
