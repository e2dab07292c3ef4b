"""Issue 9 end to end: no routing bypass, no borrowed upstream key, clients authenticated by logical
name, user data forwarded as sent. Real proxy processes over real sockets, in front of a recording
upstream (exact bytes and headers) or the embedded Qdrant-compatible upstream with the real qdrant-client.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import http.client
import json
import time
import urllib.request
import uuid

import httpx
import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.support import RunningProxy, qdrant_client, start_echo_upstream, wait_until

MASTER_KEY = "master-key-of-the-proxy"
JWT_SECRET = "jwt-secret-0123456789"
ADMIN_TOKEN = "admin-token-t"

ROUTES = """\
  docs:
    blue: docs_v1
    green: docs_v2
    green_percent: 50
    writes: both
    allow_override: true
  weka:
    blue: weka
    green: weka_v2
    green_percent: 100
  checked:                    # wants 100 %, but the echo upstream fails its preflight: effectively 0 %
    blue: checked_v1
    green: checked_v2
    green_percent: 100
    preflight: {recheck: 1s}
"""

CLIENTS = f"""\
clients:
  api_keys:
    - {{key: reader-key, access: r}}
    - {{key: ingest-key, access: rw, collections: [docs]}}
    - {{key: writer-key, access: rw}}
  jwt: {{secret: {JWT_SECRET}}}
  anonymous: none
"""


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """The recording upstream: its URL."""
    server, url = start_echo_upstream(tmp_path_factory.mktemp("echo"))
    yield url
    server.stop()


def _proxy(tmp_path_factory, name: str, upstream: str, extra_yaml: str = "", routes: str = ROUTES) -> RunningProxy:
    return RunningProxy(
        tmp_path_factory.mktemp(name), upstream, routes, extra_yaml=extra_yaml,
        upstream_options=f"timeout: 10s, api_key: {MASTER_KEY}", admin_options=f"token: {ADMIN_TOKEN}",
    ).start()


@pytest.fixture(scope="module")
def open_proxy(tmp_path_factory, echo):
    """No `clients` block: clients' own credentials pass through; the proxy's key is its own."""
    proxy = _proxy(tmp_path_factory, "open", echo)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def guarded_proxy(tmp_path_factory, echo):
    """With `clients`: only credentials the proxy accepts get through, carrying the proxy's key."""
    proxy = _proxy(tmp_path_factory, "guarded", echo, extra_yaml=CLIENTS)
    yield proxy
    proxy.stop()


PREFLIGHT_PATHS = "/collections/checked_v"  # the proxy's own calls, every second: not the test's


def received(echo_url: str, clear: bool = False, preflight: bool = False) -> list[dict]:
    request = urllib.request.Request(echo_url + "/__received", method="DELETE" if clear else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        records = json.loads(response.read())
    for record in records:
        record["body"] = base64.b64decode(record.pop("body_b64"))
        record["header"] = {name.lower(): value for name, value in record["headers"]}
    return [record for record in records if preflight or not record["raw_path"].startswith(PREFLIGHT_PATHS)]


def only_received(echo_url: str, count: int = 1) -> list[dict]:
    records = received(echo_url)
    assert len(records) == count, [(r["method"], r["raw_path"]) for r in records]
    return records


def raw_request(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """Exactly this request line, whatever the path looks like (http.client sends it as given)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def envelope_error(body: bytes) -> str:
    document = json.loads(body)
    assert set(document) == {"status", "time"}, document
    return document["status"]["error"]


def make_jwt(claims: dict, secret: str = JWT_SECRET) -> str:
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    return (signing_input + b"." + b64(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())).decode()


# ---------------------------------------------------------------- 1. one canonical path


@pytest.mark.parametrize(
    "path",
    ["//collections/docs", "/collections//docs", "/collections/docs/", "/%63ollections/docs",
     "/collections/%64ocs", "/collections/docs%2F", "//collections//docs//"],
)
def test_every_spelling_of_a_logical_delete_is_refused(open_proxy, echo, path):
    received(echo, clear=True)
    status, headers, body = raw_request(open_proxy.url, "DELETE", path)
    if path == "/collections/docs%2F":  # `docs/` as one name: not the route, so not refused, passed as sent
        assert status == 200 and only_received(echo)[0]["raw_path"] == path
        return
    assert status == 400, body
    assert "`docs` is a logical collection" in envelope_error(body) and "docs_v1" in envelope_error(body)
    assert received(echo) == []  # nothing reached the upstream


@pytest.mark.parametrize(
    "path",
    ["/collections/docs/points/query", "//collections/docs/points/query", "/collections/docs/points//query",
     "/collections/docs/points/%71uery", "/collections/%64ocs/points/query/", "/%63ollections//docs/points/query//"],
)
def test_every_spelling_of_a_read_is_split_and_forwarded_canonical(open_proxy, echo, path):
    received(echo, clear=True)
    status, headers, _ = raw_request(open_proxy.url, "POST", path + "?timeout=3", b'{"query":[1]}', {"x-user-id": "u7"})
    assert status == 200
    colour = headers["x-bluegreen-color"]
    assert only_received(echo)[0]["raw_path"] == f"/collections/docs_{'v2' if colour == 'green' else 'v1'}/points/query?timeout=3"


@pytest.mark.parametrize("path", ["/collections/docs/points", "//collections/docs/points/", "/collections/d%6Fcs//points"])
def test_every_spelling_of_a_write_is_dual_written(open_proxy, echo, path):
    received(echo, clear=True)
    status, headers, _ = raw_request(open_proxy.url, "PUT", path + "?wait=true", b'{"points":[]}')
    assert status == 200 and headers["x-bluegreen-color"] == "both"
    assert sorted(r["raw_path"] for r in only_received(echo, 2)) == [
        "/collections/docs_v1/points?wait=true", "/collections/docs_v2/points?wait=true",
    ]


def test_unrouted_spellings_pass_through_byte_for_byte(open_proxy, echo):
    received(echo, clear=True)
    status, _, _ = raw_request(open_proxy.url, "POST", "//collections/other//points/%71uery/?x=1", b"{}")
    assert status == 200
    assert only_received(echo)[0]["raw_path"] == "//collections/other//points/%71uery/?x=1"


def test_spellings_through_the_real_client_and_the_embedded_upstream(tmp_path_factory, embedded_upstream):
    """The shipped layout: blue carries the logical name. A spelled DELETE must not delete it."""
    logical = f"weka_{uuid.uuid4().hex[:6]}"
    green = f"{logical}_v2"
    direct = qdrant_client(embedded_upstream)
    for name in (logical, green):
        direct.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    routes = f"  {logical}: {{blue: {logical}, green: {green}, green_percent: 50, writes: both}}\n"
    proxy = RunningProxy(tmp_path_factory.mktemp("spelled"), embedded_upstream, routes).start()
    try:
        for path in (f"//collections/{logical}", f"/collections/{logical}/", f"/%63ollections/{logical}"):
            status, _, body = raw_request(proxy.url, "DELETE", path)
            assert status == 400, body
        assert direct.collection_exists(logical)
        point = json.dumps({"points": [{"id": 5, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"k": "v"}}]}).encode()
        status, _, body = raw_request(proxy.url, "PUT", f"/collections//{logical}/points/?wait=true", point)
        assert status == 200, body
        assert [p.id for p in direct.retrieve(logical, [5])] == [5] and [p.id for p in direct.retrieve(green, [5])] == [5]
        client = qdrant_client(proxy.url)
        hits = client.query_points(logical, query=[0.1, 0.2, 0.3, 0.4], limit=1).points
        assert [hit.id for hit in hits] == [5]
        status, headers, body = raw_request(proxy.url, "POST", f"/collections/{logical}/points//%71uery", b'{"query":[0.1,0.2,0.3,0.4]}')
        assert status == 200 and headers["x-bluegreen-color"] in ("blue", "green") and json.loads(body)["result"]["points"]
        client.close()
    finally:
        proxy.stop()
        direct.close()


# ---------------------------------------------------------------- 2. the upstream key is the proxy's own


@pytest.mark.parametrize("path", ["/collections/docs/points/query", "/collections/other/points/query", "/collections"])
def test_no_upstream_key_lent_to_clients(open_proxy, echo, path):
    method = "GET" if path == "/collections" else "POST"
    for sent, expected in (
        ({}, {}),  # anonymous: nothing added
        ({"authorization": "Bearer scoped-jwt"}, {"authorization": "Bearer scoped-jwt"}),  # not upgraded
        ({"api-key": "client-own-key"}, {"api-key": "client-own-key"}),  # its own, unchanged
    ):
        received(echo, clear=True)
        response = httpx.request(method, open_proxy.url + path, content=b'{"query":[1]}', headers={"x-user-id": "u", **sent})
        assert response.status_code == 200
        header = only_received(echo)[0]["header"]
        assert {name: header.get(name) for name in ("api-key", "authorization") if name in header} == expected
        assert MASTER_KEY not in json.dumps(header)


def test_preflight_uses_the_upstream_key(open_proxy, echo):
    def preflight_calls():
        return [r for r in received(echo, preflight=True) if r["raw_path"].startswith(PREFLIGHT_PATHS)]

    calls = wait_until(preflight_calls, timeout=10)
    assert all(call["header"].get("api-key") == MASTER_KEY for call in calls)


# ---------------------------------------------------------------- 3. clients authenticated by the proxy


def _status(proxy: RunningProxy, method: str, path: str, headers: dict, body: bytes = b'{"query":[1]}') -> tuple[int, str]:
    response = httpx.request(method, proxy.url + path, content=body, headers={"x-user-id": "u1", **headers})
    return response.status_code, (envelope_error(response.content) if response.status_code in (401, 403) else "")


@pytest.mark.parametrize(
    ("case", "method", "path", "headers", "status", "says"),
    [
        ("no credential", "POST", "/collections/docs/points/query", {}, 401, "needs a credential"),
        ("wrong key", "POST", "/collections/docs/points/query", {"api-key": "guess"}, 401, "invalid api key"),
        ("wrong bearer", "POST", "/collections/docs/points/query", {"authorization": "Bearer guess"}, 401, "invalid"),
        ("reader reads", "POST", "/collections/docs/points/query", {"api-key": "reader-key"}, 200, ""),
        ("reader writes", "PUT", "/collections/docs/points", {"api-key": "reader-key"}, 403, "needs rw access"),
        ("reader deletes unrouted", "DELETE", "/collections/other", {"api-key": "reader-key"}, 403, "needs rw"),
        ("writer in scope", "PUT", "/collections/docs/points", {"api-key": "ingest-key"}, 200, ""),
        ("writer outside scope", "PUT", "/collections/weka/points", {"api-key": "ingest-key"}, 403, "outside"),
        ("writer outside scope reads", "POST", "/collections/weka/points/query", {"api-key": "ingest-key"}, 403, "outside"),
        ("scoped writer, spelled", "PUT", "//collections/%77eka/points", {"api-key": "ingest-key"}, 403, "outside"),
        ("jwt in scope", "POST", "/collections/docs/points/query",
         {"authorization": "Bearer " + make_jwt({"access": [{"collection": "docs", "access": "r"}]})}, 200, ""),
        ("jwt in api-key header", "POST", "/collections/docs/points/query",
         {"api-key": make_jwt({"access": [{"collection": "docs", "access": "r"}]})}, 200, ""),
        ("jwt out of scope", "POST", "/collections/weka/points/query",
         {"authorization": "Bearer " + make_jwt({"access": [{"collection": "docs", "access": "rw"}]})}, 403, "outside"),
        ("jwt reader writes", "PUT", "/collections/docs/points",
         {"authorization": "Bearer " + make_jwt({"access": [{"collection": "docs", "access": "r"}]})}, 403, "needs rw"),
        ("jwt expired", "POST", "/collections/docs/points/query",
         {"authorization": "Bearer " + make_jwt({"access": "rw", "exp": int(time.time()) - 5})}, 401, "expired"),
        ("jwt forged", "POST", "/collections/docs/points/query",
         {"authorization": "Bearer " + make_jwt({"access": "rw"}, secret="not the secret")}, 401, "invalid"),
        ("listing needs a credential", "GET", "/collections", {}, 401, "needs a credential"),
        ("listing with any credential", "GET", "/collections", {"api-key": "ingest-key"}, 200, ""),
        ("version needs a credential", "GET", "/", {}, 401, "needs a credential"),
        ("health probes need none, as at Qdrant", "GET", "/healthz", {}, 200, ""),
        ("readiness probe needs none", "GET", "/readyz", {}, 200, ""),
        ("reader downloads a snapshot", "GET", "/collections/docs/snapshots/s.snapshot", {"api-key": "reader-key"}, 403, "needs rw"),
        ("reader lists full snapshots", "GET", "/snapshots", {"api-key": "reader-key"}, 403, "needs rw"),
        ("writer lists full snapshots", "GET", "/snapshots", {"api-key": "writer-key"}, 200, ""),
        ("alias change needs unscoped rw", "POST", "/collections/aliases", {"api-key": "ingest-key"}, 403, "limited to collections"),
        ("colour question needs a credential", "GET", "/bluegreen/routes/docs/color", {}, 401, "needs a credential"),
        ("colour question in scope", "GET", "/bluegreen/routes/docs/color", {"api-key": "ingest-key"}, 200, ""),
        ("colour question out of scope", "GET", "/bluegreen/routes/weka/color", {"api-key": "ingest-key"}, 403, "outside"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else None,
)
def test_auth_matrix(guarded_proxy, echo, case, method, path, headers, status, says):
    received(echo, clear=True)
    got, message = _status(guarded_proxy, method, path, headers, b"{}" if path.endswith("aliases") else b'{"query":[1]}')
    assert got == status, message
    assert says in message
    if status != 200:
        assert received(echo) == []  # refused at the proxy: the upstream never saw it
    elif path in ("/healthz", "/readyz"):  # no credential checked: none sent, not the proxy's key either
        assert not {"api-key", "authorization"} & set(only_received(echo)[0]["header"])
    elif not path.startswith("/bluegreen/"):
        for record in received(echo):  # accepted: the proxy's key, never the client's credential
            assert record["header"].get("api-key") == MASTER_KEY
            assert "authorization" not in record["header"]


def test_a_lookup_outside_the_scope_is_refused(guarded_proxy, echo):
    token = make_jwt({"access": [{"collection": "docs", "access": "r"}]})
    body = json.dumps({"query": [1], "prefetch": {"lookup_from": {"collection": "weka"}}}).encode()
    status, message = _status(guarded_proxy, "POST", "/collections/docs/points/query", {"authorization": f"Bearer {token}"}, body)
    assert status == 403 and "`weka`" in message


def test_anonymous_access_for_a_trusted_network(tmp_path_factory, echo):
    proxy = _proxy(tmp_path_factory, "anonymous", echo, extra_yaml="clients: {anonymous: r}\n")
    try:
        received(echo, clear=True)
        assert _status(proxy, "POST", "/collections/docs/points/query", {})[0] == 200
        assert only_received(echo)[0]["header"]["api-key"] == MASTER_KEY
        assert _status(proxy, "PUT", "/collections/docs/points", {})[0] == 403
        assert _status(proxy, "POST", "/collections/docs/points/query", {"api-key": "unknown"})[0] == 401
    finally:
        proxy.stop()


def test_credentials_are_checked_before_the_body(guarded_proxy, echo):
    url = "/collections/docs/points/query"
    coded = {"content-encoding": "gzip"}
    assert _status(guarded_proxy, "POST", url, coded, b"not gzip")[0] == 401
    assert _status(guarded_proxy, "POST", url, {**coded, "api-key": "reader-key"}, b"not gzip")[0] == 400
    received(echo, clear=True)
    lookup = gzip.compress(b'{"query":[1],"lookup_from":{"collection":"docs"}}')
    assert _status(guarded_proxy, "POST", url, {**coded, "api-key": "reader-key", "x-bluegreen-color": "green"}, lookup)[0] == 200
    record = only_received(echo)[0]
    assert json.loads(record["body"])["lookup_from"]["collection"] == "docs_v2"
    assert record["header"]["api-key"] == MASTER_KEY


def test_keys_rotate_with_a_config_reload(tmp_path_factory, echo):
    proxy = _proxy(tmp_path_factory, "rotate", echo, extra_yaml="clients: {api_keys: [{key: old-key, access: r}]}\n")
    try:
        assert _status(proxy, "POST", "/collections/docs/points/query", {"api-key": "old-key"})[0] == 200
        proxy.extra_yaml = "clients: {api_keys: [{key: new-key, access: r}]}\n"
        proxy.write_routes(ROUTES)
        wait_until(lambda: _status(proxy, "POST", "/collections/docs/points/query", {"api-key": "new-key"})[0] == 200, timeout=10)
        assert _status(proxy, "POST", "/collections/docs/points/query", {"api-key": "old-key"})[0] == 401
    finally:
        proxy.stop()


def test_secrets_stay_out_of_logs_and_admin(guarded_proxy):
    _status(guarded_proxy, "POST", "/collections/docs/points/query", {"api-key": "reader-key"})
    _status(guarded_proxy, "POST", "/collections/docs/points/query", {"api-key": "wrong-guess-key"})
    seen = guarded_proxy.server.log() + json.dumps(guarded_proxy.admin_json()) + json.dumps(guarded_proxy.admin_json("/readyz"))
    for secret in ("reader-key", "ingest-key", "writer-key", JWT_SECRET, MASTER_KEY, ADMIN_TOKEN, "wrong-guess-key"):
        assert secret not in seen


# ---------------------------------------------------------------- 4. user data forwarded as sent


WRITE_BODIES = [
    ("PUT", "/collections/docs/points?wait=true", {"points": [{"id": 1, "vector": [0.1], "payload": {
        "with_lookup": "docs", "lookup_from": {"collection": "docs"}, "note": "lookup\u005ffrom stays"}}]}),
    ("POST", "/collections/docs/points/payload", {"payload": {"lookup_from": {"collection": "docs"}, "with_lookup": "weka"}, "points": [1]}),
    ("PUT", "/collections/docs/points/payload", {"payload": {"with_lookup": {"collection": "docs"}}, "points": [1]}),
    ("POST", "/collections/docs/points/batch", {"operations": [
        {"upsert": {"points": [{"id": 2, "vector": [0.2], "payload": {"lookup_from": {"collection": "weka"}}}]}},
        {"set_payload": {"payload": {"with_lookup": "docs"}, "points": [2]}}]}),
]


@pytest.mark.parametrize(("method", "path", "document"), WRITE_BODIES, ids=["upsert", "set_payload", "overwrite_payload", "batch"])
def test_write_bodies_reach_both_colours_byte_for_byte(open_proxy, echo, method, path, document):
    body = json.dumps(document, indent=1).encode() + b"\n"  # a spelling no re-serialisation would keep
    received(echo, clear=True)
    response = httpx.request(method, open_proxy.url + path, content=body)
    assert response.status_code == 200 and response.headers["x-bluegreen-color"] == "both"
    records = only_received(echo, 2)
    assert sorted(record["raw_path"].split("/")[2] for record in records) == ["docs_v1", "docs_v2"]
    assert [record["body"] for record in records] == [body, body]


def test_read_body_rewritten_only_where_qdrant_reads_a_collection(open_proxy, echo):
    body = {"query": [1], "lookup_from": {"collection": "docs"}, "filter": {"must": [{"key": "with_lookup", "match": {"value": "docs"}}]}}
    received(echo, clear=True)
    response = httpx.post(open_proxy.url + "/collections/docs/points/query", json=body, headers={"x-bluegreen-color": "green"})
    sent = json.loads(only_received(echo)[0]["body"])
    assert response.headers["x-bluegreen-color"] == "green"
    assert sent["lookup_from"] == {"collection": "docs_v2"} and sent["filter"] == body["filter"]


def test_compressed_read_bodies_are_decoded_to_look(open_proxy, echo):
    url = open_proxy.url + "/collections/docs/points/query"
    forced = {"x-bluegreen-color": "blue", "content-encoding": "gzip"}
    lookup = gzip.compress(b'{"query":[1],"lookup\\u005ffrom":{"collection":"docs"}}')
    received(echo, clear=True)
    assert httpx.post(url, content=lookup, headers=forced).status_code == 200
    record = only_received(echo)[0]
    assert json.loads(record["body"])["lookup_from"] == {"collection": "docs_v1"}
    assert "content-encoding" not in record["header"]  # sent decoded, the header fixed
    plain = gzip.compress(b'{"query":[1]}')
    received(echo, clear=True)
    assert httpx.post(url, content=plain, headers=forced).status_code == 200
    record = only_received(echo)[0]
    assert record["body"] == plain and record["header"]["content-encoding"] == "gzip"  # nothing to change: as sent
    received(echo, clear=True)
    bad = httpx.post(url, content=b"not gzip", headers=forced)
    assert bad.status_code == 400 and "not valid gzip" in envelope_error(bad.content)
    unsupported = httpx.post(url, content=b"...", headers={**forced, "content-encoding": "br"})
    assert unsupported.status_code == 400 and "'br' is not supported" in envelope_error(unsupported.content)
    assert received(echo) == []


# ---------------------------------------------------------------- 5. a lookup follows its own route


def test_a_lookup_follows_the_named_routes_own_split(open_proxy, echo):
    body = json.dumps({"query": [1], "lookup_from": {"collection": "checked"}, "with_lookup": "weka"}).encode()
    received(echo, clear=True)
    response = httpx.post(open_proxy.url + "/collections/docs/points/query/groups", content=body,
                          headers={"x-bluegreen-color": "blue"})
    assert response.headers["x-bluegreen-color"] == "blue"
    sent = json.loads(only_received(echo)[0]["body"])
    assert sent["lookup_from"]["collection"] == "checked_v1"  # its failed preflight keeps green dark
    assert sent["with_lookup"] == "weka_v2"  # weka's own 100 %, although docs went blue
    rollback = httpx.post(open_proxy.admin_url + "/admin/routes/weka/rollback", json={"reason": "test"},
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert rollback.status_code == 200
    try:
        received(echo, clear=True)
        httpx.post(open_proxy.url + "/collections/docs/points/query/groups", content=body, headers={"x-bluegreen-color": "green"})
        assert json.loads(only_received(echo)[0]["body"])["with_lookup"] == "weka"  # weka rolled back: its blue
    finally:
        httpx.post(open_proxy.admin_url + "/admin/routes/weka/resume", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})


# ---------------------------------------------------------------- 6. CORS


@pytest.mark.parametrize("fixture", ["open_proxy", "guarded_proxy"])
def test_options_is_answered_by_the_upstream(request, echo, fixture):
    proxy = request.getfixturevalue(fixture)
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "x-user-id, api-key"}
    for path, upstream_path in (("/collections/docs/points/query", "/collections/docs_v1/points/query"),
                                ("/collections/other/points/query", "/collections/other/points/query"),
                                ("/collections", "/collections")):
        received(echo, clear=True)
        response = httpx.request("OPTIONS", proxy.url + path, headers=preflight)
        assert response.status_code == 200 and response.headers["x-upstream"] == "echo"
        assert "x-bluegreen-color" not in response.headers  # the upstream's answer, unchanged
        record = only_received(echo)[0]
        assert record["method"] == "OPTIONS" and record["raw_path"] == upstream_path
        assert "api-key" not in record["header"]  # no credential checked, so no key lent


# ---------------------------------------------------------------- 7 and 8 on the embedded upstream


@pytest.fixture
def model_change(tmp_path_factory, embedded_upstream):
    """A route whose green holds another model's vectors (8 -> 16 dims), as the README's example."""
    tag = uuid.uuid4().hex[:6]
    logical, blue, green = f"sections_{tag}", f"sections_{tag}_minilm", f"sections_{tag}_jina"
    direct = qdrant_client(embedded_upstream)
    direct.create_collection(blue, vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
    direct.create_collection(green, vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE))
    routes = f"  {logical}: {{blue: {blue}, green: {green}, green_percent: 0, allow_override: true}}\n"
    proxy = RunningProxy(tmp_path_factory.mktemp("model"), embedded_upstream, routes).start()
    yield proxy, direct, logical, blue, green
    proxy.stop()
    direct.close()


def test_collection_info_honours_a_forced_colour(model_change):
    proxy, _, logical, _, green = model_change
    plain, forced = qdrant_client(proxy.url), qdrant_client(proxy.url, headers={"x-bluegreen-color": "green"})
    assert plain.get_collection(logical).config.params.vectors.size == 8
    assert forced.get_collection(logical).config.params.vectors.size == 16
    assert forced.collection_exists(logical)
    response = httpx.get(f"{proxy.url}/collections/{logical}", headers={"x-bluegreen-color": "green"})
    assert response.headers["x-bluegreen-collection"] == green
    plain.close()
    forced.close()


def test_a_browser_preflight_is_answered_by_the_upstream(model_change):
    proxy, _, logical, _, _ = model_change
    response = httpx.request("OPTIONS", f"{proxy.url}/collections/{logical}/points/query", headers={
        "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "x-user-id, content-type",
    })
    assert response.status_code < 300
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert response.headers["access-control-allow-headers"] == "x-user-id, content-type"


def test_an_alias_to_a_logical_collection_is_refused(model_change):
    proxy, direct, logical, blue, _ = model_change
    client = qdrant_client(proxy.url)
    create = models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=logical, alias_name=f"{logical}_prod"))
    with pytest.raises(UnexpectedResponse) as refused:
        client.update_collection_aliases(change_aliases_operations=[create])
    assert refused.value.status_code == 400
    message = envelope_error(refused.value.content)
    assert f"`{logical}` is a logical collection" in message and blue in message
    assert not [a for a in direct.get_aliases().aliases if a.alias_name == f"{logical}_prod"]
    status, _, body = raw_request(proxy.url, "POST", "//collections/aliases/", json.dumps(
        {"actions": [{"create_alias": {"collection_name": logical, "alias_name": "x"}}]}).encode())
    assert status == 400, body
    physical = models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=blue, alias_name=f"{blue}_prod"))
    assert client.update_collection_aliases(change_aliases_operations=[physical])
    assert [a.collection_name for a in direct.get_aliases().aliases if a.alias_name == f"{blue}_prod"] == [blue]
    client.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_the_real_client_with_a_key_of_its_own(tmp_path_factory, embedded_upstream):
    tag = uuid.uuid4().hex[:6]
    logical, blue, green = f"keyed_{tag}", f"keyed_{tag}_a", f"keyed_{tag}_b"
    direct = qdrant_client(embedded_upstream)
    for name in (blue, green):
        direct.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    proxy = RunningProxy(
        tmp_path_factory.mktemp("keyed"), embedded_upstream,
        f"  {logical}: {{blue: {blue}, green: {green}, green_percent: 50, writes: both}}\n",
        extra_yaml="clients: {api_keys: [{key: reader-key, access: r}, {key: ingest-key, access: rw, collections: [" + logical + "]}]}\n",
    ).start()
    try:
        ingest = qdrant_client(proxy.url, api_key="ingest-key")
        ingest.upsert(logical, [models.PointStruct(id=1, vector=[0.1, 0.2, 0.3, 0.4])], wait=True)
        reader = qdrant_client(proxy.url, api_key="reader-key")
        assert [p.id for p in reader.query_points(logical, query=[0.1, 0.2, 0.3, 0.4]).points] == [1]
        with pytest.raises(UnexpectedResponse) as forbidden:
            reader.upsert(logical, [models.PointStruct(id=2, vector=[0.1, 0.2, 0.3, 0.4])], wait=True)
        assert forbidden.value.status_code == 403
        anonymous = qdrant_client(proxy.url)
        with pytest.raises(UnexpectedResponse) as unauthorized:
            anonymous.count(logical)
        assert unauthorized.value.status_code == 401
        for client in (ingest, reader, anonymous):
            client.close()
    finally:
        proxy.stop()
        direct.close()
