"""Collection names inside read bodies, only where Qdrant reads one, and the request bodies' codings.

The positions (qdrant-rest-notes.md): `lookup_from.collection` at the top level, at every level of
`prefetch` and in each of a batch's `searches[]`; `with_lookup` (a name, or an object's `collection`)
at the top level of a request. A `payload` or any other value that happens to hold such a key is
never touched, and write bodies are never looked at (the caller only passes reads).
"""
from __future__ import annotations

import json
import zlib
from typing import Any, Callable, Iterator

def may_name_collections(body: bytes) -> bool:
    """False when the body certainly names no collection: the fast path, no JSON parse. Unescaped,
    the keys are these exact strings; an escaped one (`"lookup\\u005ffrom"`) holds a backslash, found
    by one memchr (vectors and ordinary queries hold none)."""
    return b'"lookup_from"' in body or b'"with_lookup"' in body or b"\\" in body


class UnreadableBody(ValueError):
    """A read body that may name collections (so the proxy must read it: scopes, rewriting) and is not
    JSON it can read: refused, never forwarded unchecked."""


def parse_read_body(body: bytes) -> Any:
    """The parsed body when it may name collections; None otherwise. UnreadableBody when it is not
    UTF-8 JSON that Python reads (invalid UTF-8, an integer past the digit limit, nesting too deep)."""
    return read_json(body) if may_name_collections(body) else None


def read_json(body: bytes) -> Any:
    """A body the proxy must read, parsed as Qdrant reads it (UTF-8 JSON); UnreadableBody otherwise."""
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise UnreadableBody(f"the request body is not JSON bluegreen-proxy can read: {exc}") from None


def collections_named(body: bytes) -> list[str]:
    """Every collection name the read body names (UnreadableBody as parse_read_body)."""
    return referenced_collections(parse_read_body(body))


def referenced_collections(document: Any) -> list[str]:
    """Every collection name the read body names, in its defined positions."""
    return [holder[key] for holder, key in _positions(document)]


def rewrite_body_collections(body: bytes, physical_for: Callable[[str], str | None]) -> bytes | None:
    """Rewrite every referenced collection with `physical_for(name)` (None: leave it).

    Returns the new body, or None when nothing changed (the caller then forwards the original bytes);
    UnreadableBody as parse_read_body.
    """
    document = parse_read_body(body)
    if document is None:
        return None
    changed = False
    for holder, key in _positions(document):
        physical = physical_for(holder[key])
        if physical is not None and physical != holder[key]:
            holder[key] = physical
            changed = True
    return json.dumps(document, separators=(",", ":")).encode() if changed else None


def _positions(document: Any) -> Iterator[tuple[dict, str]]:
    """(holder, key) for each collection name: `holder[key]` is the name."""
    if not isinstance(document, dict):
        return
    requests = [document]
    searches = document.get("searches")
    if isinstance(searches, list):
        requests += [search for search in searches if isinstance(search, dict)]
    for request in requests:
        with_lookup = request.get("with_lookup")
        if isinstance(with_lookup, str):
            yield request, "with_lookup"
        elif isinstance(with_lookup, dict) and isinstance(with_lookup.get("collection"), str):
            yield with_lookup, "collection"
        levels = [request]  # the request itself, then every prefetch below it (one object or a list)
        while levels:
            level = levels.pop()
            lookup = level.get("lookup_from")
            if isinstance(lookup, dict) and isinstance(lookup.get("collection"), str):
                yield lookup, "collection"
            prefetch = level.get("prefetch")
            if isinstance(prefetch, dict):
                levels.append(prefetch)
            elif isinstance(prefetch, list):
                levels += [item for item in prefetch if isinstance(item, dict)]


class UndecodableBody(ValueError):
    """A request body whose Content-Encoding the proxy cannot undo; the message says why."""


_DECODERS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


def decode_request_body(body: bytes, content_encoding: bytes, limit: int) -> bytes:
    """The body without its Content-Encoding (codings applied in order, undone in reverse), at most
    `limit` bytes decoded (a small bomb must not become a huge body); UndecodableBody otherwise."""
    codings = [c.strip().lower() for c in content_encoding.split(b",") if c.strip()]
    for coding in reversed(codings):
        if coding == b"identity":
            continue
        wbits = _DECODERS.get(coding)
        if wbits is None:
            raise UndecodableBody(
                f"Content-Encoding {coding.decode('latin-1')!r} is not supported on this request by "
                f"bluegreen-proxy: send it uncompressed, gzip or deflate"
            )
        body = _inflate(body, wbits, limit, coding)
    return body


def _inflate(body: bytes, wbits: int, limit: int, coding: bytes) -> bytes:
    attempts = (wbits, -zlib.MAX_WBITS) if coding == b"deflate" else (wbits,)  # deflate: zlib or raw
    for attempt in attempts:
        inflater = zlib.decompressobj(attempt)
        try:
            decoded = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(decoded) > limit or inflater.unconsumed_tail:
            raise UndecodableBody(f"the decoded request body exceeds {limit} bytes (limits.max_body_bytes)")
        if not inflater.eof:
            raise UndecodableBody(f"the request body is truncated {coding.decode('latin-1')} data")
        return decoded
    raise UndecodableBody(f"the request body is not valid {coding.decode('latin-1')} data")
