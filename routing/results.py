"""Whether a successful search-type response holds no points: the guard's empty-result rule reads this.

Qdrant serializes compactly with `result` first, so the common answers are decided on their first
bytes (`{"result":[]` is empty, `{"result":[{` is not); batch forms, and anything not shaped the
way Qdrant writes it, are parsed.
"""
from __future__ import annotations

import json

from routing.operations import SEARCH_OPERATIONS

_BATCH_OPERATIONS = frozenset(op for op in SEARCH_OPERATIONS if op.endswith("_batch"))

# (prefix, empty?) for the single-request forms: a list of points, {"points": [...]}, {"groups": [...]}.
_PREFIXES = (
    (b'{"result":[]', True),
    (b'{"result":[{', False),
    (b'{"result":{"points":[]', True),
    (b'{"result":{"points":[{', False),
    (b'{"result":{"groups":[]', True),
    (b'{"result":{"groups":[{', False),
)


def is_empty_result(operation: str, body: bytes) -> bool | None:
    """True: no points at all; False: some; None: not a search-type read, or a body not understood.

    A batch counts as empty only if every one of its results is; a batch of no requests is not judged.
    """
    if operation not in SEARCH_OPERATIONS:
        return None
    if operation not in _BATCH_OPERATIONS:
        for prefix, empty in _PREFIXES:
            if body.startswith(prefix):
                return empty
    try:
        result = json.loads(body)["result"]
    except (ValueError, KeyError, TypeError):
        return None
    if operation in _BATCH_OPERATIONS:
        if not isinstance(result, list) or not result:
            return None
        verdicts = [_single_is_empty(item) for item in result]
        return None if None in verdicts else all(verdicts)
    return _single_is_empty(result)


def _single_is_empty(result) -> bool | None:
    if isinstance(result, dict):
        result = result.get("points", result.get("groups"))
    if not isinstance(result, list):
        return None
    return not result
