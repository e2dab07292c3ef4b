"""The per-route gauges of the split: set only when what they show changes."""
from __future__ import annotations

from proxy.metrics import Metrics
from routing.rollout import STATES


class RouteGauges:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._shown: dict[str, tuple] = {}

    def show(self, name: str, effective_percent: float, configured_percent: float, state: str) -> None:
        shown = (effective_percent, configured_percent, state)
        if self._shown.get(name) == shown:
            return
        self._shown[name] = shown
        self.metrics.green_percent.labels(name).set(effective_percent)
        self.metrics.configured_green_percent.labels(name).set(configured_percent)
        for each in STATES:
            self.metrics.route_state.labels(name, each).set(1 if each == state else 0)

    def forget(self, name: str) -> None:
        self._shown.pop(name, None)
        self.metrics.forget_route(name, STATES)
