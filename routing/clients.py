"""Client authentication at the proxy (the `clients` block): which credential, what access, where.

Pure: the caller passes the request's `api-key` and `Authorization` header values, the clock, and
the collection and kind of what the request does. Like Qdrant, a credential is read from `api-key`
first, else from `Authorization: Bearer`, and may be an API key or an HS256 JWT in either. JWT claims
are Qdrant's: `access` is `r`, `rw` (`m`, Qdrant's manage, counts as `rw`) or a list of
`{collection, access}`; `exp` in seconds since the epoch; no `access` means global read, as in Qdrant.
Scopes name collections as clients address them: the logical name of a route.

Verified with the standard library (hmac, base64, json): HS256 only, the algorithm pinned (a token
naming `none` or another algorithm is refused), so no JWT library is needed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Mapping

from routing.config import Clients

READ_ONLY = "r"
READ_WRITE = "rw"
_GLOBAL_ACCESS = {"r": READ_ONLY, "rw": READ_WRITE, "m": READ_WRITE}
_COLLECTION_ACCESS = {"r": READ_ONLY, "rw": READ_WRITE}


@dataclass(frozen=True, slots=True)
class Grant:
    """What one authenticated client may do: everywhere (`collections` None) or per collection."""

    access: str | None  # READ_ONLY or READ_WRITE everywhere; None when scoped
    collections: Mapping[str, str] | None = None  # collection -> access, for a scoped credential
    source: str = "api key"  # for messages: "api key", "token" or "anonymous"; never the secret

    @property
    def scoped(self) -> bool:
        return self.collections is not None

    def refusal(self, collection: str | None, write: bool, operation: str) -> str | None:
        """None when allowed; else the 403 message. `collection` None: a request outside any
        collection (listing, version, aliases, cluster): a read needs any credential, a write an
        unscoped read-write one."""
        if self.collections is None:
            access = self.access
        elif collection is None:
            if not write:
                return None
            return f"Forbidden: `{operation}` is not about one collection and needs unrestricted rw access; this {self.source} is limited to collections"
        else:
            access = self.collections.get(collection)
            if access is None:
                return f"Forbidden: collection `{collection}` is outside this {self.source}'s collections"
        if write and access != READ_WRITE:
            where = f" on `{collection}`" if collection else ""
            return f"Forbidden: `{operation}`{where} needs rw access; this {self.source} may only read"
        return None


_HEALTH_PROBES = frozenset({b"/healthz", b"/readyz", b"/livez"})


def is_health_probe(canonical_path: bytes) -> bool:
    """Qdrant's own probes, which Qdrant answers without a credential: these exact paths (a query string
    is not part of the path), never what merely begins like one."""
    return canonical_path in _HEALTH_PROBES


@dataclass(frozen=True, slots=True)
class Unauthenticated:
    """401: no credential where one is needed, or one that is unknown, expired or badly signed."""

    message: str


_MISSING = Unauthenticated(
    "Unauthorized: bluegreen-proxy needs a credential: send an `api-key` header or `Authorization: Bearer <token>`"
)
_INVALID = Unauthenticated("Unauthorized: invalid api key or token")


@dataclass(frozen=True, repr=False)
class ClientPolicy:
    """The compiled `clients` block (no repr: it holds the secrets)."""

    keys: tuple[tuple[bytes, Grant], ...]
    jwt_secret: bytes | None
    anonymous: Grant | None

    @classmethod
    def compile(cls, clients: Clients | None) -> "ClientPolicy | None":
        if clients is None:
            return None
        keys = []
        for entry in clients.api_keys:
            grant = (
                Grant(entry.access) if entry.collections is None
                else Grant(None, {name: entry.access for name in entry.collections})
            )
            keys.append((entry.key.get_secret_value().encode(), grant))
        return cls(
            keys=tuple(keys),
            jwt_secret=clients.jwt.secret.get_secret_value().encode() if clients.jwt else None,
            anonymous=None if clients.anonymous == "none" else Grant(clients.anonymous, source="anonymous"),
        )

    def authenticate(self, api_key: bytes | None, authorization: bytes | None, now: float) -> Grant | Unauthenticated:
        credential = _credential(api_key, authorization)
        if credential is None:
            return self.anonymous or _MISSING
        if not credential:
            return _INVALID
        matched = None
        for key, grant in self.keys:  # every key compared, in constant time: no early exit to time
            if hmac.compare_digest(credential, key):
                matched = grant
        if matched is not None:
            return matched
        if self.jwt_secret is not None and credential.count(b".") == 2:
            return verify_jwt(credential, self.jwt_secret, now)
        return _INVALID


def _credential(api_key: bytes | None, authorization: bytes | None) -> bytes | None:
    """Qdrant's order: `api-key` first, then a bearer token; b"" for a credential of the wrong shape."""
    if api_key is not None:
        return api_key.strip()
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


def verify_jwt(token: bytes, secret: bytes, now: float) -> Grant | Unauthenticated:
    """An HS256 token with Qdrant's claims -> its Grant; any flaw -> 401."""
    try:
        header_part, claims_part, signature_part = token.split(b".")
        header = json.loads(_unbase64(header_part))
        signature = _unbase64(signature_part)
    except (ValueError, binascii.Error):
        return _INVALID
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return _INVALID
    expected = hmac.new(secret, header_part + b"." + claims_part, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        return _INVALID
    try:
        claims = json.loads(_unbase64(claims_part))
    except (ValueError, binascii.Error):
        return _INVALID
    if not isinstance(claims, dict):
        return _INVALID
    expires = claims.get("exp")
    if expires is not None:
        if isinstance(expires, bool) or not isinstance(expires, (int, float)):
            return _INVALID
        if now >= expires:
            return Unauthenticated("Unauthorized: the token has expired")
    if "value_exists" in claims:
        # It asks the server to look a value up in a collection before trusting the token: not
        # something the proxy can check, and it must not accept what it cannot check.
        return Unauthenticated("Unauthorized: tokens with a `value_exists` claim are not accepted by bluegreen-proxy")
    return _grant_from_access(claims.get("access", "r"))


def _grant_from_access(access) -> Grant | Unauthenticated:
    if isinstance(access, str):
        level = _GLOBAL_ACCESS.get(access)
        return _INVALID if level is None else Grant(level, source="token")
    if not isinstance(access, list):
        return _INVALID
    collections: dict[str, str] = {}
    for entry in access:
        # Anything beyond {collection, access} (Qdrant's older `payload` restriction) cannot be enforced here.
        if not isinstance(entry, dict) or set(entry) != {"collection", "access"}:
            return _INVALID
        name, level = entry["collection"], _COLLECTION_ACCESS.get(entry["access"])
        if not isinstance(name, str) or level is None:
            return _INVALID
        if collections.get(name) != READ_WRITE:  # the widest of repeated entries
            collections[name] = level
    return Grant(None, collections, source="token")


def _unbase64(part: bytes) -> bytes:
    if not part or b"=" in part:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
