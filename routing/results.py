"""Whether a successful search-type response holds no points: the guard's empty-result rule reads this.

Qdrant serializes compactly with `result` first, so the common answers are decided on their first
bytes (`{"result":[]` is empty, `{"result":[{` is not); batch forms, and anything not shaped the
way Qdrant writes it, are parsed. Qdrant compresses responses for clients that accept it, so the
guard asks only for codings it can decode (gzip, deflate) and decodes them here.
"""
from __future__ import annotations

import json
import zlib

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


_READABLE_CODINGS = frozenset({b"gzip", b"x-gzip", b"deflate", b"identity"})


def readable_accept_encoding(value: bytes) -> bytes | None:
    """A client's Accept-Encoding narrowed to the codings `is_empty_result` decodes, preferences kept;
    None when none is left (the answer then comes uncompressed)."""
    kept = [token.strip() for token in value.split(b",")
            if token.split(b";", 1)[0].strip().lower() in _READABLE_CODINGS]
    return b", ".join(kept) or None


def decoded_body(body: bytes, content_encoding: bytes | None) -> bytes | None:
    """The body without its Content-Encoding; None for a coding not readable here or a corrupt body."""
    coding = (content_encoding or b"").strip().lower()
    try:
        if not coding or coding == b"identity":
            return body
        if coding in (b"gzip", b"x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if coding == b"deflate":  # zlib-wrapped as the RFC says, or raw as some servers send it
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error:
        return None
    return None


def is_empty_result(operation: str, body: bytes, content_encoding: bytes | None = None) -> bool | None:
    """True: no points at all; False: some; None: not a search-type read, or a body not understood.

    A batch counts as empty only if every one of its results is; a batch of no requests is not judged.
    """
    if operation not in SEARCH_OPERATIONS:
        return None
    body = decoded_body(body, content_encoding)
    if body is None:
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
