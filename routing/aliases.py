"""`POST /collections/aliases`: an alias may only point at a physical collection.

A logical collection exists only at the proxy; an alias action naming it would fail at Qdrant with a
404, or, where blue carries the logical name, silently pin the alias to blue.
"""
from __future__ import annotations

from typing import Any, Mapping

from routing.table import CompiledRoute

ALIASES_PATH = b"/collections/aliases"  # Qdrant matches it before `/collections/{collection_name}`


def alias_refusal(document: Any, routes: Mapping[str, CompiledRoute]) -> str | None:
    """The 400 message for an alias change whose `collection_name` names a route; None otherwise
    (a body not shaped as Qdrant expects is left to Qdrant to answer)."""
    actions = document.get("actions") if isinstance(document, dict) else None
    if not isinstance(actions, list):
        return None
    for action in actions:
        if not isinstance(action, dict):
            continue
        for change in action.values():
            name = change.get("collection_name") if isinstance(change, dict) else None
            route = routes.get(name) if isinstance(name, str) else None
            if route is not None:
                return (
                    f"Wrong input: `{name}` is a logical collection routed by bluegreen-proxy "
                    f"(blue: `{route.blue}`, green: `{route.green}`); an alias must point at a physical "
                    f"collection: name `{route.blue}` or `{route.green}` in `collection_name`."
                )
    return None
