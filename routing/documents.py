"""Texts sent instead of vectors (Qdrant's `Document`) and raw vectors: where they sit in a request body.

Pure: `find_vectors` parses a body once and returns every Document in a vector position (with the
vector name it is for), and the name and length of every raw dense vector; `VectorsFound.fill`
then builds the body a colour gets, with that colour's embeddings in place of the Documents.
Positions (Qdrant's OpenAPI, 1.19):
- reads (`points/query`, `query/groups`, each of `query/batch`'s `searches[]`, at the top level and at
  every `prefetch` depth): `query`, `query.nearest`, `query.recommend.positive[]`/`negative[]`,
  `query.discover.target`, `query.discover.context` and `query.context` (a pair or a list of pairs)
  `.positive`/`.negative`, `query.relevance_feedback.target` and `.feedback[].example`; the vector
  name is that level's `using`;
- writes: `points[].vector` (plain or `{name: ...}`) of `PUT points` and `PUT points/vectors`,
  `batch.vectors[]` and `batch.vectors.{name}[]`, and the same inside `points/batch`'s
  `operations[].upsert` and `operations[].update_vectors`;
- the older search, recommend and discover APIs take raw vectors only (no Documents): their lengths
  are reported, for pinning by dimension.
A bare string or number in a vector position is a point id; `{"image": ...}`, `{"object": ...}`
and sparse vectors are neither Documents nor dense vectors and are left alone.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

try:  # in the embed extra: parses a 384-float body ~4x and writes one ~20x faster than json
    import orjson
except ImportError:  # pragma: no cover - the lean install has no route that embeds
    orjson = None

# A body without this cannot hold a Document: it is not parsed for them.
TEXT_MARKER = b'"text"'

UNNAMED = ""  # the vector name of a collection's single unnamed vector

QUERY_OPERATIONS = frozenset({"query", "query_batch", "query_groups"})
WRITE_OPERATIONS = frozenset({"upsert", "update_vectors", "batch"})
# Older read APIs: raw vectors only.
RAW_ONLY_OPERATIONS = frozenset({
    "search", "search_batch", "search_groups",
    "recommend", "recommend_batch", "recommend_groups",
    "discover", "discover_batch",
})
VECTOR_OPERATIONS = QUERY_OPERATIONS | WRITE_OPERATIONS | RAW_ONLY_OPERATIONS

_DOCUMENT_KEYS = frozenset({"text", "model", "options"})


@dataclass(slots=True)
class DocumentSite:
    """One Document: `holder[key]` is replaced by its embedding."""

    holder: Any  # the dict or list holding it
    key: Any  # str or int
    vector: str  # vector name it is for (UNNAMED: the unnamed vector)
    text: str
    model: str  # as the client sent it; the colour's embedder decides, not this
    original: dict  # the Document as sent, put back where a colour has no embedder for its vector


@dataclass(slots=True)
class VectorsFound:
    document: Any  # the parsed body
    parsed_by_orjson: bool = False  # then orjson can write it back exactly; else json does
    sites: list[DocumentSite] = field(default_factory=list)
    raw: list[tuple[str, int]] = field(default_factory=list)  # (vector name, length) of raw dense vectors

    def texts_by_vector(self) -> dict[str, list[str]]:
        """Texts per vector name, in site order (the order `fill` expects)."""
        return texts_by_vector(self.sites)

    def fill(self, vectors: dict[str, list[list[float]]]) -> bytes:
        """The body with each Document replaced by its vector (`vectors[name][i]`: the i-th Document for
        that vector name; a name missing from `vectors` keeps its Documents as sent). Sets and serialises
        in one go, so one parsed body serves every colour."""
        taken: dict[str, int] = {}
        for site in self.sites:
            embedded = vectors.get(site.vector)
            if embedded is None:
                site.holder[site.key] = site.original
                continue
            index = taken.get(site.vector, 0)
            taken[site.vector] = index + 1
            site.holder[site.key] = embedded[index]
        if self.parsed_by_orjson:
            return orjson.dumps(self.document)
        return json.dumps(self.document, separators=(",", ":")).encode()


def texts_by_vector(sites: Iterable[Any]) -> dict[str, list[str]]:
    """The texts of Documents (each with `.vector` and `.text`) per vector name, in their order."""
    grouped: dict[str, list[str]] = {}
    for site in sites:
        grouped.setdefault(site.vector, []).append(site.text)
    return grouped


def find_vectors(operation: str, body: bytes, passthrough_models: frozenset[str], with_raw: bool) -> VectorsFound | None:
    """The Documents (and, with `with_raw`, raw vector lengths) of a body, or None when there is
    nothing: an operation without vector positions, no `"text"` in a body when raw vectors are not
    wanted, or a body that is not JSON (the upstream answers it with its own error)."""
    walk = _WALKERS.get(operation)
    if walk is None or (not with_raw and TEXT_MARKER not in body) or (operation in RAW_ONLY_OPERATIONS and not with_raw):
        return None
    try:
        document, fast = _loads(body)
    except ValueError:
        return None
    found = VectorsFound(document, fast)
    if isinstance(document, dict):
        walk(document, _Collector(found, passthrough_models, with_raw))
    if not found.sites and not found.raw:
        return None
    return found


# 19 digits in a row may be an integer beyond 64 bits, which orjson would read as a float. Found by
# mapping every digit to "0" and looking for 19 of them (a regex takes ~0.5 ms on a 3 KB vector body).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGITS = b"0" * 19


def _loads(body: bytes) -> tuple[Any, bool]:
    """The parsed body, and whether orjson parsed it. What orjson cannot read exactly (NaN, lone
    surrogates, integers beyond 64 bits) is read by Python's json, and written back by it."""
    if orjson is not None and _LONG_DIGITS not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(body), False


def pinned_colour(raw: Iterable[tuple[str, int]], dimensions: Callable[[str, str], int | None], colours: tuple[str, ...]) -> str | None:
    """The colour raw vectors pin a request to: the only one they all fit; the first (blue) when they
    fit none (Qdrant's dimension error then comes from it); None when more than one fits."""
    fitting = fitting_colours(raw, dimensions, colours)
    if len(fitting) == 1:
        return fitting[0]
    return colours[0] if not fitting else None


def fitting_colours(raw: Iterable[tuple[str, int]], dimensions: Callable[[str, str], int | None], colours: tuple[str, ...]) -> tuple[str, ...]:
    """The colours every raw vector fits: `dimensions(colour, vector name)` None means unknown (fits)."""
    fitting = []
    for colour in colours:
        if all((size := dimensions(colour, name)) is None or size == length for name, length in raw):
            fitting.append(colour)
    return tuple(fitting)


# ---------------------------------------------------------------- walking

class _Collector:
    __slots__ = ("found", "passthrough", "with_raw")

    def __init__(self, found: VectorsFound, passthrough: frozenset[str], with_raw: bool):
        self.found = found
        self.passthrough = passthrough
        self.with_raw = with_raw

    def vector(self, holder: Any, key: Any, name: str, documents: bool = True) -> None:
        """`holder[key]` sits where a vector goes: a Document, a raw dense (or multi) vector, or other."""
        value = holder[key]
        if isinstance(value, dict):
            if documents and _is_document(value) and value["model"].lower() not in self.passthrough:
                self.found.sites.append(DocumentSite(holder, key, name, value["text"], value["model"], value))
        elif self.with_raw and isinstance(value, list) and value:
            first = value[0]
            if isinstance(first, (int, float)) and not isinstance(first, bool):
                self.found.raw.append((name, len(value)))
            elif isinstance(first, list) and first and isinstance(first[0], (int, float)):
                self.found.raw.append((name, len(first)))  # a multivector: each of its vectors

    def each(self, holder: Any, key: Any, name: str, documents: bool = True) -> None:
        """`holder[key]` is a list of vector positions."""
        items = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(items, list):
            for index in range(len(items)):
                self.vector(items, index, name, documents)


def _is_document(value: dict) -> bool:
    return isinstance(value.get("text"), str) and isinstance(value.get("model"), str) and value.keys() <= _DOCUMENT_KEYS


def _using(level: dict) -> str:
    using = level.get("using")
    return using if isinstance(using, str) else UNNAMED


def _query_level(level: dict, collect: _Collector) -> None:
    """One query request (top level, a prefetch, or one of a batch's searches)."""
    name = _using(level)
    if "query" in level:
        _query(level, collect, name)
    prefetch = level.get("prefetch")
    for nested in (prefetch if isinstance(prefetch, list) else [prefetch]):
        if isinstance(nested, dict):
            _query_level(nested, collect)


def _query(level: dict, collect: _Collector, name: str) -> None:
    query = level["query"]
    if not isinstance(query, dict) or _is_document(query):
        collect.vector(level, "query", name)
        return
    if "nearest" in query:
        collect.vector(query, "nearest", name)
    recommend = query.get("recommend")
    if isinstance(recommend, dict):
        collect.each(recommend, "positive", name)
        collect.each(recommend, "negative", name)
    discover = query.get("discover")
    if isinstance(discover, dict):
        if "target" in discover:
            collect.vector(discover, "target", name)
        _context_pairs(discover.get("context"), collect, name)
    if "context" in query:
        _context_pairs(query["context"], collect, name)
    feedback = query.get("relevance_feedback")
    if isinstance(feedback, dict):
        if "target" in feedback:
            collect.vector(feedback, "target", name)
        examples = feedback.get("feedback")
        for item in examples if isinstance(examples, list) else ():
            if isinstance(item, dict) and "example" in item:
                collect.vector(item, "example", name)


def _context_pairs(context: Any, collect: _Collector, name: str, documents: bool = True) -> None:
    for pair in context if isinstance(context, list) else [context]:
        if isinstance(pair, dict):
            for side in ("positive", "negative"):
                if side in pair:
                    collect.vector(pair, side, name, documents)


def _query_batch(body: dict, collect: _Collector) -> None:
    for search in _searches(body):
        _query_level(search, collect)


def _searches(body: dict) -> list[dict]:
    searches = body.get("searches")
    return [s for s in searches if isinstance(s, dict)] if isinstance(searches, list) else []


def _point_vector(point: Any, collect: _Collector) -> None:
    """`vector` of one point: a vector or Document (unnamed), or `{name: vector or Document}`."""
    if not isinstance(point, dict) or "vector" not in point:
        return
    vector = point["vector"]
    if isinstance(vector, dict) and not _is_document(vector):
        for name in list(vector):
            collect.vector(vector, name, name)
    else:
        collect.vector(point, "vector", UNNAMED)


def _points_or_batch(body: dict, collect: _Collector) -> None:
    """`PUT points` and `operations[].upsert`: `points[]` or `batch`; `PUT points/vectors`: `points[]`."""
    points = body.get("points")
    if isinstance(points, list):
        for point in points:
            _point_vector(point, collect)
    batch = body.get("batch")
    vectors = batch.get("vectors") if isinstance(batch, dict) else None
    if isinstance(vectors, list):
        for index in range(len(vectors)):
            collect.vector(vectors, index, UNNAMED)
    elif isinstance(vectors, dict):
        for name in list(vectors):
            collect.each(vectors, name, name)


def _operations(body: dict, collect: _Collector) -> None:
    operations = body.get("operations")
    for operation in operations if isinstance(operations, list) else ():
        if not isinstance(operation, dict):
            continue
        for kind in ("upsert", "update_vectors"):
            inner = operation.get(kind)
            if isinstance(inner, dict):
                _points_or_batch(inner, collect)


# The older APIs (raw vectors only).

def _search(body: dict, collect: _Collector) -> None:
    """`vector`: a dense vector, or `{name, vector}` (named)."""
    if "vector" not in body:
        return
    vector = body["vector"]
    if isinstance(vector, dict) and isinstance(vector.get("name"), str) and "vector" in vector:
        collect.vector(vector, "vector", vector["name"], documents=False)
    else:
        collect.vector(body, "vector", UNNAMED, documents=False)


def _recommend(body: dict, collect: _Collector) -> None:
    name = _using(body)
    collect.each(body, "positive", name, documents=False)
    collect.each(body, "negative", name, documents=False)


def _discover(body: dict, collect: _Collector) -> None:
    name = _using(body)
    if "target" in body:
        collect.vector(body, "target", name, documents=False)
    _context_pairs(body.get("context"), collect, name, documents=False)


def _batched(single: Callable[[dict, _Collector], None]) -> Callable[[dict, _Collector], None]:
    def walk(body: dict, collect: _Collector) -> None:
        for search in _searches(body):
            single(search, collect)

    return walk


_WALKERS: dict[str, Callable[[dict, _Collector], None]] = {
    "query": _query_level,
    "query_groups": _query_level,
    "query_batch": _query_batch,
    "upsert": _points_or_batch,
    "update_vectors": _points_or_batch,
    "batch": _operations,
    "search": _search,
    "search_groups": _search,
    "search_batch": _batched(_search),
    "recommend": _recommend,
    "recommend_groups": _recommend,
    "recommend_batch": _batched(_recommend),
    "discover": _discover,
    "discover_batch": _batched(_discover),
}
