"""Collection names inside request bodies: `lookup_from.collection` and `with_lookup`."""
from __future__ import annotations

import json
from typing import Any, Callable

# Only bodies holding one of these are parsed at all.
_MARKERS = (b'"lookup_from"', b'"with_lookup"')


def rewrite_body_collections(body: bytes, physical_for: Callable[[str], str | None]) -> bytes | None:
    """Rewrite every referenced logical collection with `physical_for(name)`.

    Returns the new body, or None when nothing changed (the caller then forwards the original bytes).
    `lookup_from` may sit at any depth of `prefetch` and in each of a batch's `searches`,
    so the whole document is walked.
    """
    if not any(marker in body for marker in _MARKERS):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None  # the upstream answers malformed JSON with its own error
    if _rewrite(document, physical_for):
        return json.dumps(document, separators=(",", ":")).encode()
    return None


def _rewrite(node: Any, physical_for: Callable[[str], str | None]) -> bool:
    changed = False
    if isinstance(node, dict):
        lookup = node.get("lookup_from")
        if isinstance(lookup, dict) and isinstance(lookup.get("collection"), str):
            changed |= _swap(lookup, "collection", physical_for)
        with_lookup = node.get("with_lookup")
        if isinstance(with_lookup, str):
            changed |= _swap(node, "with_lookup", physical_for)
        elif isinstance(with_lookup, dict) and isinstance(with_lookup.get("collection"), str):
            changed |= _swap(with_lookup, "collection", physical_for)
        for value in node.values():
            if isinstance(value, (dict, list)):
                changed |= _rewrite(value, physical_for)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                changed |= _rewrite(item, physical_for)
    return changed


def _swap(holder: dict, key: str, physical_for: Callable[[str], str | None]) -> bool:
    physical = physical_for(holder[key])
    if physical is None or physical == holder[key]:
        return False
    holder[key] = physical
    return True
