"""Green's create request and payload indexes from blue's collection info, and its layout in one line. Pure."""
from __future__ import annotations

from typing import Any

from routing.layout import is_unnamed, vector_names, vector_params, vectors_of

DISTANCES = {"cosine": "Cosine", "euclid": "Euclid", "dot": "Dot", "manhattan": "Manhattan"}

# GET /collections/{name} `result.config.params` keys that a create request takes as they are.
_PARAM_KEYS = ("shard_number", "sharding_method", "replication_factor", "write_consistency_factor", "on_disk_payload")
# `result.config` key -> create request key.
_CONFIG_KEYS = {
    "hnsw_config": "hnsw_config", "optimizer_config": "optimizers_config", "wal_config": "wal_config",
    "quantization_config": "quantization_config", "strict_mode_config": "strict_mode_config", "metadata": "metadata",
}


class LayoutError(ValueError):
    pass


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    return value


def pick_vector(vectors: Any, wanted: str | None, collection: str) -> str:
    """Which vector the flags apply to: '' for an unnamed vector, else a name (the only one, or --vector)."""
    if is_unnamed(vectors):
        if wanted:
            raise LayoutError(f"{collection} has one unnamed vector: --vector {wanted} does not apply")
        return ""
    names = sorted(vectors or {})
    if wanted:
        if wanted not in names:
            raise LayoutError(f"{collection} has no vector named {wanted!r} (it has: {', '.join(names) or 'none'})")
        return wanted
    if len(names) != 1:
        raise LayoutError(f"{collection} has named vectors {', '.join(names) or '(none)'}: say which with --vector NAME")
    return names[0]


def normalise_distance(value: str) -> str:
    try:
        return DISTANCES[value.lower()]
    except KeyError:
        raise LayoutError(f"--distance {value}: expected one of {', '.join(DISTANCES.values())}") from None


def green_create_request(blue_info: dict, size: int | None = None, distance: str | None = None,
                         vector: str | None = None, blue_name: str = "blue") -> dict:
    """The PUT /collections/{green} body that reproduces blue's layout, with the new model's size/distance."""
    config = blue_info.get("config") or {}
    params = config.get("params") or {}
    vectors = _without_none(vectors_of(blue_info))
    if (size is not None or distance is not None or vector) and vectors:
        name = pick_vector(vectors, vector, blue_name)
        target = vector_params(vectors, name)
        if size is not None:
            target["size"] = size
        if distance is not None:
            target["distance"] = normalise_distance(distance)
    body: dict[str, Any] = {"vectors": vectors if vectors is not None else {}}
    if params.get("sparse_vectors"):
        body["sparse_vectors"] = _without_none(params["sparse_vectors"])
    for key in _PARAM_KEYS:
        if params.get(key) is not None:
            body[key] = params[key]
    for info_key, create_key in _CONFIG_KEYS.items():
        value = config.get(info_key)
        if value:
            body[create_key] = _without_none(value)
    return body


def index_requests(payload_schema: dict) -> list[dict]:
    """PUT /collections/{name}/index bodies recreating each payload index (with its parameters)."""
    requests = []
    for field, index in sorted((payload_schema or {}).items()):
        schema = index.get("params") or index.get("data_type")
        requests.append({"field_name": field, "field_schema": schema})
    return requests


def index_type(index: dict) -> str:
    params = index.get("params") or {}
    return params.get("type") or index.get("data_type") or "?"


def describe_layout(info: dict) -> str:
    """One line: vectors, HNSW m / ef_construct, quantization."""
    config = info.get("config") or {}
    vectors = vectors_of(info)
    parts = []
    for name in vector_names(vectors):
        p = vector_params(vectors, name)
        parts.append(f"{name or 'vector'} {p.get('size')}d {p.get('distance')}" + (" on_disk" if p.get("on_disk") else ""))
    sparse = (config.get("params") or {}).get("sparse_vectors") or {}
    parts += [f"sparse {name}" for name in sorted(sparse)]
    hnsw = config.get("hnsw_config") or {}
    parts.append(f"hnsw m={hnsw.get('m')} ef_construct={hnsw.get('ef_construct')}")
    quantization = config.get("quantization_config") or {}
    parts.append("quantization " + (", ".join(f"{kind} {_quantization_detail(kind, v)}" for kind, v in quantization.items()) or "none"))
    return "; ".join(parts)


def _quantization_detail(kind: str, value: dict) -> str:
    if kind == "scalar":
        return value.get("type", "int8")
    if kind == "product":
        return value.get("compression", "")
    return value.get("encoding") or "1bit"
