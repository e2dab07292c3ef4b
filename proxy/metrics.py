"""Prometheus metrics. Names and labels are a contract: dashboards and tests read them."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from routing.config import Route
from routing.guard import RULES
from routing.rollout import MANUAL
from routing.table import BLUE, GREEN

UNROUTED = "_unrouted"  # the one route (and collection) label for traffic without a route
NO_COLOUR = "none"

# Fine below 10 ms (to tell 1 ms from 5 ms), coarse above.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

# Shadow comparison scores (0..1) and the green/blue latency ratio of a shadowed pair.
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)

# The label values of the event counters, each exported at 0 for every known route (and embedder) from
# the start: a series that first appears at 1 has no increase() in Prometheus, so an alert on it would
# miss the first event.
ROLLBACK_REASONS = (*(rule.name for rule in RULES), MANUAL)
UPSTREAM_ERROR_KINDS = ("timeout", "connect", "5xx", "too_large", "overloaded")
EMBED_ERROR_KINDS = ("timeout", "connect", "status", "response", "dimensions", "model", "closed")
RELOAD_RESULTS = ("success", "failure")

_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
NO_RESPONSE = "error"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class RequestSeries:
    """The metric children of one (route, colour, collection, operation): resolved once, reused."""

    __slots__ = ("_duration", "_by_status", "_requests", "_labels", "_errors", "_error_family")

    def __init__(self, metrics: "Metrics", labels: tuple[str, str, str, str]):
        self._labels = labels
        self._requests = metrics.requests
        self._error_family = metrics.upstream_errors
        self._duration = metrics.duration.labels(*labels)
        self._by_status: dict[int, Counter] = {}
        self._errors: dict[str, Counter] = {}

    def observe(self, status: int | None, seconds: float) -> None:
        """status None: no response came (timeout, refused, reset)."""
        self._duration.observe(seconds)
        klass = 0 if status is None else status // 100
        child = self._by_status.get(klass)
        if child is None:
            label = NO_RESPONSE if status is None else _STATUS_CLASS.get(klass, "5xx")
            child = self._by_status[klass] = self._requests.labels(*self._labels, label)
        child.inc()

    def upstream_error(self, kind: str) -> None:
        child = self._errors.get(kind)
        if child is None:
            route, colour, collection, _ = self._labels
            child = self._errors[kind] = self._error_family.labels(route, colour, collection, kind)
        child.inc()


class Metrics:
    # Long by design: one declaration per exported metric, read top to bottom as the metric reference.
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "bluegreen_requests", "Requests answered, by route, colour, physical collection, operation and status class.",
            ["route", "color", "collection", "operation", "status"], registry=r,
        )
        self.duration = Histogram(
            "bluegreen_request_duration_seconds", "Time from request received to response sent, upstream included.",
            ["route", "color", "collection", "operation"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "bluegreen_upstream_errors", "Upstream failures: timeout, connect (refused/reset/no response), 5xx, too_large or overloaded (shed, 503).",
            ["route", "color", "collection", "kind"], registry=r,
        )
        self.green_percent = Gauge(
            "bluegreen_green_percent", "Share of reads the route sends to green now (effective, after guards).",
            ["route"], registry=r,
        )
        self.configured_green_percent = Gauge(
            "bluegreen_configured_green_percent", "green_percent as written in the config file.", ["route"], registry=r,
        )
        self.config_generation = Gauge(
            "bluegreen_config_generation", "Generation of the config snapshot serving traffic (1 = first load).", registry=r,
        )
        self.last_reload_ok = Gauge(
            "bluegreen_config_last_reload_successful", "1 if the last config (re)load was applied, 0 if it was rejected.", registry=r,
        )
        self.reloads = Counter(
            "bluegreen_config_reloads", "Config reload attempts whose content changed, by result (success, failure).",
            ["result"], registry=r,
        )
        self.last_reload_time = Gauge(
            "bluegreen_config_last_reload_timestamp_seconds", "Unix time of the last reload attempt.", registry=r,
        )
        self.rollbacks = Counter(
            "bluegreen_rollbacks", "Route rollbacks, by reason (error_rate, latency, empty_results, overlap, manual).",
            ["route", "reason"], registry=r,
        )
        # The rollout state store (`state.store`: file or qdrant); all at 0 from the start.
        self.state_store = {
            "reads": Counter("bluegreen_state_store_reads", "Reads of the rollout state store that it answered.", ["store"], registry=r),
            "writes": Counter("bluegreen_state_store_writes", "Saves of rollout decisions the state store took.", ["store"], registry=r),
            "conflicts": Counter(
                "bluegreen_state_store_conflicts",
                "Conditional writes another replica's write beat (re-read and merged again); qdrant store only.",
                ["store"], registry=r,
            ),
            "errors": Counter(
                "bluegreen_state_store_errors", "State store reads or writes that failed (retried), by operation.",
                ["store", "operation"], registry=r,
            ),
        }
        self.route_state = Gauge(
            "bluegreen_route_state", "1 for the route's current state (active, rolled_back, preflight_failed, stepping).",
            ["route", "state"], registry=r,
        )
        self.failovers = Counter(
            "bluegreen_failovers", "Green reads that failed and were answered from blue.", ["route"], registry=r,
        )
        self.shadow_requests = Counter(
            "bluegreen_shadow_requests", "Sampled reads by what their shadow came to: compared, skipped, dropped, error.",
            ["route", "result"], registry=r,
        )
        self.shadow_overlap = Histogram(
            "bluegreen_shadow_overlap", "overlap@k of the two colours' answers to the same search (per sub-request).",
            ["route"], buckets=SCORE_BUCKETS, registry=r,
        )
        self.shadow_rbo = Histogram(
            "bluegreen_shadow_rbo", "Rank-biased overlap (p = 0.9, extrapolated) of the same pairs.",
            ["route"], buckets=SCORE_BUCKETS, registry=r,
        )
        self.shadow_latency_ratio = Histogram(
            "bluegreen_shadow_latency_ratio", "Green's upstream time / blue's for the same search, per compared pair.",
            ["route"], buckets=RATIO_BUCKETS, registry=r,
        )
        self.embed_duration = Histogram(
            "bluegreen_embed_duration_seconds", "Time of one call to an embedding model (one batch of texts).",
            ["embedder"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.embed_texts = Counter(
            "bluegreen_embed_texts", "Texts embedded by the model (cache hits not included).", ["embedder"], registry=r,
        )
        self.embed_errors = Counter(
            "bluegreen_embed_errors", "Failed calls to an embedder, by kind (timeout, connect, status, response, dimensions, model).",
            ["embedder", "kind"], registry=r,
        )
        self.embed_cache_hits = Counter(
            "bluegreen_embed_cache_hits", "Query texts answered from the embedder's cache.", ["embedder"], registry=r,
        )
        self.pinned = Counter(
            "bluegreen_pinned", "Requests sent to the one colour their raw vectors' length fits, whatever the split.",
            ["route", "color"], registry=r,
        )
        self._series: dict[tuple[str, str, str, str], RequestSeries] = {}
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)
        self._count_upstream_errors_from_zero(UNROUTED, NO_COLOUR, UNROUTED)

    def count_from_zero(self, routes: Mapping[str, Route], embedders: Iterable[str]) -> None:
        """Export the event counters of these routes and embedders at 0 (the ones already there keep
        their counts): at start and for each applied config. Known names only, so labels stay bounded."""
        for name, route in routes.items():
            for reason in ROLLBACK_REASONS:
                self.rollbacks.labels(name, reason)
            self.failovers.labels(name)
            self._count_upstream_errors_from_zero(name, BLUE, route.blue)
            self._count_upstream_errors_from_zero(name, GREEN, route.green)
        for embedder in embedders:
            for kind in EMBED_ERROR_KINDS:
                self.embed_errors.labels(embedder, kind)

    def _count_upstream_errors_from_zero(self, route: str, colour: str, collection: str) -> None:
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(route, colour, collection, kind)

    def series(self, route: str, colour: str, collection: str, operation: str) -> RequestSeries:
        key = (route, colour, collection, operation)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = RequestSeries(self, key)
        return found

    def forget_route(self, route: str, states: tuple[str, ...]) -> None:
        """Drop a removed route's gauges so dashboards do not show a stale split."""
        series = [(self.green_percent, (route,)), (self.configured_green_percent, (route,))]
        series += [(self.route_state, (route, state)) for state in states]
        for gauge, labels in series:
            try:
                gauge.remove(*labels)
            except KeyError:
                pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
