"""proxy.dataplane.admission in process: clients authenticated on the head and authorized once the body
is in, a body the checks must read and cannot refused, alias actions, duplicated headers."""
from __future__ import annotations

import asyncio
import gzip

import pytest

from proxy.dataplane.admission import Admission, duplicated_header
from proxy.dataplane.live import Snapshot
from proxy.dataplane.read_bodies import ReadBodies
from proxy.dataplane.request import Request, first_values
from proxy.dataplane.upstream import UpstreamClient
from routing.config import parse_config
from routing.operations import classify
from routing.table import canonical_path, split_collection_path

# One loop for the module: the read-body worker belongs to the loop that started it, as in the proxy.
LOOP = asyncio.new_event_loop()

CONFIG = """\
upstream: {url: 'http://127.0.0.1:1', api_key: proxy-key}
clients:
  api_keys:
    - {key: reader, access: r}
    - {key: docs-only, access: r, collections: [docs]}
    - {key: writer, access: rw}
routes:
  docs: {blue: docs_v1, green: docs_v2, green_percent: 50}
  other: {blue: other_v1, green: other_v2, green_percent: 0}
"""


@pytest.fixture(scope="module")
def world():
    config = parse_config(CONFIG)
    read_bodies = ReadBodies(large=64)
    yield Snapshot.of(config, 1, "h"), Admission(UpstreamClient(config.upstream.url, config.upstream), read_bodies)
    read_bodies.close()


def request_for(snapshot, method: str, path: bytes, headers: list, body: bytes = b"") -> Request:
    request = Request(method, path, b"", first_values(headers), list(headers), body, 0.0, snapshot, 0.0)
    request.canonical = canonical_path(path)
    located = split_collection_path(request.canonical)
    if located is not None:
        request.route = snapshot.table.lookup(located[0])
        request.operation, request.kind = classify(method, located[1])
    return request


def screened(world, method, path, headers, body=b""):
    snapshot, admission = world
    request = request_for(snapshot, method, path, headers, body)
    refusal = admission.authenticate(request)
    if refusal is not None:
        return 401, refusal, request
    answer = LOOP.run_until_complete(admission.screen(request, split_collection_path(request.canonical)))
    return (answer or (None, None)) + (request,)


def test_duplicates_of_reading_headers_only():
    assert duplicated_header([(b"api-key", b"a"), (b"x", b"1"), (b"api-key", b"b")]) == "api-key"
    assert duplicated_header([(b"x-user-id", b"a"), (b"x-user-id", b"b")]) is None


def test_unknown_clients_are_refused_and_known_ones_carry_the_proxys_key(world):
    assert screened(world, "POST", b"/collections/docs/points/query", [])[0] == 401
    assert screened(world, "POST", b"/collections/docs/points/query", [(b"api-key", b"nope")])[0] == 401
    status, _, request = screened(world, "POST", b"/collections/docs/points/query", [(b"api-key", b"reader")], b'{"query":[1]}')
    assert status is None and dict(request.headers)[b"api-key"] == b"proxy-key"


def test_probes_need_no_credential_and_send_none(world):
    status, _, request = screened(world, "GET", b"/readyz", [(b"api-key", b"whatever")])
    assert status is None and b"api-key" not in dict(request.headers)
    assert screened(world, "GET", b"/readyz/x", [])[0] == 401


def test_a_scoped_lookup_outside_the_scope_is_refused(world):
    body = b'{"query":[1],"lookup_from":{"collection":"other"}}'
    assert screened(world, "POST", b"/collections/docs/points/query", [(b"api-key", b"docs-only")], body)[0] == 403
    large = b'{"query":[' + b"1," * 100 + b'1],"lookup_from":{"collection":"other"}}'  # through the worker
    assert screened(world, "POST", b"/collections/docs/points/query", [(b"api-key", b"docs-only")], large)[0] == 403


@pytest.mark.parametrize("body", [b'{"lookup_from":{"collection":"docs\xff"}}', b'{"lookup_from":{"collection":"docs"},"n":' + b"1" * 5000 + b"}"])
def test_a_body_that_must_be_read_and_cannot_is_refused(world, body):
    status, message, _ = screened(world, "POST", b"/collections/docs/points/query", [(b"api-key", b"docs-only")], body)
    assert status == 400 and "not JSON bluegreen-proxy can read" in message


def test_a_coded_read_body_is_decoded_once(world):
    body = gzip.compress(b'{"query":[1]}')
    status, _, request = screened(world, "POST", b"/collections/docs/points/query", [(b"api-key", b"reader"), (b"content-encoding", b"gzip")], body)
    assert status is None and request.plain_body == b'{"query":[1]}'
    status, message, _ = screened(world, "POST", b"/collections/docs/points/query", [(b"api-key", b"reader"), (b"content-encoding", b"gzip")], b"no")
    assert status == 400 and "gzip" in message


def test_an_alias_to_a_logical_collection_is_refused(world):
    action = b'{"actions":[{"create_alias":{"collection_name":"docs","alias_name":"a"}}]}'
    status, message, _ = screened(world, "POST", b"/collections/aliases", [(b"api-key", b"writer")], action)
    assert status == 400 and "docs_v1" in message
    physical = action.replace(b'"docs"', b'"docs_v1"')
    assert screened(world, "POST", b"/collections/aliases", [(b"api-key", b"writer")], physical)[0] is None
    assert screened(world, "POST", b"/collections/aliases", [(b"api-key", b"writer")], b"{not json")[0] == 400
