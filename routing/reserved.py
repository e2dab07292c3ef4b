"""The proxy's own collection on the upstream (`state: {store: qdrant}` keeps the rollout state there):
no client reads, writes, aliases or deletes it through the data port. Pure.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from routing.aliases import ALIASES_PATH
from routing.rewrite import parse_read_body, referenced_collections


def reserved_refusal(reserved: str, segment: bytes | None, canonical: bytes, read_body: bytes | None) -> str | None:
    """The 403 message when a request reaches the reserved collection: by its path (`segment`, the
    collection segment of a `/collections/...` path), in an alias change (`POST /collections/aliases`)
    or as a read's lookup (`read_body`: a read's or alias change's body, else None); None otherwise."""
    if segment is not None and _names(segment, reserved):
        return _message(reserved)
    if read_body is None or (reserved.encode() not in read_body and b"\\" not in read_body):
        return None  # the body cannot name it (written escaped, it holds a backslash)
    names = _alias_names(read_body) if canonical == ALIASES_PATH else referenced_collections(parse_read_body(read_body))
    return _message(reserved) if reserved in names else None


def _names(segment: bytes, reserved: str) -> bool:
    if b"%" not in segment:
        return segment == reserved.encode()
    try:
        return unquote_to_bytes(segment).decode() == reserved
    except UnicodeDecodeError:
        return False


def _alias_names(body: bytes) -> list[str]:
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        return []
    actions = document.get("actions") if isinstance(document, dict) else None
    names = []
    for action in actions if isinstance(actions, list) else ():
        for change in action.values() if isinstance(action, dict) else ():
            if isinstance(change, dict):
                names += [change.get("collection_name"), change.get("alias_name")]
    return names


def _message(reserved: str) -> str:
    return (
        f"Forbidden: `{reserved}` is reserved: bluegreen-proxy keeps its rollout state there "
        "(state.collection); clients cannot read, write, alias or delete it"
    )
