"""A collection's vector layout as Qdrant describes it in `GET /collections/{name}`'s `result`. Pure.

`config.params.vectors` is either one unnamed vector's parameters (`{"size": 384, "distance": ...}`)
or a map of names to parameters (`{"dense": {"size": 384, ...}, ...}`). The unnamed vector's name is
"" here, as in `routing.documents.UNNAMED`.
"""
from __future__ import annotations

from typing import Any


def vectors_of(info: Any) -> Any:
    """`config.params.vectors` of a collection's info, or None when it does not say."""
    config = info.get("config") if isinstance(info, dict) else None
    params = config.get("params") if isinstance(config, dict) else None
    return params.get("vectors") if isinstance(params, dict) else None


def is_unnamed(vectors: Any) -> bool:
    """One unnamed vector (rather than named ones)."""
    return isinstance(vectors, dict) and isinstance(vectors.get("size"), int)


def vector_names(vectors: Any) -> list[str]:
    """'' for the unnamed vector, else the names, sorted."""
    return [""] if is_unnamed(vectors) else sorted(vectors or {})


def vector_params(vectors: Any, name: str) -> dict:
    """The parameters of vector `name` ('' for the unnamed one)."""
    return vectors if name == "" else vectors[name]


def dense_sizes(vectors: Any) -> dict[str, int]:
    """Vector name ('' for the unnamed one) -> size of each dense vector whose size is known."""
    if is_unnamed(vectors):
        return {"": vectors["size"]}
    if not isinstance(vectors, dict):
        return {}
    return {name: params["size"] for name, params in vectors.items()
            if isinstance(params, dict) and isinstance(params.get("size"), int)}
