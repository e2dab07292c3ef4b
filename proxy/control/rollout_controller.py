"""The rollout controller: owns each route's effective split and publishes it into the live snapshot.

Feeds the guards (every routed read), runs the clocks (judgements, staged steps, preflight rechecks,
the state store sync) and takes the operators' rollbacks and resumes. Each route's decisions are pure
(`routing.rollout`, `routing.guard`); the other jobs live beside it: preflight I/O in
`proxy.control.preflight`, the state store shared by replicas in `proxy.control.rollout_store`, the gauges in
`proxy.control.gauges`, the admin views in `proxy.control.admin`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Callable

from proxy.control.gauges import RouteGauges
from proxy.dataplane.live import LiveConfig, Snapshot
from proxy.metrics import Metrics
from proxy.control.preflight import FetchJson, PreflightChecks
from proxy.control.rollout_store import SharedRollouts
from proxy.control.state_store import Slot, StateStore
from proxy.dataplane.upstream import UpstreamResponse
from routing.config import Route
from routing.guard import RouteGuard
from routing.operations import READ_OPERATIONS, SEARCH_OPERATIONS
from routing.preflight import PreflightResult
from routing.results import is_empty_result
from routing.rollout import Event, RouteRollout
from routing.table import threshold_for

log = logging.getLogger("bluegreen.safety")

TICK_SECONDS = 0.1  # how often the controller looks at clocks; guard intervals are configured in seconds


class RolloutController:
    def __init__(
        self, live: LiveConfig, metrics: Metrics, fetch: FetchJson, store: StateStore,
        saved: dict[Slot, dict], clock: Callable[[], float] = time.time,
    ):
        """`saved`: the store's records read at start-up (`SharedRollouts.load`), taken as bases."""
        self.live = live
        self.metrics = metrics
        self.clock = clock
        self.rollouts: dict[str, RouteRollout] = {}
        self._guards: dict[str, RouteGuard] = {}
        self._next_judgement: dict[str, float] = {}
        self._next_sync = 0.0
        self.gauges = RouteGauges(metrics)
        self.preflights = PreflightChecks(fetch, self._on_preflight)
        self.shared = SharedRollouts(store, metrics, self._records, self._adopt)
        self.shared.bases.update(saved)
        now = clock()
        for name, route in live.snapshot.config.routes.items():
            self._add_route(name, route, saved, now)
        self._publish()

    @property
    def store(self) -> StateStore:
        return self.shared.store

    # ------------------------------------------------------------ feed the guard (hot path)

    def observe(self, route: str, colour: str, operation: str, response: UpstreamResponse | None, seconds: float) -> None:
        """Every routed upstream exchange: reads feed the route's guard window for their colour."""
        guard = self._guards.get(route)
        if guard is None or operation not in READ_OPERATIONS:
            return
        failed = response is None or response.status >= 500
        empty = None
        if operation in SEARCH_OPERATIONS and response is not None and 200 <= response.status < 300:
            empty = is_empty_result(operation, response.body, response.header(b"content-encoding"))
        guard.record(colour, seconds, failed, empty, self.clock())

    def observe_pair(self, route: str, overlaps: list[float], green_empty: bool | None, blue_empty: bool | None) -> None:
        """A shadow comparison (proxy.dataplane.shadow): feeds the guard's overlap and paired empty rules."""
        guard = self._guards.get(route)
        if guard is not None:
            guard.record_pair(overlaps, green_empty, blue_empty, self.clock())

    # ------------------------------------------------------------ inputs

    def apply_config(self, new: Snapshot) -> Snapshot:
        """A reload: adopt the new routes and publish `new` with the effective split, in one swap. The
        controller is the one writer of `live.snapshot`: the reloader hands every new config here."""
        published = self.live.snapshot = self._adopt_config(self.live.snapshot, new)
        return published

    def _adopt_config(self, old: Snapshot, new: Snapshot) -> Snapshot:
        """The new routes adopted; `new` as it must be published (effective split)."""
        now = self.clock()
        for name in set(old.config.routes) - set(new.config.routes):
            self.rollouts.pop(name, None)
            self._guards.pop(name, None)
            self._next_judgement.pop(name, None)
            self.gauges.forget(name)
        for name, route in new.config.routes.items():
            rollout = self.rollouts.get(name)
            if rollout is None:
                self._add_route(name, route, self.shared.bases, now)
                continue
            if (rollout.route.guard, rollout.route.shadowed) != (route.guard, route.shadowed):
                self._set_guard(name, route, now)
            self._log_event(name, rollout.apply_config(route, now))
        self.shared.save_changes()
        new.table.reserved = old.table.reserved  # the state store's collection, bound at start-up with the store
        return self._effective(new)

    def rollback(self, name: str, reason: str) -> None:
        self._log_event(name, self.rollouts[name].rollback(reason, self.clock()))
        self._changed()

    def resume(self, name: str) -> None:
        self._log_event(name, self.rollouts[name].resume(self.clock()))
        self._changed()

    async def sync(self) -> None:
        """Adopt what other replicas saved (before an operator's command decides on it)."""
        await self.shared.sync()

    async def persist(self, name: str) -> str | None:
        """Wait until the route's decisions are in the state store: None, or why they are not."""
        return await self.shared.persist(name)

    async def flush(self) -> None:
        await self.shared.flush()

    async def state_store_problem(self) -> str | None:
        """Why decisions cannot be kept now (the state store cannot be written), or None."""
        return await self.shared.probe()

    # ------------------------------------------------------------ the clock loop

    async def run(self, stop: asyncio.Event) -> None:
        """Clocks: judgements, staged steps, preflight rechecks and the state store, until `stop`."""
        while not stop.is_set():
            try:
                self.step()
                if self.clock() >= self._next_sync:
                    self._next_sync = self.clock() + self.live.snapshot.config.state.sync_interval
                    await self.shared.sync()
            except Exception:  # noqa: BLE001 - a bug here must not stop the proxy from serving
                log.exception("rollout safety step failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=TICK_SECONDS)
            except asyncio.TimeoutError:
                pass
        self.preflights.cancel_all()

    def step(self) -> None:
        now = self.clock()
        clocked = False
        for name, rollout in self.rollouts.items():
            route = rollout.route
            if route.guard is None and route.rollout is None and route.preflight is None:
                continue  # a plain split: nothing of it runs on a clock
            clocked = True
            guard = self._guards.get(name)
            if guard is not None and now >= self._next_judgement[name]:
                self._next_judgement[name] = now + guard.settings.interval
                self._log_event(name, rollout.on_judgement(guard.judge(now)))
            self._log_event(name, rollout.tick(now))
            if rollout.preflight_due(now):
                self.preflights.start(name, route)
        if clocked:
            self._changed()

    def _on_preflight(self, name: str, route: Route, result: PreflightResult) -> None:
        rollout = self.rollouts.get(name)
        if rollout is None or (rollout.route.blue, rollout.route.green) != (route.blue, route.green):
            return  # a check of collections the route no longer has
        self._log_event(name, rollout.on_preflight(result, self.clock()))
        self._changed()

    # ------------------------------------------------------------ internals

    def _add_route(self, name: str, route: Route, saved: dict, now: float) -> None:
        rollout = RouteRollout(route, now)
        record = saved.get((name, rollout.fingerprint))
        if record is not None:
            try:
                rollout = RouteRollout.from_dict(route, record, now)
            except ValueError as exc:
                log.error("route %s: ignoring its saved state in the %s: %s", name, self.store.describe(), exc)
        self.rollouts[name] = rollout
        self._set_guard(name, route, now)

    def _set_guard(self, name: str, route: Route, now: float) -> None:
        if route.guard is None:
            self._guards.pop(name, None)
            return
        self._guards[name] = RouteGuard(route.guard, shadowed=route.shadowed)
        self._next_judgement[name] = now + route.guard.interval

    def _records(self) -> dict[str, dict]:
        return {name: rollout.to_dict() for name, rollout in self.rollouts.items()}

    def _adopt(self, name: str, record: dict) -> None:
        """Another replica's decisions for this route (read, or kept by the merge of our save)."""
        previous = self.rollouts[name]
        try:
            adopted = RouteRollout.from_dict(previous.route, record, self.clock())
        except ValueError as exc:
            log.error("route %s: ignoring another replica's state: %s", name, exc)
            return
        adopted.inherit_preflight(previous, self.clock())
        self.rollouts[name] = adopted
        log.info("route %s: adopted the state another replica saved (%s)", name, adopted.state)
        self._publish()

    def _log_event(self, name: str, event: Event | None) -> None:
        if event is None:
            return
        figures = f" figures={json.dumps(event.figures, sort_keys=True)}" if event.figures else ""
        message = f"route {name}: {event.kind}" + (f" ({event.reason})" if event.reason else "")
        message += (f": {event.detail}" if event.detail else "") + figures
        if event.kind in ("rolled_back", "alert", "preflight_failed"):
            log.warning(message)
        else:
            log.info(message)
        if event.kind == "rolled_back":
            self.metrics.rollbacks.labels(name, event.reason or "manual").inc()

    def _changed(self) -> None:
        self._publish()
        self.shared.save_changes()

    def _publish(self) -> None:
        """Swap in a snapshot with the effective thresholds (requests in flight keep theirs)."""
        self.live.snapshot = self._effective(self.live.snapshot)

    def _effective(self, snapshot: Snapshot) -> Snapshot:
        """`snapshot` with each route's effective threshold and the vector sizes its preflight found
        different; the same object when nothing changed."""
        thresholds, vector_sizes = {}, {}
        for name, rollout in self.rollouts.items():
            percent = rollout.effective_green_percent
            thresholds[name] = threshold_for(percent)
            self.gauges.show(name, percent, rollout.route.green_percent, rollout.state)
            sizes = rollout.preflight.vector_sizes if rollout.preflight is not None else None
            if sizes is not None and sizes.differ:
                vector_sizes[name] = sizes
        published = snapshot if thresholds == snapshot.thresholds else snapshot.with_thresholds(thresholds)
        return published if vector_sizes == published.vector_sizes else published.with_vector_sizes(vector_sizes)
