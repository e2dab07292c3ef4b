"""Issue 9's pure decisions: the canonical path, client credentials, body positions and codings, aliases."""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import zlib

import pytest

from routing.aliases import alias_refusal
from routing.clients import READ_ONLY, READ_WRITE, ClientPolicy, Grant, Unauthenticated, is_health_probe, verify_jwt
from routing.config import ConfigError, parse_config
from routing.operations import Kind, classify, is_write
from routing.rewrite import (
    UndecodableBody, decode_request_body, may_name_collections, referenced_collections, rewrite_body_collections,
)
from routing.table import RouteTable, canonical_path, split_collection_path

# ---------------------------------------------------------------- one canonical path

SPELLINGS = [
    # (as sent, as Qdrant routes it)
    (b"/collections/docs", b"/collections/docs"),
    (b"//collections/docs", b"/collections/docs"),
    (b"/collections//docs", b"/collections/docs"),
    (b"/collections/docs/", b"/collections/docs"),
    (b"/collections/docs///", b"/collections/docs"),
    (b"///collections///docs///points///query///", b"/collections/docs/points/query"),
    (b"/%63ollections/docs", b"/collections/docs"),
    (b"/%63%6F%6c%6Cections/docs", b"/collections/docs"),
    (b"/collections/%64ocs", b"/collections/docs"),
    (b"/collections/docs/points//query", b"/collections/docs/points/query"),
    (b"/collections/docs/points/%71uery", b"/collections/docs/points/query"),
    (b"/collections/docs/points%2Fquery", b"/collections/docs/points%2Fquery"),  # %2F stays: one segment
    (b"/collections/a%2fb", b"/collections/a%2Fb"),
    (b"/collections/a%25b", b"/collections/a%25b"),  # %25 stays
    (b"/collections/a%2Bb", b"/collections/a%2Bb"),  # %2B stays
    (b"/collections/a+b", b"/collections/a+b"),  # `+` is not a space in a path
    (b"/collections/my%20coll", b"/collections/my%20coll"),  # unfit for a request line: kept escaped
    (b"/collections/caf%c3%a9", b"/collections/caf%C3%A9"),
    (b"/collections/bad%zzescape", b"/collections/bad%zzescape"),
    (b"/", b"/"),
    (b"//", b"/"),
    (b"/collections", b"/collections"),
    (b"/collections/", b"/collections"),
]


@pytest.mark.parametrize(("sent", "canonical"), SPELLINGS, ids=[s.decode() for s, _ in SPELLINGS])
def test_canonical_path(sent, canonical):
    assert canonical_path(sent) == canonical
    assert canonical_path(canonical) == canonical  # idempotent


def test_the_common_path_is_returned_as_is():
    path = b"/collections/docs/points/query"
    assert canonical_path(path) is path


ROUTES_YAML = """
routes:
  docs: {blue: docs_v1, green: docs_v2, green_percent: 50}
  'my coll': {blue: mc1, green: mc2}
  café: {blue: cafe1, green: cafe2}
"""


@pytest.mark.parametrize(
    ("sent", "route", "operation", "kind"),
    [
        (b"DELETE //collections/docs", "docs", "delete_collection", Kind.ADMIN),
        (b"DELETE /collections/docs/", "docs", "delete_collection", Kind.ADMIN),
        (b"DELETE /%63ollections/%64ocs", "docs", "delete_collection", Kind.ADMIN),
        (b"PUT /collections//docs/points", "docs", "upsert", Kind.WRITE),
        (b"POST /collections/docs/points//query", "docs", "query", Kind.READ),
        (b"POST /collections/docs/points/%71uery/", "docs", "query", Kind.READ),
        (b"GET /collections/my%20coll/exists", "my coll", "collection_exists", Kind.INFO),
        (b"GET /collections/caf%C3%A9", "café", "collection_info", Kind.INFO),
        (b"GET /collections/caf\xc3\xa9", "café", "collection_info", Kind.INFO),
    ],
)
def test_every_spelling_finds_the_route_and_operation(sent, route, operation, kind):
    table = RouteTable(parse_config(ROUTES_YAML))
    method, _, path = sent.partition(b" ")
    segment, below = split_collection_path(canonical_path(path))
    assert table.lookup(segment).name == route
    assert classify(method.decode(), below) == (operation, kind)


def test_escaped_slash_and_percent_never_reach_another_collection():
    table = RouteTable(parse_config(ROUTES_YAML))
    assert table.lookup(split_collection_path(canonical_path(b"/collections/do%2Fcs"))[0]) is None
    assert table.lookup(split_collection_path(canonical_path(b"/collections/%25docs"))[0]) is None


# ---------------------------------------------------------------- config


def test_clients_block_and_reserved_route_names():
    config = parse_config(
        "clients:\n"
        "  api_keys:\n"
        "    - {key: reader, access: r}\n"
        "    - {key: ingest, access: rw, collections: [docs]}\n"
        "  jwt: {secret: s3cret}\n"
        "  anonymous: none\n"
    )
    assert [entry.access for entry in config.clients.api_keys] == ["r", "rw"]
    assert "reader" not in repr(config) and "s3cret" not in repr(config)
    with pytest.raises(ConfigError, match=r"^routes\.aliases: Qdrant's router"):
        parse_config("routes: {aliases: {blue: a, green: b}}")
    with pytest.raises(ConfigError, match=r"clients\.api_keys\[0\]\.key: must not be empty"):
        parse_config("clients: {api_keys: [{key: '', access: r}]}")
    with pytest.raises(ConfigError, match=r"clients\.api_keys\[1\]\.key: the same key as api_keys\[0\]"):
        parse_config("clients: {api_keys: [{key: k, access: r}, {key: k, access: rw}]}")
    with pytest.raises(ConfigError, match=r"clients\.anonymous: must be one of"):
        parse_config("clients: {anonymous: all}")
    with pytest.raises(ConfigError, match=r"clients\.jwt\.secret: must not be empty"):
        parse_config("clients: {jwt: {secret: ''}}")


def test_upstream_key_and_admin_token_stay_out_of_the_config_repr():
    config = parse_config("upstream: {api_key: master-key}\nadmin: {token: admin-token}\n")
    assert "master-key" not in repr(config) and "admin-token" not in repr(config)


# ---------------------------------------------------------------- credentials

NOW = 1_800_000_000.0
SECRET = b"jwt-secret"


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def make_jwt(claims: dict, secret: bytes = SECRET, header: dict | None = None) -> bytes:
    signing_input = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode()) + b"." + b64(json.dumps(claims).encode())
    return signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())


def policy(anonymous: str = "none") -> ClientPolicy:
    return ClientPolicy.compile(parse_config(
        "clients:\n"
        "  api_keys:\n"
        "    - {key: reader, access: r}\n"
        "    - {key: ingest, access: rw, collections: [docs]}\n"
        "    - {key: admin, access: rw}\n"
        "  jwt: {secret: jwt-secret}\n"
        f"  anonymous: {anonymous}\n"
    ).clients)


def test_api_keys_from_either_header():
    assert policy().authenticate(b"reader", None, NOW) == Grant(READ_ONLY)
    assert policy().authenticate(None, b"Bearer reader", NOW) == Grant(READ_ONLY)
    assert policy().authenticate(b"ingest", b"Bearer admin", NOW).collections == {"docs": READ_WRITE}  # api-key first
    assert isinstance(policy().authenticate(b"wrong", None, NOW), Unauthenticated)
    assert isinstance(policy().authenticate(b"", None, NOW), Unauthenticated)
    assert isinstance(policy().authenticate(None, b"Basic cmVhZGVy", NOW), Unauthenticated)


def test_no_credential_is_anonymous():
    missing = policy().authenticate(None, None, NOW)
    assert isinstance(missing, Unauthenticated) and "api-key" in missing.message
    assert policy("r").authenticate(None, None, NOW).access == READ_ONLY
    assert isinstance(policy("r").authenticate(b"wrong", None, NOW), Unauthenticated)  # a bad key is no anonymous


def test_jwt_claims_as_qdrant_reads_them():
    assert verify_jwt(make_jwt({"access": "r"}), SECRET, NOW) == Grant(READ_ONLY, source="token")
    assert verify_jwt(make_jwt({"access": "rw", "exp": NOW + 60}), SECRET, NOW).access == READ_WRITE
    assert verify_jwt(make_jwt({"access": "m"}), SECRET, NOW).access == READ_WRITE
    assert verify_jwt(make_jwt({}), SECRET, NOW).access == READ_ONLY  # Qdrant's default: global read
    scoped = verify_jwt(make_jwt({"access": [{"collection": "docs", "access": "rw"}, {"collection": "x", "access": "r"}]}), SECRET, NOW)
    assert scoped.collections == {"docs": READ_WRITE, "x": READ_ONLY}
    assert policy().authenticate(None, b"Bearer " + make_jwt({"access": "r"}), NOW).source == "token"
    assert policy().authenticate(make_jwt({"access": "r"}), None, NOW).source == "token"


@pytest.mark.parametrize(
    "token",
    [
        make_jwt({"access": "r", "exp": NOW - 1}),
        make_jwt({"access": "r"}, secret=b"another secret"),
        make_jwt({"access": "r"}, header={"alg": "none"}),
        make_jwt({"access": "r"}, header={"alg": "HS512"}),
        make_jwt({"access": "r"})[:-1] + b"A",
        make_jwt({"access": "superuser"}),
        make_jwt({"access": [{"collection": "docs", "access": "rw", "payload": {"a": 1}}]}),
        make_jwt({"access": "r", "value_exists": {"collection": "users", "matches": []}}),
        make_jwt({"access": "r", "exp": "tomorrow"}),
        b"not.a.token",
        b"a.b",
    ],
    ids=["expired", "forged", "alg-none", "alg-hs512", "bad-signature", "bad-access", "payload-claim",
         "value-exists", "bad-exp", "garbage", "two-parts"],
)
def test_bad_tokens_are_unauthenticated(token):
    assert isinstance(policy().authenticate(None, b"Bearer " + token, NOW), Unauthenticated)


def test_expired_says_so():
    assert "expired" in policy().authenticate(None, b"Bearer " + make_jwt({"exp": NOW}), NOW).message


def test_what_a_grant_allows():
    reader, writer = Grant(READ_ONLY), Grant(READ_WRITE)
    scoped = Grant(None, {"docs": READ_WRITE, "notes": READ_ONLY}, source="token")
    assert reader.refusal("docs", False, "query") is None
    assert "needs rw access" in reader.refusal("docs", True, "upsert")
    assert writer.refusal("anything", True, "upsert") is None and writer.refusal(None, True, "POST /x") is None
    assert scoped.refusal("docs", True, "upsert") is None
    assert "needs rw access" in scoped.refusal("notes", True, "upsert")
    assert "outside this token's collections" in scoped.refusal("other", False, "query")
    assert scoped.refusal(None, False, "GET /collections") is None  # listing: any credential
    assert "limited to collections" in scoped.refusal(None, True, "POST /collections/aliases")


@pytest.mark.parametrize(
    ("method", "below", "write"),
    [("POST", "points/query", False), ("GET", "", False), ("GET", "exists", False), ("PUT", "points", True),
     ("POST", "points/payload", True), ("DELETE", "", True), ("PUT", "index", True)],
)
def test_read_or_write_by_operation_kind(method, below, write):
    assert is_write(method, classify(method, below)[1]) is write


def test_read_or_write_outside_collections():
    assert not is_write("GET", None) and not is_write("HEAD", None)
    assert is_write("POST", None) and is_write("PUT", None) and is_write("DELETE", None)


def test_snapshots_need_write_access_even_to_read():
    assert is_write("GET", Kind.INFO, classify("GET", "snapshots/s1.snapshot")[0])
    assert is_write("GET", None, "passthrough", b"/snapshots/full.snapshot")
    assert not is_write("GET", None, "passthrough", b"/collections")


# ---------------------------------------------------------------- bodies


def physical(name: str) -> str | None:
    return {"docs": "docs_v2", "weka": "weka_v2"}.get(name)


def test_only_the_defined_positions_are_rewritten():
    body = {
        "query": [0.1],
        "lookup_from": {"collection": "docs"},
        "prefetch": [{"lookup_from": {"collection": "weka"}, "prefetch": {"lookup_from": {"collection": "docs"}}}],
        "filter": {"must": [{"key": "lookup_from", "match": {"value": "docs"}}]},
        "params": {"lookup_from": {"collection": "docs"}},  # not a position: left alone
        "with_payload": {"with_lookup": "docs"},
    }
    out = json.loads(rewrite_body_collections(json.dumps(body).encode(), physical))
    assert out["lookup_from"]["collection"] == "docs_v2"
    assert out["prefetch"][0]["lookup_from"]["collection"] == "weka_v2"
    assert out["prefetch"][0]["prefetch"]["lookup_from"]["collection"] == "docs_v2"
    assert out["params"] == {"lookup_from": {"collection": "docs"}}
    assert out["with_payload"] == {"with_lookup": "docs"}
    assert out["filter"] == body["filter"]


def test_batches_and_with_lookup():
    batch = {"searches": [{"lookup_from": {"collection": "docs"}, "prefetch": {"lookup_from": {"collection": "weka"}}},
                          {"query": [1]}]}
    out = json.loads(rewrite_body_collections(json.dumps(batch).encode(), physical))
    assert out["searches"][0]["lookup_from"]["collection"] == "docs_v2"
    assert out["searches"][0]["prefetch"]["lookup_from"]["collection"] == "weka_v2"
    assert json.loads(rewrite_body_collections(b'{"with_lookup":"docs"}', physical)) == {"with_lookup": "docs_v2"}
    assert json.loads(rewrite_body_collections(b'{"with_lookup":{"collection":"weka"}}', physical)) == {
        "with_lookup": {"collection": "weka_v2"}
    }


def test_escaped_keys_are_found():
    body = b'{"query":[1],"lookup\\u005ffrom":{"\\u0063ollection":"docs"}}'
    assert may_name_collections(body)
    assert json.loads(rewrite_body_collections(body, physical))["lookup_from"] == {"collection": "docs_v2"}
    assert referenced_collections(json.loads(b'{"with\\u005flookup":"weka"}')) == ["weka"]


def test_fast_path_skips_bodies_with_no_lookup():
    assert not may_name_collections(b'{"query":[0.1,0.2],"limit":10,"with_payload":true}')
    assert rewrite_body_collections(b'{"query":[0.1]}', physical) is None


def test_request_codings_are_undone():
    plain = b'{"lookup_from":{"collection":"docs"}}'
    assert decode_request_body(gzip.compress(plain), b"gzip", 1024) == plain
    assert decode_request_body(zlib.compress(plain), b"deflate", 1024) == plain
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_request_body(raw.compress(plain) + raw.flush(), b"Deflate", 1024) == plain
    assert decode_request_body(gzip.compress(zlib.compress(plain)), b"deflate, gzip", 1024) == plain
    assert decode_request_body(plain, b"identity", 1024) == plain


@pytest.mark.parametrize(
    ("body", "coding", "message"),
    [
        (b"not gzip at all", b"gzip", "not valid gzip"),
        (gzip.compress(b"x" * 10, mtime=0)[:-12], b"gzip", "truncated"),
        (gzip.compress(b"x" * 5000, mtime=0), b"gzip", "exceeds 1024 bytes"),
        (b"...", b"br", "'br' is not supported"),
    ],
)
def test_undecodable_bodies_say_why(body, coding, message):
    with pytest.raises(UndecodableBody, match=message):
        decode_request_body(body, coding, 1024)


# ---------------------------------------------------------------- aliases


def test_alias_actions_naming_a_route_are_refused():
    table = RouteTable(parse_config(ROUTES_YAML))
    create = {"actions": [{"create_alias": {"collection_name": "docs", "alias_name": "prod"}}]}
    message = alias_refusal(create, table.routes)
    assert "`docs_v1`" in message and "`docs_v2`" in message and message.startswith("Wrong input:")
    physical_alias = {"actions": [{"create_alias": {"collection_name": "docs_v2", "alias_name": "prod"}},
                                  {"delete_alias": {"alias_name": "old"}},
                                  {"rename_alias": {"old_alias_name": "a", "new_alias_name": "b"}}]}
    assert alias_refusal(physical_alias, table.routes) is None
    assert alias_refusal({"actions": "nonsense"}, table.routes) is None
    assert alias_refusal([1, 2], table.routes) is None


def test_health_probes_are_qdrants_own_whitelist():
    assert is_health_probe(b"/healthz") and is_health_probe(b"/readyz") and is_health_probe(b"/livez")
    assert not is_health_probe(b"/") and not is_health_probe(b"/healthz/x") and not is_health_probe(b"/collections")
    assert not is_health_probe(b"/readyz/x") and not is_health_probe(b"/livezz")
