"""Rollout safety, I/O side: owns each route's effective split (interim: configured split + manual latch)."""
from __future__ import annotations

import logging
import time

from proxy.metrics import Metrics
from proxy.state import ProxyState, Snapshot
from routing.table import threshold_for

log = logging.getLogger("bluegreen.safety")


class SafetyController:
    def __init__(self, state: ProxyState, metrics: Metrics):
        self.state = state
        self.metrics = metrics
        self._rolled_back: dict[str, tuple[str, float]] = {}
        self._publish()

    def observe(self, route, colour, operation, status, seconds, body) -> None:
        return None

    def on_config_applied(self, old: Snapshot, new: Snapshot) -> None:
        for name in set(old.table.routes) - set(new.table.routes):
            self.metrics.forget_route(name)
        self._publish()

    def rollback(self, route: str, reason: str) -> None:
        self._rolled_back[route] = (reason, time.time())
        log.warning("route %s rolled back: %s", route, reason)
        self._publish()

    def resume(self, route: str) -> None:
        self._rolled_back.pop(route, None)
        self._publish()

    def route_status(self, name: str) -> dict:
        route = self.state.snapshot.table.routes[name]
        latch = self._rolled_back.get(name)
        return {
            "blue": route.blue,
            "green": route.green,
            "green_percent": route.settings.green_percent,
            "effective_green_percent": self.state.thresholds.get(name, 0) / 100,
            "state": "rolled_back" if latch else "active",
            "reason": latch[0] if latch else None,
            "since": latch[1] if latch else None,
        }

    def readiness(self) -> dict:
        return {name: {"state": self.route_status(name)["state"]} for name in self.state.snapshot.table.routes}

    def _publish(self) -> None:
        thresholds = {}
        for name, route in self.state.snapshot.table.routes.items():
            thresholds[name] = 0 if name in self._rolled_back else threshold_for(route.settings.green_percent)
            self.metrics.green_percent.labels(name).set(thresholds[name] / 100)
            self.metrics.configured_green_percent.labels(name).set(route.settings.green_percent)
        self.state.thresholds = thresholds
