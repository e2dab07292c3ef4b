"""proxy.metrics in-process: the event counters exist at 0 for known names, keep their counts when
exported again (a reload), and get no series for unknown names."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import EMBED_ERROR_KINDS, RELOAD_RESULTS, ROLLBACK_REASONS, UPSTREAM_ERROR_KINDS, Metrics
from routing.config import parse_config


def values(metrics: Metrics, name: str) -> dict[frozenset, float]:
    exposition = metrics.exposition().decode()
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(exposition) for sample in family.samples if sample.name == name
    }


def test_rollback_reasons_are_the_guards_rules_and_manual():
    assert ROLLBACK_REASONS == ("error_rate", "latency", "empty_results", "overlap", "manual")


def test_a_fresh_registry_has_reload_results_and_unrouted_errors_at_zero():
    metrics = Metrics()
    assert values(metrics, "bluegreen_config_reloads_total") == {frozenset({("result", r)}): 0 for r in RELOAD_RESULTS}
    errors = values(metrics, "bluegreen_upstream_errors_total")
    assert errors == {
        frozenset({("route", "_unrouted"), ("color", "none"), ("collection", "_unrouted"), ("kind", kind)}): 0
        for kind in UPSTREAM_ERROR_KINDS
    }
    assert values(metrics, "bluegreen_rollbacks_total") == {}


def test_known_routes_and_embedders_start_at_zero_and_keep_their_counts():
    config = parse_config("routes:\n  docs: {blue: d1, green: d2}\n", environ={})
    metrics = Metrics()
    metrics.count_from_zero(config.routes, ["svc"])
    rollbacks = values(metrics, "bluegreen_rollbacks_total")
    assert rollbacks == {frozenset({("route", "docs"), ("reason", reason)}): 0 for reason in ROLLBACK_REASONS}
    assert values(metrics, "bluegreen_failovers_total") == {frozenset({("route", "docs")}): 0}
    errors = values(metrics, "bluegreen_upstream_errors_total")
    assert len(errors) == 3 * len(UPSTREAM_ERROR_KINDS)  # blue, green, unrouted
    assert errors[frozenset({("route", "docs"), ("color", "green"), ("collection", "d2"), ("kind", "timeout")})] == 0
    assert len(values(metrics, "bluegreen_embed_errors_total")) == len(EMBED_ERROR_KINDS)

    metrics.rollbacks.labels("docs", "latency").inc()
    metrics.series("docs", "blue", "d1", "query").upstream_error("5xx")
    metrics.count_from_zero(config.routes, ["svc"])  # a reload of the same routes
    assert values(metrics, "bluegreen_rollbacks_total")[frozenset({("route", "docs"), ("reason", "latency")})] == 1
    assert values(metrics, "bluegreen_upstream_errors_total")[
        frozenset({("route", "docs"), ("color", "blue"), ("collection", "d1"), ("kind", "5xx")})] == 1
