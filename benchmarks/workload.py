"""What the load looks like: Qdrant search requests, the points they search, and a realistic result.

Everything is generated from fixed seeds, so every run and every target sees the same bytes.
"""
from __future__ import annotations

import json

import numpy as np

DIMENSIONS = 384  # MiniLM-sized embeddings
SEARCH_LIMIT = 10
_SECTIONS = ("introduction", "installation", "configuration", "operations", "troubleshooting", "reference")
_TEXT = (
    "Blue/green rollouts move read traffic from the live collection to its replacement in steps, "
    "keeping each user on one side so that result pages stay consistent while the share grows."
)


def _unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSIONS), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _rounded(vector: np.ndarray) -> list[float]:
    # Four decimals keep bodies the size real clients send (~3 KB) without changing the search.
    return np.round(vector.astype(np.float64), 4).tolist()


def payload(point_id: int) -> dict:
    return {
        "doc_id": f"doc-{point_id // 20:05d}",
        "title": f"Operating guide, part {point_id % 97}",
        "section": _SECTIONS[point_id % len(_SECTIONS)],
        "lang": "en",
        "chunk": point_id % 20,
        "text": _TEXT,
    }


def search_bodies(count: int, seed: int = 7) -> list[bytes]:
    """`POST /collections/{name}/points/search` bodies, one distinct query vector each."""
    return [
        json.dumps(
            {"vector": _rounded(vector), "limit": SEARCH_LIMIT, "with_payload": True}, separators=(",", ":")
        ).encode()
        for vector in _unit_vectors(count, seed)
    ]


def point_batches(total: int, batch_size: int, seed: int = 11):
    """`PUT /collections/{name}/points` bodies covering ids 1..total."""
    vectors = _unit_vectors(total, seed)
    for start in range(0, total, batch_size):
        points = [
            {"id": i + 1, "vector": _rounded(vectors[i]), "payload": payload(i + 1)}
            for i in range(start, min(start + batch_size, total))
        ]
        yield json.dumps({"points": points}, separators=(",", ":")).encode()


def search_result_body() -> str:
    """What the fixed-response upstream answers: 10 scored points with payloads, Qdrant's envelope.

    The text holds no `$`, `'` or `\\`, so it can sit verbatim in an nginx `return` string.
    """
    points = [
        {"id": 4100 + rank * 37, "version": 3, "score": round(0.8731 - rank * 0.0117, 4), "payload": payload(4100 + rank * 37)}
        for rank in range(SEARCH_LIMIT)
    ]
    return json.dumps({"result": points, "status": "ok", "time": 0.001}, separators=(",", ":"))


# ---------------------------------------------------------------- text queries (benchmarks/embedding.py)

_ASK = ("how do I", "why does", "when should I", "what happens if I", "is it safe to", "can I")
_ACT = ("rotate", "back up", "restore", "resize", "migrate", "monitor", "compress", "encrypt", "shard", "replicate",
        "index", "snapshot")
_THING = ("the payment service logs", "a customer database", "the search cluster", "my holiday photos",
          "the billing invoices", "an old laptop disk", "the marketing videos", "a shared calendar")
_WHERE = ("in production", "over a slow network", "on a small budget", "before the release", "without downtime",
          "across two regions")


def query_texts(count: int, seed: int = 5) -> list[str]:
    """Distinct, sentence-like search queries of similar length (a fixed shuffle of slot combinations)."""
    combos = [(a, b, c, d) for a in _ASK for b in _ACT for c in _THING for d in _WHERE]
    if count > len(combos):
        raise ValueError(f"at most {len(combos)} distinct query texts")
    np.random.default_rng(seed).shuffle(combos)
    return [f"{ask} {act} {thing} {where}?" for ask, act, thing, where in combos[:count]]


def unit_vectors(count: int, dimensions: int, seed: int) -> list[list[float]]:
    """`count` random unit vectors of `dimensions`, rounded as clients send them."""
    vectors = np.random.default_rng(seed).standard_normal((count, dimensions), dtype=np.float32)
    return [_rounded(v) for v in vectors / np.linalg.norm(vectors, axis=1, keepdims=True)]
