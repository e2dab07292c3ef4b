"""Whether a point in GREEN is the one BLUE holds: vectors up to float32 noise, payloads key by key. Pure."""
from __future__ import annotations

import math
from typing import Any


def same_vector(a: Any, b: Any, tolerance: float = 1e-6) -> bool:
    """Vectors as Qdrant returns them (dense, multi-dense, sparse or named), equal up to float32 noise.

    A cosine collection normalises what it stores, so a copied vector may differ in the last bits."""
    if isinstance(a, dict) and isinstance(b, dict):
        if "indices" in a and "values" in a:
            return a.get("indices") == b.get("indices") and same_vector(a.get("values"), b.get("values"), tolerance)
        return a.keys() == b.keys() and all(same_vector(a[key], b[key], tolerance) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False
        return all(
            same_vector(x, y, tolerance) if isinstance(x, list) else math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance)
            for x, y in zip(a, b)
        )
    return a == b


def payload_differences(blue: dict | None, green: dict | None, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Top-level payload keys whose values differ (missing on either side counts), except `ignore`."""
    blue, green = blue or {}, green or {}
    return sorted(key for key in (blue.keys() | green.keys()) - ignore if blue.get(key, _MISSING) != green.get(key, _MISSING))


_MISSING = object()
