"""Rollout safety, I/O side: owns each route's effective split.

Feeds every routed read into the route's guard, judges it every `guard.interval`, runs the
preflight parity checks against the upstream, walks staged rollouts, applies operators'
rollbacks and resumes, and keeps all of it in a state file that survives restarts and is shared
by replicas (each re-reads it every second and adopts the routes another replica changed).
The decisions themselves are pure: `routing.guard`, `routing.rollout`, `routing.preflight`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Awaitable, Callable

from proxy.metrics import Metrics
from proxy.state import ProxyState, Snapshot
from proxy.upstream import UpstreamResponse
from routing.config import Preflight, Route
from routing.guard import RouteGuard
from routing.operations import READ_OPERATIONS, SEARCH_OPERATIONS
from routing.preflight import PreflightResult, evaluate_preflight
from routing.results import is_empty_result
from routing.rollout import STATES, Event, RouteRollout
from routing.table import quote_segment, threshold_for

log = logging.getLogger("bluegreen.safety")

TICK_SECONDS = 0.1  # how often the controller looks at clocks; guard intervals are configured in seconds
STATE_SYNC_SECONDS = 1.0  # how often the state file is re-read for other replicas' changes
STATE_FILE_VERSION = 1

# (method, path, body) -> (status, parsed JSON or None); raises UpstreamFailure when no answer came.
FetchJson = Callable[[str, str, bytes], Awaitable[tuple[int, dict | None]]]


def default_state_file(config_path: str) -> Path:
    path = Path(config_path)
    return path.with_name(f"{path.stem}.state.json")


async def run_preflight(fetch: FetchJson, route: Route, settings: Preflight | None = None) -> PreflightResult:
    """Ask the upstream about blue and green, then judge parity (pure)."""

    async def info(name: str) -> dict | None:
        status, document = await fetch("GET", f"/collections/{quote_segment(name)}", b"")
        return document.get("result") if status == 200 and document else None

    async def count(name: str) -> int | None:
        status, document = await fetch("POST", f"/collections/{quote_segment(name)}/points/count", b'{"exact":true}')
        if status != 200 or not document:
            return None
        return (document.get("result") or {}).get("count")

    blue_info, green_info, blue_count, green_count = await asyncio.gather(
        info(route.blue), info(route.green), count(route.blue), count(route.green)
    )
    return evaluate_preflight(settings or route.preflight or Preflight(), blue_info, green_info, blue_count, green_count)


class SafetyController:
    def __init__(
        self, state: ProxyState, metrics: Metrics, fetch: FetchJson, state_file: Path,
        clock: Callable[[], float] = time.time,
    ):
        self.state = state
        self.metrics = metrics
        self.fetch = fetch
        self.state_file = state_file
        self.clock = clock
        self.rollouts: dict[str, RouteRollout] = {}
        self._guards: dict[str, RouteGuard] = {}
        self._next_judgement: dict[str, float] = {}
        self._preflights: dict[str, asyncio.Task] = {}
        # What the state file said (to notice other replicas) and what we last synced of ours.
        self._file_seen: dict[str, dict] = {}
        self._local_synced: dict[str, dict] = {}
        self._unsaved: dict[str, dict] = {}  # queued for the writer
        self._writer: asyncio.Task | None = None
        self._next_sync = 0.0
        self._published: dict[str, tuple] = {}  # gauges are set only when what they show changes
        now = clock()
        saved = self._read_state_file()
        for name, route in state.snapshot.config.routes.items():
            self._add_route(name, route, saved.get(name), now)
        self._publish()

    # ------------------------------------------------------------ hot path

    def observe(self, route: str, colour: str, operation: str, response: UpstreamResponse | None, seconds: float) -> None:
        guard = self._guards.get(route)
        if guard is None or operation not in READ_OPERATIONS:
            return
        failed = response is None or response.status >= 500
        empty = None
        if operation in SEARCH_OPERATIONS and response is not None and 200 <= response.status < 300:
            empty = is_empty_result(operation, response.body, response.header(b"content-encoding"))
        guard.record(colour, seconds, failed, empty, self.clock())

    def observe_pair(self, route: str, overlaps: list[float], green_empty: bool | None, blue_empty: bool | None) -> None:
        """A shadow comparison (proxy.shadow): feeds the guard's overlap and paired empty rules."""
        guard = self._guards.get(route)
        if guard is not None:
            guard.record_pair(overlaps, green_empty, blue_empty, self.clock())

    # ------------------------------------------------------------ inputs

    def on_config_applied(self, old: Snapshot, new: Snapshot) -> None:
        now = self.clock()
        for name in set(old.config.routes) - set(new.config.routes):
            self.rollouts.pop(name, None)
            self._guards.pop(name, None)
            self._file_seen.pop(name, None)
            self._local_synced.pop(name, None)
            self.metrics.forget_route(name, STATES)
            self._published.pop(name, None)
        for name, route in new.config.routes.items():
            rollout = self.rollouts.get(name)
            if rollout is None:
                self._add_route(name, route, self._file_seen.get(name), now)
                continue
            if (rollout.route.guard, rollout.route.shadowed) != (route.guard, route.shadowed):
                self._set_guard(name, route, now)
            self._log_event(name, rollout.apply_config(route, now))
        self._publish()
        self._save_if_changed()

    def rollback(self, name: str, reason: str) -> None:
        self._log_event(name, self.rollouts[name].rollback(reason, self.clock()))
        self._publish()
        self._save_if_changed()

    def resume(self, name: str) -> None:
        self._log_event(name, self.rollouts[name].resume(self.clock()))
        self._publish()
        self._save_if_changed()

    async def run(self, stop: asyncio.Event) -> None:
        """Clocks: judgements, staged steps, preflight rechecks and the state file, until `stop`."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a bug here must not stop the proxy from serving
                log.exception("rollout safety step failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=TICK_SECONDS)
            except asyncio.TimeoutError:
                pass
        for task in self._preflights.values():
            task.cancel()

    def step(self) -> None:
        now = self.clock()
        if now >= self._next_sync:
            self._next_sync = now + STATE_SYNC_SECONDS
            self._adopt_other_replicas(now)
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
            if rollout.preflight_due(now) and name not in self._preflights:
                self._preflights[name] = asyncio.get_running_loop().create_task(self._preflight(name, rollout))
        if clocked:
            self._publish()
            self._save_if_changed()

    async def _preflight(self, name: str, rollout: RouteRollout) -> None:
        try:
            result = await run_preflight(self.fetch, rollout.route)
        except Exception as exc:  # noqa: BLE001 - an unreachable upstream is a failed check, retried later
            log.warning("preflight of route %s could not ask the upstream: %s", name, exc)
            result = evaluate_preflight(rollout.route.preflight or Preflight(), None, None, None, None)
        finally:
            self._preflights.pop(name, None)
        if self.rollouts.get(name) is rollout:
            self._log_event(name, rollout.on_preflight(result, self.clock()))
            self._publish()
            self._save_if_changed()

    # ------------------------------------------------------------ what admin shows

    def route_status(self, name: str) -> dict:
        route = self.state.snapshot.config.routes[name]
        rollout = self.rollouts[name]
        status = rollout.status(self.clock())
        return {
            "blue": route.blue,
            "green": route.green,
            "green_percent": route.green_percent,
            "effective_green_percent": rollout.effective_green_percent,
            **{key: value for key, value in status.items() if key not in ("configured_green_percent", "effective_green_percent")},
        }

    def readiness(self) -> dict:
        return {
            name: {"state": rollout.state, "reason": rollout.reason, "detail": rollout.detail}
            for name, rollout in self.rollouts.items()
        }

    # ------------------------------------------------------------ internals

    def _add_route(self, name: str, route: Route, saved: dict | None, now: float) -> None:
        rollout = RouteRollout(route, now)
        if saved is not None:
            try:
                rollout = RouteRollout.from_dict(route, saved, now)
                self._file_seen[name] = saved
            except ValueError as exc:
                log.error("route %s: ignoring its saved state in %s: %s", name, self.state_file, exc)
        self.rollouts[name] = rollout
        self._local_synced[name] = rollout.to_dict() if saved is not None else {}
        self._set_guard(name, route, now)

    def _set_guard(self, name: str, route: Route, now: float) -> None:
        if route.guard is None:
            self._guards.pop(name, None)
            return
        self._guards[name] = RouteGuard(route.guard, shadowed=route.shadowed)
        self._next_judgement[name] = now + route.guard.interval

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

    def _publish(self) -> None:
        """Swap in the effective thresholds (one new dict: requests in flight keep theirs) and gauges."""
        thresholds = {}
        for name, rollout in self.rollouts.items():
            percent = rollout.effective_green_percent
            thresholds[name] = threshold_for(percent)
            shown = (percent, rollout.route.green_percent, rollout.state)
            if self._published.get(name) == shown:
                continue
            self._published[name] = shown
            self.metrics.green_percent.labels(name).set(percent)
            self.metrics.configured_green_percent.labels(name).set(rollout.route.green_percent)
            for state in STATES:
                self.metrics.route_state.labels(name, state).set(1 if state == rollout.state else 0)
        if thresholds != self.state.thresholds:
            self.state.thresholds = thresholds

    # ------------------------------------------------------------ state file

    def _read_state_file(self) -> dict[str, dict]:
        try:
            document = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("cannot read state file %s: %s", self.state_file, exc)
            return {}
        routes = document.get("routes") if isinstance(document, dict) else None
        return routes if isinstance(routes, dict) else {}

    def _adopt_other_replicas(self, now: float) -> None:
        """A route whose saved record changed since we last saw it was changed by another replica."""
        if self._writer is not None and not self._writer.done():
            return  # the file is between two of our own versions: look again next time
        for name, record in self._read_state_file().items():
            rollout = self.rollouts.get(name)
            if rollout is None or record == self._file_seen.get(name):
                continue
            self._file_seen[name] = record
            if record == rollout.to_dict():
                continue
            try:
                adopted = RouteRollout.from_dict(rollout.route, record, now)
            except ValueError as exc:
                log.error("route %s: ignoring another replica's state: %s", name, exc)
                continue
            adopted.inherit_preflight(rollout, now)
            self.rollouts[name] = adopted
            self._local_synced[name] = adopted.to_dict()
            log.info("route %s: adopted the state another replica saved (%s)", name, adopted.state)
        self._publish()

    def _save_if_changed(self) -> None:
        """Queue what changed for the writer: the file's I/O (read, write, rename: about 1 ms here)
        stays off the event loop, where it would stall requests on every reload."""
        changed = {
            name: record for name, rollout in self.rollouts.items()
            if (record := rollout.to_dict()) != self._local_synced.get(name)
        }
        if not changed:
            return
        self._local_synced.update(changed)
        self._unsaved.update(changed)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_unsaved())

    def owns_file(self, path: str) -> bool:
        """The state file or one of its temp files (their changes are not config changes)."""
        name = Path(path).name
        return name == self.state_file.name or name.startswith(f".{self.state_file.name}.")

    async def flush(self) -> None:
        """Return once everything queued is in the state file (operators' commands, shutdown)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_unsaved(self) -> None:
        """The one writer: batches of records, oldest first, each merged into the file in a thread."""
        while self._unsaved:
            batch, self._unsaved = self._unsaved, {}
            if await asyncio.to_thread(self._write_state_file, batch, set(self.rollouts)):
                self._file_seen.update(batch)
                continue
            for name, record in batch.items():  # not saved: the next change of anything retries it
                if self._local_synced.get(name) == record:
                    self._local_synced.pop(name)

    def _write_state_file(self, changed: dict[str, dict], live_routes: set[str]) -> bool:
        """Merge our changed records into the file (other replicas' routes kept); atomic rename."""
        routes = {name: record for name, record in self._read_state_file().items() if name in live_routes}
        routes.update(changed)
        document = {"version": STATE_FILE_VERSION, "updated_at": self.clock(), "routes": routes}
        temp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        try:
            temp.write_text(json.dumps(document, indent=1, sort_keys=True))
            os.replace(temp, self.state_file)
        except OSError as exc:
            log.error("cannot write state file %s (rollout state will not survive a restart): %s", self.state_file, exc)
            return False
        return True
