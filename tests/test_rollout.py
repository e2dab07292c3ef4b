"""The per-route rollout state machine, driven by a fake clock."""
from __future__ import annotations

import json

import pytest

from routing.config import Route
from routing.guard import EMPTY_RESULTS, ERROR_RATE, LATENCY, NO_DATA, OK, VIOLATED, Judgement, RouteGuard, Trip
from routing.preflight import Check, PreflightResult
from routing.rollout import (
    ACTIVE, PREFLIGHT_FAILED, ROLLED_BACK, STEPPING, RouteRollout, config_fingerprint, walk_for,
)
from routing.table import BLUE, GREEN

GUARD = {"interval": 10, "window": 10, "min_requests": 100, "error_for": 30, "latency_for": 30, "empty_for": 30}
STAGED = {"steps": [10, 50, 100], "hold": 1800}
PREFLIGHT = {"recheck": 30}


def route(**fields) -> Route:
    return Route.model_validate({"blue": "docs", "green": "docs_v2", "green_percent": 10, **fields})


def judgement(at: float, verdict: str = OK, enough: bool = True, trip: str | None = None) -> Judgement:
    verdicts = {rule: (verdict if enough else NO_DATA) for rule in (ERROR_RATE, LATENCY, EMPTY_RESULTS)}
    figures = {"green_error_rate": 0.2}
    return Judgement(
        at=at, enough_data=enough, verdicts=verdicts,
        violated_since={rule: at - 30 for rule, v in verdicts.items() if v == VIOLATED},
        trip=Trip(trip, at, f"{trip} over the limit for 30s", figures) if trip else None, figures=figures,
    )


def healthy_until(rollout: RouteRollout, start: float, end: float) -> list:
    """Healthy judgements every 10 s over (start, end]; the events they caused."""
    events, now = [], start
    while now < end:
        now += 10
        event = rollout.on_judgement(judgement(now))
        if event:
            events.append(event)
    return events


PASSED = PreflightResult((Check("green_exists", True, "green collection found"),))
EMPTIED = PreflightResult((
    Check("green_exists", True, "green collection found"),
    Check("point_count", False, "green 0, blue 1000: drift 100.00% (over 1.00%)"),
))


# ---------------------------------------------------------------- plain routes and rollbacks


def test_a_plain_route_serves_its_configured_share():
    rollout = RouteRollout(route(green_percent=25), now=100)
    assert (rollout.state, rollout.effective_green_percent, rollout.reason, rollout.since) == (ACTIVE, 25, None, 100)
    assert rollout.seconds_to_next_step(100) is None
    assert not rollout.preflight_due(100)
    assert rollout.tick(10_000) is None
    assert rollout.effective_green_percent == 25


def test_manual_rollback_and_resume():
    rollout = RouteRollout(route(), now=0)
    event = rollout.rollback("bad answers for query X", now=50)
    assert (event.kind, event.reason, event.detail, event.at) == ("rolled_back", "manual", "bad answers for query X", 50)
    assert (rollout.state, rollout.effective_green_percent, rollout.reason, rollout.since) == (ROLLED_BACK, 0, "manual", 50)
    assert rollout.detail == "bad answers for query X"
    assert rollout.rollback("another reason", now=60) is None  # the first cause is kept
    assert rollout.detail == "bad answers for query X"
    assert rollout.tick(10_000) is None and rollout.state == ROLLED_BACK  # latched: time alone does not clear it

    assert rollout.resume(now=70).kind == "resumed"
    assert (rollout.state, rollout.effective_green_percent, rollout.since) == (ACTIVE, 10, 70)
    assert rollout.resume(now=80) is None


def test_a_guard_trip_rolls_back_with_its_figures():
    rollout = RouteRollout(route(guard=GUARD), now=0)
    assert rollout.on_judgement(judgement(10, VIOLATED)) is None
    event = rollout.on_judgement(judgement(40, VIOLATED, trip=ERROR_RATE))
    assert (event.kind, event.reason, event.at) == ("rolled_back", ERROR_RATE, 40)
    assert rollout.state == ROLLED_BACK and rollout.effective_green_percent == 0
    status = rollout.status(now=41)
    assert status["reason"] == ERROR_RATE and status["since"] == 40
    assert status["figures"] == {"green_error_rate": 0.2}
    assert status["detail"] == "error_rate over the limit for 30s"
    # Later judgements neither clear nor overwrite the latch.
    assert rollout.on_judgement(judgement(50, OK)) is None
    assert rollout.on_judgement(judgement(60, VIOLATED, trip=LATENCY)) is None
    assert rollout.reason == ERROR_RATE and rollout.since == 40


def test_alert_action_reports_without_changing_the_share():
    rollout = RouteRollout(route(guard={**GUARD, "action": "alert"}), now=0)
    event = rollout.on_judgement(judgement(40, VIOLATED, trip=LATENCY))
    assert (event.kind, event.reason) == ("alert", LATENCY)
    assert rollout.state == ACTIVE and rollout.effective_green_percent == 10
    assert rollout.status(now=41)["last_alert"]["reason"] == LATENCY


@pytest.mark.parametrize(
    "edit",
    [{"green_percent": 20}, {"salt": "reshuffle"}, {"rollout": {"steps": [10, 100], "hold": 60}}],
)
def test_editing_the_fingerprint_clears_a_rollback(edit):
    rollout = RouteRollout(route(guard=GUARD), now=0)
    rollout.on_judgement(judgement(40, VIOLATED, trip=EMPTY_RESULTS))
    event = rollout.apply_config(route(guard=GUARD, **edit), now=100)
    assert (event.kind, event.reason) == ("resumed", "config_changed")
    assert rollout.state in (ACTIVE, STEPPING) and rollout.effective_green_percent == edit.get("green_percent", 10)
    assert rollout.since == 100


@pytest.mark.parametrize(
    "edit",
    [{"guard": {**GUARD, "max_error_rate": 0.2}}, {"writes": "both"}, {"key": "header:x-session-id"}, {"failover": False}],
)
def test_other_edits_keep_a_rollback(edit):
    rollout = RouteRollout(route(guard=GUARD), now=0)
    rollout.rollback("investigating", now=10)
    assert rollout.apply_config(route(**{"guard": GUARD, **edit}), now=20) is None
    assert rollout.state == ROLLED_BACK and rollout.effective_green_percent == 0


def test_fingerprint_covers_exactly_green_percent_salt_and_rollout():
    base = route(rollout=STAGED)
    assert config_fingerprint(base) == config_fingerprint(route(rollout=STAGED, guard=GUARD, green="other"))
    assert config_fingerprint(base) != config_fingerprint(route(rollout={**STAGED, "hold": 60}))


# ---------------------------------------------------------------- staged walk


def test_walk_starts_at_green_percent():
    assert walk_for(route(green_percent=10, rollout=STAGED)) == (10, 50, 100)
    assert walk_for(route(green_percent=30, rollout=STAGED)) == (30, 50, 100)
    assert walk_for(route(green_percent=0, rollout=STAGED)) == (0, 10, 50, 100)
    assert walk_for(route(green_percent=100, rollout=STAGED)) == (100,)
    assert walk_for(route(green_percent=5)) == (5,)


def test_guarded_walk_advances_after_each_healthy_hold():
    rollout = RouteRollout(route(guard=GUARD, rollout=STAGED), now=0)
    assert (rollout.state, rollout.effective_green_percent) == (STEPPING, 10)
    assert rollout.seconds_to_next_step(600) == 1200
    events = healthy_until(rollout, 0, 1790)
    assert events == [] and rollout.effective_green_percent == 10
    [event] = healthy_until(rollout, 1790, 1800)
    assert (event.kind, event.at, event.detail) == ("stepped", 1800, "green 10% -> 50%")
    assert (rollout.state, rollout.effective_green_percent, rollout.step_started) == (STEPPING, 50, 1800)
    healthy_until(rollout, 1800, 3600)
    assert (rollout.state, rollout.effective_green_percent) == (ACTIVE, 100)
    assert rollout.seconds_to_next_step(3600) is None
    assert healthy_until(rollout, 3600, 9000) == [] and rollout.effective_green_percent == 100


@pytest.mark.parametrize("bad", [judgement(1000, enough=False), judgement(1000, VIOLATED)])
def test_a_bad_judgement_restarts_the_hold(bad):
    rollout = RouteRollout(route(guard=GUARD, rollout=STAGED), now=0)
    healthy_until(rollout, 0, 990)
    rollout.on_judgement(bad)
    assert rollout.hold_started == 1000
    assert rollout.seconds_to_next_step(1000) == 1800
    healthy_until(rollout, 1000, 2790)
    assert rollout.effective_green_percent == 10
    healthy_until(rollout, 2790, 2800)
    assert rollout.effective_green_percent == 50


def test_a_guarded_hold_needs_judgements_not_just_time():
    rollout = RouteRollout(route(guard=GUARD, rollout=STAGED), now=0)
    assert rollout.tick(5000) is None
    assert rollout.effective_green_percent == 10


def test_trip_during_the_walk_stops_it_and_resume_returns_to_the_step():
    rollout = RouteRollout(route(guard=GUARD, rollout=STAGED), now=0)
    healthy_until(rollout, 0, 2000)
    assert rollout.effective_green_percent == 50
    rollout.on_judgement(judgement(2010, VIOLATED, trip=LATENCY))
    assert (rollout.state, rollout.effective_green_percent, rollout.step_index) == (ROLLED_BACK, 0, 1)
    assert rollout.seconds_to_next_step(2010) is None
    healthy_until(rollout, 2010, 9000)  # no evidence moves a rolled-back walk
    assert rollout.effective_green_percent == 0

    rollout.resume(now=9000)
    assert (rollout.state, rollout.effective_green_percent, rollout.hold_started) == (STEPPING, 50, 9000)
    healthy_until(rollout, 9000, 10_790)
    assert rollout.effective_green_percent == 50
    healthy_until(rollout, 10_790, 10_800)
    assert rollout.effective_green_percent == 100


def test_unguarded_walk_holds_pure_time():
    rollout = RouteRollout(route(rollout=STAGED), now=0)
    assert rollout.tick(1799) is None
    assert rollout.tick(1800).detail == "green 10% -> 50%"
    assert rollout.tick(3599) is None
    assert rollout.tick(3600).kind == "stepped"
    assert (rollout.state, rollout.effective_green_percent) == (ACTIVE, 100)


def test_a_zero_percent_start_holds_pure_time_even_with_a_guard():
    rollout = RouteRollout(route(green_percent=0, guard=GUARD, rollout=STAGED), now=0)
    assert (rollout.state, rollout.effective_green_percent) == (STEPPING, 0)
    rollout.on_judgement(judgement(900, enough=False))  # no green traffic: never any evidence at 0 %
    assert rollout.hold_started == 0
    assert rollout.tick(1800).detail == "green 0% -> 10%"
    assert rollout.tick(3600) is None  # from 10 % on, the guard's evidence decides
    assert rollout.effective_green_percent == 10


def test_alerts_do_not_stop_the_walk_but_their_bad_judgements_restart_the_hold():
    rollout = RouteRollout(route(guard={**GUARD, "action": "alert"}, rollout=STAGED), now=0)
    healthy_until(rollout, 0, 1000)
    assert rollout.on_judgement(judgement(1010, VIOLATED, trip=ERROR_RATE)).kind == "alert"
    assert rollout.hold_started == 1010 and rollout.state == STEPPING


def test_editing_the_rollout_restarts_the_walk():
    rollout = RouteRollout(route(rollout=STAGED), now=0)
    rollout.tick(1800)
    assert rollout.effective_green_percent == 50
    rollout.apply_config(route(rollout={"steps": [20, 100], "hold": 600}), now=2000)
    assert (rollout.walk, rollout.effective_green_percent, rollout.step_started) == ((10, 20, 100), 10, 2000)


def test_adding_a_guard_restarts_the_hold():
    rollout = RouteRollout(route(rollout=STAGED), now=0)
    rollout.apply_config(route(rollout=STAGED, guard=GUARD), now=1000)
    assert rollout.hold_started == 1000 and rollout.step_index == 0


# ---------------------------------------------------------------- preflight gate


def test_preflight_gates_green_until_it_passes():
    rollout = RouteRollout(route(preflight=PREFLIGHT), now=0)
    assert (rollout.state, rollout.reason, rollout.effective_green_percent) == (PREFLIGHT_FAILED, "pending", 0)
    assert rollout.detail == "waiting for the first check of green"
    assert rollout.preflight_due(0)

    event = rollout.on_preflight(EMPTIED, now=1)
    assert (event.kind, event.reason) == ("preflight_failed", "point_count")
    assert (rollout.state, rollout.reason, rollout.effective_green_percent) == (PREFLIGHT_FAILED, "point_count", 0)
    assert rollout.detail == "point_count: green 0, blue 1000: drift 100.00% (over 1.00%)"
    assert not rollout.preflight_due(30) and rollout.preflight_due(31)
    assert rollout.on_preflight(EMPTIED, now=31) is None  # still failing: no new event

    assert rollout.on_preflight(PASSED, now=61).kind == "preflight_passed"
    assert (rollout.state, rollout.effective_green_percent, rollout.since) == (ACTIVE, 10, 61)
    assert rollout.status(61)["preflight"]["ok"] is True


def test_green_emptied_mid_rollout_loses_its_traffic_and_recovers():
    rollout = RouteRollout(route(preflight=PREFLIGHT, guard=GUARD, rollout=STAGED), now=0)
    rollout.on_preflight(PASSED, now=0)
    healthy_until(rollout, 0, 2000)
    assert rollout.effective_green_percent == 50
    rollout.on_preflight(EMPTIED, now=2010)
    assert (rollout.state, rollout.effective_green_percent, rollout.step_index) == (PREFLIGHT_FAILED, 0, 1)
    assert rollout.seconds_to_next_step(2010) is None
    healthy_until(rollout, 2010, 5000)  # the walk does not move while green is gated
    assert rollout.step_index == 1 and rollout.preflight_due(5000)

    rollout.on_preflight(PASSED, now=5000)
    assert (rollout.state, rollout.effective_green_percent, rollout.hold_started) == (STEPPING, 50, 5000)


def test_no_preflight_while_green_is_not_wanted():
    assert not RouteRollout(route(green_percent=0, preflight=PREFLIGHT), now=0).preflight_due(0)
    assert RouteRollout(route(green_percent=0, preflight=PREFLIGHT), now=0).state == ACTIVE
    rolled = RouteRollout(route(preflight=PREFLIGHT), now=0)
    rolled.on_preflight(PASSED, now=0)
    rolled.rollback("stop", now=1)
    assert not rolled.preflight_due(100) and rolled.state == ROLLED_BACK


def test_green_asked_again_whenever_its_share_leaves_zero():
    rollout = RouteRollout(route(preflight=PREFLIGHT), now=0)
    rollout.on_preflight(PASSED, now=0)
    rollout.rollback("stop", now=5)
    rollout.resume(now=10)
    assert (rollout.state, rollout.reason, rollout.effective_green_percent) == (PREFLIGHT_FAILED, "pending", 0)
    assert rollout.preflight_due(10)

    staged = RouteRollout(route(green_percent=0, preflight=PREFLIGHT, rollout=STAGED), now=0)
    staged.tick(1800)
    assert (staged.state, staged.reason, staged.effective_green_percent) == (PREFLIGHT_FAILED, "pending", 0)
    staged.on_preflight(PASSED, now=1801)
    assert (staged.state, staged.effective_green_percent, staged.hold_started) == (STEPPING, 10, 1801)

    from_zero = RouteRollout(route(green_percent=0, preflight=PREFLIGHT), now=0)
    from_zero.on_preflight(PASSED, now=0)
    from_zero.apply_config(route(green_percent=5, preflight=PREFLIGHT), now=50)
    assert from_zero.reason == "pending" and from_zero.effective_green_percent == 0


def test_config_edits_to_the_gate():
    rollout = RouteRollout(route(preflight=PREFLIGHT), now=0)
    rollout.on_preflight(PASSED, now=0)
    rollout.apply_config(route(preflight={"recheck": 300}), now=5)
    assert rollout.preflight_due(5) and rollout.effective_green_percent == 10  # re-checked, still serving
    rollout.on_preflight(PASSED, now=6)
    rollout.apply_config(route(preflight={"recheck": 300}, green="docs_v3"), now=7)
    assert (rollout.reason, rollout.effective_green_percent) == ("pending", 0)  # another collection
    rollout.apply_config(route(green="docs_v3"), now=8)
    assert (rollout.state, rollout.effective_green_percent) == (ACTIVE, 10)  # gate removed


# ---------------------------------------------------------------- state file


def roundtrip(rollout: RouteRollout) -> dict:
    return json.loads(json.dumps(rollout.to_dict()))


def test_state_round_trip_keeps_a_rollback_and_the_step():
    config = route(guard=GUARD, rollout=STAGED)
    rollout = RouteRollout(config, now=0)
    healthy_until(rollout, 0, 2000)
    rollout.on_judgement(judgement(2010, VIOLATED, trip=EMPTY_RESULTS))
    saved = roundtrip(rollout)
    assert saved == {
        "fingerprint": config_fingerprint(config),
        "step_index": 1,
        "step_started": 1800,
        "hold_started": 1800,
        "rolled_back": {
            "reason": EMPTY_RESULTS, "detail": "empty_results over the limit for 30s",
            "figures": {"green_error_rate": 0.2}, "since": 2010,
        },
    }
    restored = RouteRollout.from_dict(config, saved, now=5000)
    assert (restored.state, restored.reason, restored.since, restored.effective_green_percent) == (ROLLED_BACK, EMPTY_RESULTS, 2010, 0)
    assert restored.status(5000)["figures"] == {"green_error_rate": 0.2}
    restored.resume(now=5000)
    assert (restored.state, restored.effective_green_percent, restored.step_started) == (STEPPING, 50, 1800)


def test_restored_guarded_hold_restarts_and_unguarded_hold_continues():
    guarded = RouteRollout(route(guard=GUARD, rollout=STAGED), now=0)
    healthy_until(guarded, 0, 1000)
    restored = RouteRollout.from_dict(guarded.route, roundtrip(guarded), now=1500)
    assert restored.hold_started == 1500  # the downtime was not observed
    healthy_until(restored, 1500, 3290)
    assert restored.effective_green_percent == 10
    healthy_until(restored, 3290, 3300)
    assert restored.effective_green_percent == 50

    timed = RouteRollout(route(rollout=STAGED), now=0)
    restored = RouteRollout.from_dict(timed.route, roundtrip(timed), now=1500)
    assert restored.hold_started == 0
    assert restored.tick(1800).kind == "stepped"


def test_restore_after_a_fingerprint_edit_starts_afresh():
    rollout = RouteRollout(route(rollout=STAGED), now=0)
    rollout.tick(1800)
    rollout.rollback("stop", now=1900)
    restored = RouteRollout.from_dict(route(rollout=STAGED, green_percent=20), roundtrip(rollout), now=5000)
    assert (restored.state, restored.effective_green_percent, restored.step_index, restored.since) == (STEPPING, 20, 0, 5000)


@pytest.mark.parametrize(
    "corrupt",
    [
        {"step_index": 7},
        {"step_index": "1"},
        {"step_started": None},
        {"rolled_back": {"detail": "no reason"}},
        {"rolled_back": "yes"},
    ],
)
def test_restore_rejects_a_corrupt_record(corrupt):
    config = route(rollout=STAGED)
    saved = {**RouteRollout(config, now=0).to_dict(), **corrupt}
    with pytest.raises(ValueError):
        RouteRollout.from_dict(config, saved, now=10)
    with pytest.raises(ValueError):
        RouteRollout.from_dict(config, ["not", "a", "mapping"], now=10)


# ---------------------------------------------------------------- with the real guard


def test_guard_and_rollout_together():
    """10 % -> 50 % on healthy evidence, then green starts failing at 50 % and is rolled back."""
    config = route(guard={**GUARD, "min_requests": 15}, rollout={"steps": [10, 50, 100], "hold": 300})
    guard, rollout = RouteGuard(config.guard), RouteRollout(config, now=0)
    now, events = 0.0, []
    while now < 1000 and rollout.state != ROLLED_BACK:
        share = rollout.effective_green_percent / 100
        failing = now >= 500
        for i in range(200):  # 20 requests a second, split by the effective share
            colour = GREEN if (i % 10) < share * 10 else BLUE
            guard.record(colour, 0.01, failing and colour == GREEN, False, now + i * 0.05)
        now += 10
        event = rollout.on_judgement(guard.judge(now))
        if event:
            events.append((event.kind, event.at, event.reason))
    assert events == [("stepped", 300, None), ("rolled_back", 540, ERROR_RATE)]
    assert rollout.effective_green_percent == 0
    assert rollout.status(now)["figures"]["green_error_rate"] == 1.0
