"""Config mistakes name every field as written; hostile YAML is refused before it can cost anything."""
from __future__ import annotations

import time

import pytest

from routing.config import MAX_CONFIG_BYTES, ConfigError, parse_config


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    return str(caught.value)


@pytest.mark.parametrize("name", ["Docs", "KB_Sections", "Named", "Unnamed"])
def test_route_names_with_capitals_stay_in_the_path(name):
    text = f"routes:\n  {name}: {{blue: a, green: b, green_percent: 150}}\n"
    assert error_of(text) == f"routes.{name}.green_percent: must be <= 100"


def test_vector_names_with_capitals_stay_and_only_the_union_tag_goes():
    text = "routes:\n  Docs:\n    blue: a\n    green: b\n    preflight: {expect: {Dense: {size: 0}}}\n"
    assert error_of(text) == "routes.Docs.preflight.expect.Dense.size: must be >= 1"
    text = "routes:\n  Docs:\n    blue: a\n    green: b\n    preflight: {expect: {size: 0}}\n"
    assert error_of(text) == "routes.Docs.preflight.expect.size: must be >= 1"


def test_a_list_as_a_key_is_a_config_error_not_a_crash():
    assert "a key must be a plain value" in error_of("? [a, b]\n: 1\n")


def test_aliases_are_refused_before_anything_expands():
    # Nine levels of nine aliases: 387 million leaves once expanded (9.3 GB in the old loader).
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    started = time.perf_counter()
    message = error_of("\n".join(lines) + "\nroutes: {}\n")
    assert time.perf_counter() - started < 0.5
    assert "aliases" in message and "not allowed" in message


def test_merge_keys_are_aliases_too():
    text = "base: &base {blue: a, green: b}\nroutes:\n  docs:\n    <<: *base\n"
    assert "aliases" in error_of(text)


def test_anchor_without_alias_is_harmless_and_accepted():
    assert parse_config("routes:\n  docs: &d {blue: a, green: b}\n", environ={}).routes["docs"].blue == "a"


def test_size_limit():
    big = "routes: {}\n" + "#" * MAX_CONFIG_BYTES
    assert "larger than 1024 KiB" in error_of(big)


def test_grpc_keys_name_their_field():
    assert error_of("upstream: {grpc_url: 'qdrant'}\n").startswith("upstream.grpc_url: must be `host:port`")
    assert error_of("grpc: {port: 70000}\n") == "grpc.port: must be <= 65535"
    assert error_of("grpc: {hots: x}\n").startswith("grpc.hots")
    config = parse_config("grpc: {}\nupstream: {url: 'http://qdrant:6333'}\n", environ={})
    assert (config.grpc.host, config.grpc.port, config.upstream.grpc_target) == ("127.0.0.1", 6334, "qdrant:6334")
    assert parse_config("upstream: {grpc_url: 'http://q:7334'}\n", environ={}).upstream.grpc_target == "q:7334"
    assert parse_config("routes: {}\n", environ={}).grpc is None  # no block, no gRPC listener


def test_grpc_keepalive_and_connection_limits_are_durations_naming_their_field():
    assert error_of("grpc: {keepalive_time: soon}\n") == "grpc.keepalive_time: must be a duration like 500ms, 30s or 5m, not 'soon'"
    assert error_of("grpc: {max_connection_idle: 0}\n") == "grpc.max_connection_idle: must be a positive duration"
    assert error_of("grpc: {min_ping_interval: -5s}\n").startswith("grpc.min_ping_interval: must be a duration")
    assert error_of("grpc: {permit_keepalive_without_calls: maybe}\n").startswith("grpc.permit_keepalive_without_calls:")
    assert error_of("grpc: {keepalive_time: 10s, keepalive_timeout: 10s}\n") == (
        "grpc.keepalive_timeout: must be shorter than keepalive_time (10s)"
    )
    listener = parse_config("grpc: {max_connection_idle: null, max_connection_age: 30m}\n", environ={}).grpc
    assert (listener.keepalive_time, listener.keepalive_timeout, listener.min_ping_interval) == (60.0, 20.0, 5.0)
    assert (listener.max_connection_idle, listener.max_connection_age, listener.max_connection_age_grace) == (None, 1800.0, 30.0)
    assert listener.permit_keepalive_without_calls is True
