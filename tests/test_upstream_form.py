"""proxy.dataplane.upstream_form in process: each colour's form of a request."""
from __future__ import annotations

import asyncio
import json

import pytest

from proxy.dataplane.live import Snapshot
from proxy.dataplane.read_bodies import ReadBodies
from proxy.dataplane.request import Request, first_values
from proxy.dataplane.upstream_form import UpstreamForms
from routing.config import parse_config
from routing.operations import classify
from routing.rewrite import UnreadableBody
from routing.table import canonical_path, split_collection_path

# One loop for the module: the read-body worker belongs to the loop that started it, as in the proxy.
LOOP = asyncio.new_event_loop()

CONFIG = """\
upstream: {url: 'http://127.0.0.1:1'}
routes:
  docs: {blue: docs_v1, green: docs_v2, green_percent: 50}
  other: {blue: other_v1, green: other_v2, green_percent: 100}
"""


@pytest.fixture(scope="module", params=[1 << 20, 16], ids=["inline", "worker"])
def forms(request):
    read_bodies = ReadBodies(large=request.param)
    yield Snapshot.of(parse_config(CONFIG), 1, "h"), UpstreamForms(None, read_bodies)
    read_bodies.close()


def form(forms, path: bytes, body: bytes, colour: str, headers=()):
    snapshot, upstream_forms = forms
    request = Request("POST", path, b"", first_values(list(headers)), list(headers), body, 0.0, snapshot, 0.0)
    request.canonical = canonical_path(path)
    located = split_collection_path(request.canonical)
    request.route = snapshot.table.lookup(located[0])
    request.operation, request.kind = classify("POST", located[1])
    return LOOP.run_until_complete(upstream_forms.form(request, colour))


def test_each_colour_gets_its_collection_and_the_lookups_their_own_split(forms):
    body = b'{"query":[1],"lookup_from":{"collection":"docs"},"prefetch":{"lookup_from":{"collection":"other"}}}'
    for colour, collection in (("blue", "docs_v1"), ("green", "docs_v2")):
        path, sent, _ = form(forms, b"/collections/docs/points/query", body, colour)
        assert path == f"/collections/{collection}/points/query".encode()
        document = json.loads(sent)
        assert document["lookup_from"] == {"collection": collection}
        assert document["prefetch"]["lookup_from"] == {"collection": "other_v2"}  # other's own split: 100 %


def test_a_body_naming_no_collection_goes_byte_for_byte(forms):
    body = b'{"query": [1,  2]}'
    assert form(forms, b"/collections/docs/points/query", body, "green")[1] is body


def test_writes_are_never_rewritten(forms):
    body = b'{"points":[{"id":1,"vector":[1],"payload":{"lookup_from":{"collection":"docs"}}}]}'
    assert form(forms, b"/collections/docs/points", body, "green")[1] is body


def test_an_unreadable_body_naming_collections_is_raised_not_sent(forms):
    with pytest.raises(UnreadableBody):
        form(forms, b"/collections/docs/points/query", b'{"lookup_from":{"collection":"docs"},"x":\xff}', "blue")
