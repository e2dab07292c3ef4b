"""Pure routing decisions: config validation, bucketing, the route table, body rewriting."""
from __future__ import annotations

import json
from pathlib import Path

import mmh3
import pytest

from routing.config import ConfigError, parse_config
from routing.operations import OPERATIONS, Kind, classify
from routing.rewrite import UnreadableBody, rewrite_body_collections
from routing.table import BLUE, GREEN, RouteTable, bucket, rewrite_path, split_collection_path, threshold_for

REPO = Path(__file__).resolve().parent.parent


def table_for(route_yaml: str) -> RouteTable:
    return RouteTable(parse_config(f"routes:\n  weka:\n{route_yaml}", environ={}))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "route_yaml, message",
    [
        ("    blue: a\n    green: b\n    green_percent: 101", "routes.weka.green_percent: must be <= 100"),
        ("    blue: a\n    green: b\n    green_percent: -1", "routes.weka.green_percent: must be >= 0"),
        ("    blue: a\n    green: b\n    green_percent: 10.125", "routes.weka.green_percent: at most two decimals"),
        ("    blue: a\n    green: a", "routes.weka.green: must differ from blue"),
        ("    blue: a\n    green: b\n    colour: x", "routes.weka.colour: unknown key"),
        ("    blue: a\n    green: b\n    writes: all", "routes.weka.writes: must be one of 'blue', 'green' or 'both'"),
        ("    blue: a\n    green: b\n    fallback: cookie", "routes.weka.fallback: must be one of 'random' or 'body'"),
        ("    blue: a\n    green: b\n    key: [cookie:sid]", "routes.weka.key: 'cookie:sid': a key source is `header:NAME`"),
        ("    green: b", "routes.weka.blue: required"),
        ("    blue: a\n    green: b\n    guard: {interval: soon}", "routes.weka.guard.interval: must be a duration"),
        ("    blue: a\n    green: b\n    rollout: {steps: [50, 10]}", "routes.weka.rollout.steps: must be strictly increasing"),
    ],
)
def test_invalid_route_names_the_field(route_yaml, message):
    with pytest.raises(ConfigError) as caught:
        table_for(route_yaml)
    assert message in str(caught.value)


def test_top_level_mistakes_name_the_field():
    with pytest.raises(ConfigError, match=r"^listen.port: must be <= 65535$"):
        parse_config("listen: {port: 70000}", environ={})
    with pytest.raises(ConfigError, match=r"^upstrem: unknown key$"):
        parse_config("upstrem: {url: http://x}", environ={})
    with pytest.raises(ConfigError, match="upstream.data_dir: required when url is `embedded`"):
        parse_config("upstream: {url: embedded}", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("routes: [unclosed", environ={})
    with pytest.raises(ConfigError, match="the file is empty"):
        parse_config("  \n# nothing\n", environ={})
    with pytest.raises(ConfigError, match="duplicate key 'timeout'"):
        parse_config("upstream: {timeout: 1s, timeout: 2s}", environ={})


def test_environment_references_expand_with_defaults():
    text = "upstream: {url: 'http://${QHOST:-127.0.0.1}:6334', api_key: '${QDRANT_API_KEY:-}'}\nadmin: {token: '${TOKEN}'}"
    config = parse_config(text, environ={"TOKEN": "s3cret"})
    assert config.upstream.url == "http://127.0.0.1:6334"
    assert config.upstream.api_key is None
    assert config.admin.token == "s3cret"
    with pytest.raises(ConfigError, match="admin.token: environment variable TOKEN is not set"):
        parse_config(text, environ={})

    state_file = "state_file: '${BLUEGREEN_STATE_FILE:-}'"  # as the shipped examples and the image set it
    assert parse_config(state_file, environ={}).state_file is None  # unset: beside the config
    assert parse_config(state_file, environ={"BLUEGREEN_STATE_FILE": "/var/lib/s.json"}).state_file == "/var/lib/s.json"


def test_durations_and_defaults():
    config = parse_config(
        "upstream: {timeout: 1500ms}\nroutes:\n  weka: {blue: a, green: b, guard: {window: 5m, interval: 30s}}",
        environ={},
    )
    assert config.upstream.timeout == 1.5
    route = config.routes["weka"]
    assert (route.guard.window, route.guard.interval, route.guard.error_for) == (300.0, 30.0, 120.0)
    assert (route.salt, route.key, route.fallback, route.writes, route.allow_override) == (
        None, ["header:x-user-id"], "random", "blue", False,
    )


@pytest.mark.parametrize("example", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_examples_are_valid(example):
    parse_config(example.read_text(), environ={
        "BLUEGREEN_ADMIN_TOKEN": "t", "QDRANT_API_KEY": "k", "BLUEGREEN_READER_KEY": "r", "BLUEGREEN_INGEST_KEY": "i",
    })


# ---------------------------------------------------------------- bucketing


def test_bucket_is_the_documented_formula():
    for key in ("user-1", "ü-ñ", "42"):
        assert bucket(b"weka", key.encode()) == mmh3.hash(f"weka:{key}", signed=False) % 10000


def test_split_within_one_and_a_half_points_over_10000_keys():
    for percent in (1, 10, 33.33, 50, 90):
        route = table_for(f"    blue: a\n    green: b\n    green_percent: {percent}").routes["weka"]
        green = sum(
            route.split_colour(route.configured_threshold, {b"x-user-id": f"user-{i}".encode()}, b"") == GREEN
            for i in range(10_000)
        )
        assert abs(green / 100 - percent) <= 1.5, (percent, green)


def test_ramp_only_moves_keys_from_blue_to_green():
    route = table_for("    blue: a\n    green: b").routes["weka"]
    keys = [{b"x-user-id": f"user-{i}".encode()} for i in range(10_000)]
    previous = None
    for percent in (0, 1, 10, 50, 99.99, 100):
        now = {i for i, h in enumerate(keys) if route.split_colour(threshold_for(percent), h, b"") == GREEN}
        if previous is not None:
            assert previous <= now, f"a key moved green -> blue at {percent}%"
        previous = now
    assert len(previous) == 10_000


def test_first_present_key_source_wins_then_fallback():
    route = table_for(
        "    blue: a\n    green: b\n    green_percent: 50\n    key: [header:X-User-Id, header:x-session-id]\n    fallback: body"
    ).routes["weka"]
    threshold = route.configured_threshold
    by_user = route.split_colour(threshold, {b"x-user-id": b"u7", b"x-session-id": b"s1"}, b"")
    assert by_user == (GREEN if bucket(b"weka", b"u7") < threshold else BLUE)
    by_session = route.split_colour(threshold, {b"x-session-id": b"s1"}, b"")
    assert by_session == (GREEN if bucket(b"weka", b"s1") < threshold else BLUE)
    body = b'{"query":[0.1,0.2],"limit":3}'
    assert {route.split_colour(threshold, {}, body) for _ in range(50)} == {
        GREEN if bucket(b"weka", body) < threshold else BLUE
    }


def test_random_fallback_splits_per_request():
    route = table_for("    blue: a\n    green: b\n    green_percent: 30").routes["weka"]
    green = sum(route.split_colour(route.configured_threshold, {}, b"") == GREEN for _ in range(10_000))
    assert 2500 < green < 3500


def test_salt_changes_the_assignment():
    a = table_for("    blue: a\n    green: b\n    green_percent: 50\n    salt: one").routes["weka"]
    b = table_for("    blue: a\n    green: b\n    green_percent: 50\n    salt: two").routes["weka"]
    keys = [{b"x-user-id": str(i).encode()} for i in range(1000)]
    differ = sum(a.split_colour(5000, k, b"") != b.split_colour(5000, k, b"") for k in keys)
    assert 350 < differ < 650


def test_override_header_only_where_allowed():
    locked = table_for("    blue: a\n    green: b\n    green_percent: 0").routes["weka"]
    open_ = table_for("    blue: a\n    green: b\n    green_percent: 0\n    allow_override: true").routes["weka"]
    headers = {b"x-bluegreen-color": b"green"}
    assert locked.forced_colour(headers) is None
    assert open_.forced_colour(headers) == GREEN
    assert open_.forced_colour({b"x-bluegreen-color": b"Blue"}) == BLUE
    assert open_.forced_colour({b"x-bluegreen-color": b"purple"}) is None and open_.forced_colour({}) is None


# ---------------------------------------------------------------- paths and operations


def test_lookup_accepts_percent_encoding():
    table = RouteTable(parse_config("routes:\n  'my coll': {blue: 'my coll', green: 'my coll v2'}", environ={}))
    route = table.lookup(b"my%20coll")
    assert route is not None and route.green_segment == b"my%20coll%20v2"
    assert table.lookup(b"other") is None


def test_paths_split_and_rewrite_keeping_trailing_slash():
    assert split_collection_path(b"/collections/weka/points/query/") == (b"weka", "points/query")
    assert split_collection_path(b"/collections/weka") == (b"weka", "")
    assert split_collection_path(b"/collections") is None
    assert split_collection_path(b"/aliases") is None
    assert rewrite_path(b"/collections/weka/points/search/", b"v2") == b"/collections/v2/points/search/"
    assert rewrite_path(b"/collections/weka", b"v2") == b"/collections/v2"
    assert rewrite_path(b"/collections/weka/", b"v2") == b"/collections/v2/"


@pytest.mark.parametrize(
    "method, below, expected",
    [
        ("POST", "points/query", ("query", Kind.READ)),
        ("POST", "points/query/batch", ("query_batch", Kind.READ)),
        ("POST", "points/search/groups", ("search_groups", Kind.READ)),
        ("POST", "points/search/matrix/pairs", ("matrix_pairs", Kind.READ)),
        ("POST", "points/scroll", ("scroll", Kind.READ)),
        ("POST", "facet", ("facet", Kind.READ)),
        ("POST", "points", ("retrieve", Kind.READ)),
        ("GET", "points/17", ("retrieve", Kind.READ)),
        ("PUT", "points", ("upsert", Kind.WRITE)),
        ("POST", "points/delete", ("delete", Kind.WRITE)),
        ("PUT", "points/payload", ("overwrite_payload", Kind.WRITE)),
        ("POST", "points/batch", ("batch", Kind.WRITE)),
        ("GET", "", ("collection_info", Kind.INFO)),
        ("GET", "exists", ("collection_exists", Kind.INFO)),
        ("PUT", "", ("create_collection", Kind.ADMIN)),
        ("DELETE", "", ("delete_collection", Kind.ADMIN)),
        ("PATCH", "", ("update_collection", Kind.ADMIN)),
        ("PUT", "index", ("create_index", Kind.ADMIN)),
        ("POST", "snapshots", ("snapshots", Kind.ADMIN)),
        ("GET", "snapshots", ("snapshots", Kind.INFO)),
        ("POST", "something/new", ("other", Kind.ADMIN)),
    ],
)
def test_classify(method, below, expected):
    assert classify(method, below) == expected
    assert expected[0] in OPERATIONS


# ---------------------------------------------------------------- body rewriting


def physical(colour: str):
    names = {"weka": {"blue": "weka", "green": "weka_v2"}, "docs": {"blue": "docs_v1", "green": "docs_v2"}}
    return lambda name: names[name][colour] if name in names else None


def test_lookup_from_rewritten_at_every_prefetch_depth():
    body = {
        "prefetch": [
            {"query": [0.1], "lookup_from": {"collection": "docs", "vector": "v"},
             "prefetch": {"query": [0.2], "lookup_from": {"collection": "weka"}}},
            {"query": [0.3], "lookup_from": {"collection": "unrouted"}},
        ],
        "query": {"fusion": "rrf"},
        "lookup_from": {"collection": "docs"},
    }
    out = json.loads(rewrite_body_collections(json.dumps(body).encode(), physical("green")))
    assert out["lookup_from"] == {"collection": "docs_v2"}
    assert out["prefetch"][0]["lookup_from"] == {"collection": "docs_v2", "vector": "v"}
    assert out["prefetch"][0]["prefetch"]["lookup_from"] == {"collection": "weka_v2"}
    assert out["prefetch"][1]["lookup_from"] == {"collection": "unrouted"}


def test_with_lookup_as_string_or_object_and_batches():
    as_string = json.loads(rewrite_body_collections(b'{"group_by":"doc","with_lookup":"docs"}', physical("blue")))
    assert as_string["with_lookup"] == "docs_v1"
    as_object = json.loads(
        rewrite_body_collections(b'{"with_lookup":{"collection":"docs","with_payload":true}}', physical("green"))
    )
    assert as_object["with_lookup"] == {"collection": "docs_v2", "with_payload": True}
    batch = json.loads(
        rewrite_body_collections(b'{"searches":[{"query":[1],"lookup_from":{"collection":"docs"}}]}', physical("green"))
    )
    assert batch["searches"][0]["lookup_from"]["collection"] == "docs_v2"


def test_bodies_without_references_are_not_touched():
    assert rewrite_body_collections(b'{"query":[0.1],"limit":5}', physical("green")) is None
    assert rewrite_body_collections(b'{"lookup_from":{"collection":"unrouted"}}', physical("green")) is None
    with pytest.raises(UnreadableBody):  # must be read, cannot be: refused, never forwarded unchecked
        rewrite_body_collections(b'{"lookup_from": not json', physical("green"))
    with pytest.raises(UnreadableBody):
        rewrite_body_collections(b'{"lookup_from":{"collection":"docs\xff"}}', physical("green"))
