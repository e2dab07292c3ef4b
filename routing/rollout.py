"""Each route's rollout state machine: the share of reads green gets now, and why. Pure.

The I/O side keeps one `RouteRollout` per route and feeds it, always with the time as `now`
(the same clock as the guard's; wall-clock seconds, since times are saved in the state file):
- `apply_config(route, now)` on every config reload that keeps the route;
- `on_judgement(judgement)` with each `RouteGuard.judge(now)`, every `guard.interval`;
- `on_preflight(result, now)` with each `evaluate_preflight(...)`, run whenever `preflight_due(now)`;
- `rollback(text, now)` and `resume(now)` from the operator;
- `tick(now)` about once a second, for holds that count pure time;
and after each call reads `effective_green_percent` (and saves `to_dict()` when it changed).
Each input returns the `Event` it caused, or None, for logs and metrics.

States (the first that applies):
- `rolled_back`: a guard trip with `action: rollback`, or an operator; green gets 0 %. Latched: it
  lasts until an operator resumes, or the route's `green_percent`, `salt` or `rollout` changes (the
  config fingerprint), which also restarts a staged walk from its beginning.
- `preflight_failed`: the route has `preflight`, green is wanted (its share would be > 0) and its
  last check failed, or has not run since green became wanted (reason `pending`). Green gets 0 %.
  Not latched: the next passing check restores the share.
- `stepping`: a staged rollout not yet at its last step.
- `active`: otherwise.

Staged rollout: the walk is `green_percent` followed by every step above it. The hold clock starts
when a step starts and restarts whenever green's traffic (re)starts: after a failed or pending
preflight passes, on resume, and, with a guard, on restore from the state file (time the proxy was
down was not observed). A step advances:
- with a guard, at a healthy judgement (enough data, no rule violated) made at least `hold` after
  the hold clock started; every judgement that is not healthy restarts the hold clock at its time,
  so the hold is `hold` of unbroken healthy evidence;
- without a guard, or at a 0 % step (no green traffic to judge), at the first `tick` `hold` after.
A trip with `action: alert` is recorded as `last_alert` and returned; the share does not change.
Resume goes back to the step the route was on, with its hold clock restarted.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from routing.config import Route
from routing.guard import Judgement
from routing.preflight import PreflightResult

ACTIVE, ROLLED_BACK, PREFLIGHT_FAILED, STEPPING = "active", "rolled_back", "preflight_failed", "stepping"
STATES = (ACTIVE, ROLLED_BACK, PREFLIGHT_FAILED, STEPPING)
MANUAL = "manual"
PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # rolled_back | alert | resumed | stepped | preflight_failed | preflight_passed
    at: float
    reason: str | None = None  # rolled_back, alert: error_rate | latency | empty_results | manual
    detail: str | None = None
    figures: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def config_fingerprint(route: Route) -> str:
    """What an operator edits to start a rollout afresh: green_percent, salt and rollout."""
    material = {
        "green_percent": route.green_percent,
        "salt": route.salt,
        "rollout": route.rollout.model_dump() if route.rollout else None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def walk_for(route: Route) -> tuple[float, ...]:
    if route.rollout is None:
        return (route.green_percent,)
    return (route.green_percent, *(step for step in route.rollout.steps if step > route.green_percent))


class RouteRollout:
    def __init__(self, route: Route, now: float):
        self.route = route
        self.fingerprint = config_fingerprint(route)
        self.latch: dict[str, Any] | None = None  # reason, detail, figures, since
        self.preflight: PreflightResult | None = None  # None: not checked since green became wanted
        self.preflight_checked_at: float | None = None
        self.last_alert: Event | None = None
        self._start_walk(now)
        self._green_wanted = False
        self._state, self._since = ACTIVE, now
        self._settle(now)

    # ------------------------------------------------------------ what the proxy reads

    @property
    def effective_green_percent(self) -> float:
        return 0.0 if self._gated() else self._wanted_percent()

    @property
    def state(self) -> str:
        return self._state

    @property
    def since(self) -> float:
        return self.latch["since"] if self.latch else self._since

    @property
    def reason(self) -> str | None:
        """rolled_back: error_rate | latency | empty_results | manual; preflight_failed: the failed
        checks' names, comma-separated, or `pending`; else None."""
        if self.latch:
            return self.latch["reason"]
        if self._state == PREFLIGHT_FAILED:
            return PENDING if self.preflight is None else ",".join(check.name for check in self.preflight.failed)
        return None

    @property
    def detail(self) -> str | None:
        if self.latch:
            return self.latch["detail"]
        if self._state == PREFLIGHT_FAILED:
            return "waiting for the first check of green" if self.preflight is None else self.preflight.summary
        return None

    def preflight_due(self, now: float) -> bool:
        """Whether to check green now: it has a preflight, is wanted, and was not checked within `recheck`."""
        if self.route.preflight is None or self._wanted_percent() == 0:
            return False
        return self.preflight_checked_at is None or now - self.preflight_checked_at >= self.route.preflight.recheck

    def seconds_to_next_step(self, now: float) -> float | None:
        """None when the walk is not moving (not stepping, rolled back, preflight failed)."""
        if self._state != STEPPING:
            return None
        return max(0.0, self.hold_started + self.route.rollout.hold - now)

    def status(self, now: float) -> dict:
        """JSON-able, for /admin/routes, /readyz and `status`."""
        step = None
        if self.route.rollout is not None:
            step = {
                "index": self.step_index,
                "percent": self.walk[self.step_index],
                "walk": list(self.walk),
                "started": self.step_started,
                "hold_started": self.hold_started,
                "next_in_s": self.seconds_to_next_step(now),
            }
        preflight = None
        if self.route.preflight is not None:
            preflight = {"checked_at": self.preflight_checked_at, **(self.preflight.to_dict() if self.preflight else {"ok": None})}
        return {
            "state": self._state,
            "reason": self.reason,
            "detail": self.detail,
            "since": self.since,
            "configured_green_percent": self.route.green_percent,
            "effective_green_percent": self.effective_green_percent,
            "figures": self.latch["figures"] if self.latch else None,
            "step": step,
            "preflight": preflight,
            "last_alert": self.last_alert.to_dict() if self.last_alert else None,
        }

    # ------------------------------------------------------------ inputs

    def apply_config(self, route: Route, now: float) -> Event | None:
        """A reload that keeps this route. A new fingerprint clears a rollback and restarts the walk."""
        old, self.route = self.route, route
        event = None
        fingerprint = config_fingerprint(route)
        if fingerprint != self.fingerprint:
            self.fingerprint = fingerprint
            if self.latch:
                event = Event("resumed", now, "config_changed", "green_percent, salt or rollout changed in the config")
            self.latch = None
            self._start_walk(now)
        elif old.guard != route.guard:
            self.hold_started = now  # the evidence the hold needs changed
        if (old.blue, old.green) != (route.blue, route.green):
            self.preflight = self.preflight_checked_at = None  # a result about another collection
        elif old.preflight != route.preflight:
            self.preflight_checked_at = None  # check again now, under the new settings
        self._settle(now)
        return event

    def on_judgement(self, judgement: Judgement) -> Event | None:
        now = judgement.at
        if self.route.guard is None or self.latch:
            return None
        event = None
        trip = judgement.trip
        if trip is not None:
            if self.route.guard.action == "rollback":
                return self._roll_back(trip.reason, trip.detail, trip.figures, now)
            event = self.last_alert = Event("alert", now, trip.reason, trip.detail, trip.figures)
        if not self._holds_on_evidence():
            return event
        if not judgement.healthy:
            self.hold_started = now
            return event
        return self._advance_if_held(now) or event

    def on_preflight(self, result: PreflightResult, now: float) -> Event | None:
        was_gated, previous = self._gated(), self.preflight
        self.preflight, self.preflight_checked_at = result, now
        event = None
        if result.ok and (previous is None or not previous.ok):
            event = Event("preflight_passed", now, detail=result.summary)
        elif not result.ok and (previous is None or previous.ok):
            event = Event("preflight_failed", now, ",".join(check.name for check in result.failed), result.summary)
        if was_gated and not self._gated():
            self.hold_started = now  # green's traffic starts now
        self._settle(now)
        return event

    def rollback(self, text: str, now: float) -> Event | None:
        """Operator rollback; None when already rolled back (the first cause is kept)."""
        if self.latch:
            return None
        return self._roll_back(MANUAL, text, None, now)

    def resume(self, now: float) -> Event | None:
        """Clear a rollback: back to the step it was on, hold clock restarted; None when not rolled back."""
        if not self.latch:
            return None
        self.latch = None
        self.hold_started = now
        self._settle(now)
        return Event("resumed", now, MANUAL)

    def inherit_preflight(self, previous: "RouteRollout", now: float) -> None:
        """Keep the last check of the same collections when this record replaces `previous`
        (another replica's saved state): green need not go dark until the next recheck."""
        if (previous.route.blue, previous.route.green) == (self.route.blue, self.route.green):
            self.preflight, self.preflight_checked_at = previous.preflight, previous.preflight_checked_at
            self._green_wanted = previous._green_wanted
            self._settle(now)

    def tick(self, now: float) -> Event | None:
        if self._holds_on_evidence():
            return None
        return self._advance_if_held(now)

    # ------------------------------------------------------------ state file

    def to_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "step_index": self.step_index,
            "step_started": self.step_started,
            "hold_started": self.hold_started,
            "rolled_back": self.latch,
        }

    @classmethod
    def from_dict(cls, route: Route, data: dict, now: float) -> "RouteRollout":
        """Restore a saved route; a fingerprint that no longer matches the config starts afresh.

        Raises ValueError for a record that is not one `to_dict` writes."""
        rollout = cls(route, now)
        if not isinstance(data, dict):
            raise ValueError("a route's saved state must be a mapping")
        if data.get("fingerprint") != rollout.fingerprint:
            return rollout
        step_index, latch = data.get("step_index"), data.get("rolled_back")
        if not isinstance(step_index, int) or not 0 <= step_index < len(rollout.walk):
            raise ValueError(f"step_index: {step_index!r} is not a step of {list(rollout.walk)}")
        for key in ("step_started", "hold_started"):
            if not isinstance(data.get(key), (int, float)):
                raise ValueError(f"{key}: must be a time in seconds")
        if latch is not None and not (
            isinstance(latch, dict) and isinstance(latch.get("reason"), str)
            and isinstance(latch.get("since"), (int, float))
        ):
            raise ValueError("rolled_back: must be null or a mapping with reason and since")
        rollout.step_index = step_index
        rollout.step_started = float(data["step_started"])
        rollout.hold_started = now if rollout._holds_on_evidence() else float(data["hold_started"])
        if latch is not None:
            rollout.latch = {"reason": latch["reason"], "detail": latch.get("detail"),
                             "figures": latch.get("figures"), "since": float(latch["since"])}
        rollout._settle(now)
        return rollout

    # ------------------------------------------------------------ internals

    def _start_walk(self, now: float) -> None:
        self.walk = walk_for(self.route)
        self.step_index = 0
        self.step_started = self.hold_started = now

    def _wanted_percent(self) -> float:
        """The share green would get if its preflight passed."""
        return 0.0 if self.latch else self.walk[self.step_index]

    def _gated(self) -> bool:
        if self.route.preflight is None or self._wanted_percent() == 0:
            return False
        return self.preflight is None or not self.preflight.ok

    def _holds_on_evidence(self) -> bool:
        return self.route.guard is not None and self.walk[self.step_index] > 0

    def _advance_if_held(self, now: float) -> Event | None:
        if self._state != STEPPING or now - self.hold_started < self.route.rollout.hold:
            return None
        before = self.walk[self.step_index]
        self.step_index += 1
        self.step_started = self.hold_started = now
        self._settle(now)
        return Event("stepped", now, detail=f"green {before:g}% -> {self.walk[self.step_index]:g}%")

    def _roll_back(self, reason: str, detail: str | None, figures: dict | None, now: float) -> Event:
        self.latch = {"reason": reason, "detail": detail, "figures": figures, "since": now}
        self._settle(now)
        return Event("rolled_back", now, reason, detail, figures)

    def _settle(self, now: float) -> None:
        """After every input: a fresh preflight before green gets reads again, and the state's `since`."""
        wanted = self._wanted_percent() > 0
        if wanted and not self._green_wanted and self.route.preflight is not None:
            self.preflight = self.preflight_checked_at = None
        self._green_wanted = wanted
        if self.latch:
            state = ROLLED_BACK
        elif self._gated():
            state = PREFLIGHT_FAILED
        elif self.step_index < len(self.walk) - 1:
            state = STEPPING
        else:
            state = ACTIVE
        if state != self._state:
            self._state, self._since = state, now
