"""The route table: one immutable snapshot compiled from a validated Config, and the colour choice."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

import mmh3

from routing.config import Config, Route

BLUE = "blue"
GREEN = "green"
COLOURS = (BLUE, GREEN)
BUCKETS = 10_000
OVERRIDE_HEADER = b"x-bluegreen-color"
_COLOUR_BYTES = {b"blue": BLUE, b"green": GREEN}


def bucket(salt: bytes, key: bytes) -> int:
    """mmh3 of `{salt}:{key}` (unsigned, 32-bit) into 10,000 buckets: stable across processes."""
    return mmh3.hash(salt + b":" + key, signed=False) % BUCKETS


def threshold_for(percent: float) -> int:
    """Buckets below the threshold are green; 10 % -> 1000. Raising it only moves keys to green."""
    return round(percent * 100)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    settings: Route
    salt: bytes
    key_headers: tuple[bytes, ...]
    configured_threshold: int
    # Physical collection names as percent-encoded path segments, ready to splice into a path.
    blue_segment: bytes
    green_segment: bytes

    @property
    def blue(self) -> str:
        return self.settings.blue

    @property
    def green(self) -> str:
        return self.settings.green

    def collection(self, colour: str) -> str:
        return self.settings.green if colour == GREEN else self.settings.blue

    def segment(self, colour: str) -> bytes:
        return self.green_segment if colour == GREEN else self.blue_segment

    def forced_colour(self, headers: dict[bytes, bytes]) -> str | None:
        """The colour named by `x-bluegreen-color`, on a route that allows it; else None."""
        if not self.settings.allow_override:
            return None
        return _COLOUR_BYTES.get(headers.get(OVERRIDE_HEADER, b"").strip().lower())

    def key(self, headers: dict[bytes, bytes]) -> bytes | None:
        """The first of the route's key sources present in the request."""
        for header in self.key_headers:
            value = headers.get(header)
            if value:
                return value
        return None

    def split_colour(self, threshold: int, headers: dict[bytes, bytes], body: bytes) -> str:
        """The split's colour for a read: by the key's bucket, else by the route's fallback."""
        if threshold <= 0:
            return BLUE
        if threshold >= BUCKETS:
            return GREEN
        key = self.key(headers)
        if key is None and self.settings.fallback == "body":
            key = body
        if key is None:
            return GREEN if random.randrange(BUCKETS) < threshold else BLUE
        return GREEN if bucket(self.salt, key) < threshold else BLUE


def quote_segment(name: str) -> str:
    """A collection name as one percent-encoded path segment, as qdrant-client sends it."""
    return quote(name, safe="")


def compile_route(name: str, settings: Route) -> CompiledRoute:
    return CompiledRoute(
        name=name,
        settings=settings,
        salt=(settings.salt if settings.salt is not None else name).encode(),
        key_headers=tuple(source.split(":", 1)[1].encode("latin-1") for source in settings.key),
        configured_threshold=threshold_for(settings.green_percent),
        blue_segment=quote_segment(settings.blue).encode("ascii"),
        green_segment=quote_segment(settings.green).encode("ascii"),
    )


class RouteTable:
    """Logical collection name -> compiled route; looked up by the raw path segment."""

    def __init__(self, config: Config):
        self.routes: dict[str, CompiledRoute] = {
            name: compile_route(name, settings) for name, settings in config.routes.items()
        }
        self._by_segment: dict[bytes, CompiledRoute] = {
            name.encode(): route for name, route in self.routes.items()
        }
        # The proxy's own collection (the Qdrant state store's), refused to clients: routing.reserved.
        self.reserved: str | None = config.state.collection if config.state.store == "qdrant" else None

    def lookup(self, segment: bytes) -> CompiledRoute | None:
        route = self._by_segment.get(segment)
        if route is None and b"%" in segment:
            try:
                route = self.routes.get(unquote_to_bytes(segment).decode())
            except UnicodeDecodeError:
                return None
        return route


_PREFIX = b"/collections/"
_SLASH_RUNS = re.compile(rb"//+")
_PERCENT_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# Decoded bytes that may stand literally in a request target. Qdrant's router decodes every escape
# except %25, %2F and %2B; bytes outside this set (space, `?`, `#`, non-ASCII, ...) stay escaped in
# our canonical form so it can be forwarded as is (a route lookup decodes them all the same).
_LITERAL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*,;=:@")


def canonical_path(raw_path: bytes) -> bytes:
    """The path as Qdrant routes it: runs of `/` merged, the trailing `/` trimmed (actix's
    `NormalizePath::trim`), `%XX` decoded as Qdrant's router decodes it (all but `%25`, `%2F`, `%2B`;
    bytes unfit for a request line are kept escaped, upper-case, and decoded again by a lookup).

    Every spelling of one path maps to the same bytes, so routing decisions cannot be walked around.
    The common case (no `//`, no `%`, no trailing `/`) returns the path itself without copying.
    """
    if b"//" not in raw_path and b"%" not in raw_path and (raw_path[-1:] != b"/" or raw_path == b"/"):
        return raw_path
    path = _SLASH_RUNS.sub(b"/", raw_path)
    if len(path) > 1 and path.endswith(b"/"):
        path = path[:-1]
    if b"%" in path:
        path = _PERCENT_ESCAPE.sub(_decode_escape, path)
    return path or b"/"


def _decode_escape(match: re.Match) -> bytes:
    byte = int(match.group(1), 16)
    return bytes((byte,)) if byte in _LITERAL_SAFE else match.group(0).upper()


def split_collection_path(raw_path: bytes) -> tuple[bytes, str] | None:
    """`/collections/{segment}/rest` -> (segment, "rest"); None for any other path.

    Expects a `canonical_path` (trailing slashes are ignored all the same).
    """
    if not raw_path.startswith(_PREFIX):
        return None
    segment, _, below = raw_path[len(_PREFIX):].partition(b"/")
    if not segment:
        return None
    return segment, below.strip(b"/").decode("latin-1")


def rewrite_path(raw_path: bytes, segment: bytes) -> bytes:
    """Swap the collection segment of a `/collections/{name}/...` path."""
    _, _, below = raw_path[len(_PREFIX):].partition(b"/")
    return _PREFIX + segment + (b"/" + below if below or raw_path.endswith(b"/") else b"")
