"""RouteGauges: the split's gauges as Prometheus reads them, set on change, dropped with the route."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.control.gauges import RouteGauges
from proxy.metrics import Metrics
from routing.rollout import STATES


def _samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name in ("bluegreen_green_percent", "bluegreen_configured_green_percent", "bluegreen_route_state"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_show_sets_the_effective_and_configured_share_and_one_state():
    metrics = Metrics()
    RouteGauges(metrics).show("docs", 5.0, 20.0, "stepping")
    samples = _samples(metrics)
    assert samples[("bluegreen_green_percent", (("route", "docs"),))] == 5.0
    assert samples[("bluegreen_configured_green_percent", (("route", "docs"),))] == 20.0
    states = {dict(labels)["state"]: value for (name, labels), value in samples.items() if name == "bluegreen_route_state"}
    assert states == {state: (1.0 if state == "stepping" else 0.0) for state in STATES}


def test_a_changed_state_moves_the_one():
    metrics = Metrics()
    gauges = RouteGauges(metrics)
    gauges.show("docs", 20.0, 20.0, "active")
    gauges.show("docs", 0.0, 20.0, "rolled_back")
    samples = _samples(metrics)
    assert samples[("bluegreen_green_percent", (("route", "docs"),))] == 0.0
    assert samples[("bluegreen_route_state", (("route", "docs"), ("state", "rolled_back")))] == 1.0
    assert samples[("bluegreen_route_state", (("route", "docs"), ("state", "active")))] == 0.0


def test_an_unchanged_show_writes_nothing():
    """Set only on change: a value written behind the gauges' back (here, by hand) is not rewritten
    by a show of what they last showed."""
    metrics = Metrics()
    gauges = RouteGauges(metrics)
    gauges.show("docs", 10.0, 10.0, "active")
    metrics.green_percent.labels("docs").set(99.0)
    gauges.show("docs", 10.0, 10.0, "active")
    assert _samples(metrics)[("bluegreen_green_percent", (("route", "docs"),))] == 99.0


def test_forget_drops_the_route_and_a_later_show_sets_it_again():
    metrics = Metrics()
    gauges = RouteGauges(metrics)
    gauges.show("docs", 10.0, 10.0, "active")
    gauges.show("faq", 50.0, 50.0, "active")
    gauges.forget("docs")
    assert not any(dict(labels).get("route") == "docs" for _, labels in _samples(metrics))
    assert _samples(metrics)[("bluegreen_green_percent", (("route", "faq"),))] == 50.0
    gauges.show("docs", 10.0, 10.0, "active")  # the same values as before it was forgotten: shown again
    assert _samples(metrics)[("bluegreen_green_percent", (("route", "docs"),))] == 10.0
