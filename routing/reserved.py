"""The proxy's own collection on the upstream (`state: {store: qdrant}` keeps the rollout state there):
no client reads, writes, aliases or deletes it through the data port. Pure.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes


def path_names_reserved(segment: bytes, reserved: str) -> bool:
    """A `/collections/{segment}/...` path reaches the reserved collection (percent-decoded as Qdrant reads it)."""
    if b"%" not in segment:
        return segment == reserved.encode()
    try:
        return unquote_to_bytes(segment).decode() == reserved
    except UnicodeDecodeError:
        return False


def body_may_name(body: bytes, reserved: str) -> bool:
    """Whether a body can name the reserved collection at all: as written, or escaped (a backslash)."""
    return reserved.encode() in body or b"\\" in body


def alias_action_names(document: Any) -> list[str]:
    """Every collection and alias name in an alias change (`POST /collections/aliases`)."""
    actions = document.get("actions") if isinstance(document, dict) else None
    names = []
    for action in actions if isinstance(actions, list) else ():
        for change in action.values() if isinstance(action, dict) else ():
            if isinstance(change, dict):
                names += [change.get("collection_name"), change.get("alias_name")]
    return names


def reserved_message(reserved: str) -> str:
    return (
        f"Forbidden: `{reserved}` is reserved: bluegreen-proxy keeps its rollout state there "
        "(state.collection); clients cannot read, write, alias or delete it"
    )
