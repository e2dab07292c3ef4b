"""Whether a successful search-type response holds no points: the guard's empty-result rule reads this.

Qdrant serializes compactly with `result` first, so the common answers are decided on their first
bytes (`{"result":[]` is empty, `{"result":[{` is not); batch forms, and anything not shaped the
way Qdrant writes it, are parsed when small and scanned when large (SCAN_LIMIT). Qdrant compresses responses for clients that accept it, so the
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


# How much of an answer is ever decoded. An answer without points is small (a batch of N empty
# results is about 3N bytes), so one decoding to more than this has points; what is decoded is then
# scanned, never parsed, and at most this much JSON is parsed on the event loop (about 0.3 ms).
SCAN_LIMIT = 64 * 1024


def _decoded_head(body: bytes, content_encoding: bytes | None) -> tuple[bytes, bool] | None:
    """Up to SCAN_LIMIT + 1 bytes of the body without its Content-Encoding, and whether that is all of
    it; None for a coding not readable here or a corrupt body."""
    coding = (content_encoding or b"").strip().lower()
    if not coding or coding == b"identity":
        return body[:SCAN_LIMIT + 1], len(body) <= SCAN_LIMIT
    if coding in (b"gzip", b"x-gzip"):
        return _inflate_head(body, 16 + zlib.MAX_WBITS)
    if coding == b"deflate":  # zlib-wrapped as the RFC says, or raw as some servers send it
        return _inflate_head(body, zlib.MAX_WBITS) or _inflate_head(body, -zlib.MAX_WBITS)
    return None


def _inflate_head(body: bytes, wbits: int) -> tuple[bytes, bool] | None:
    # Compressed input is never much longer than its output, so this slice holds all of a body that
    # decodes within the limit.
    inflater = zlib.decompressobj(wbits)
    try:
        head = inflater.decompress(body[:SCAN_LIMIT + 1024], SCAN_LIMIT + 1)
    except zlib.error:
        return None
    return head, inflater.eof and len(head) <= SCAN_LIMIT


def is_empty_result(operation: str, body: bytes, content_encoding: bytes | None = None) -> bool | None:
    """True: no points at all; False: some; None: not a search-type read, or a body not understood.

    A batch counts as empty only if every one of its results is; a batch of no requests is not judged.
    At most SCAN_LIMIT bytes are decoded, however large or compressed the answer.
    """
    if operation not in SEARCH_OPERATIONS:
        return None
    decoded = _decoded_head(body, content_encoding)
    if decoded is None:
        return None
    head, whole = decoded
    if operation not in _BATCH_OPERATIONS:
        for prefix, empty in _PREFIXES:
            if head.startswith(prefix):
                return empty
    if not whole:  # too large to hold no points; say so only where one is seen
        return False if b'"id"' in head else None
    try:
        result = json.loads(head)["result"]
    except (ValueError, KeyError, TypeError, RecursionError):
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
