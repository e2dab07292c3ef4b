"""proxy.control.rollout_controller in process, on a clock the test turns: the guard's evidence, its
judgement and the staged walk, each published as a new snapshot and kept in the state store."""
from __future__ import annotations

import asyncio
import json

from proxy.control.rollout_controller import RolloutController
from proxy.control.rollout_store import FileStateStore, StateFile
from proxy.dataplane.live import LiveConfig
from proxy.dataplane.upstream import UpstreamResponse
from proxy.metrics import Metrics
from routing.config import parse_config

OK_HITS = UpstreamResponse(200, [], b'{"result":{"points":[{"id":1,"score":0.9}]},"status":"ok"}')
FAILED = UpstreamResponse(500, [], b'{"status":{"error":"boom"}}')
GUARD = "{interval: 1s, window: 10s, min_requests: 10, max_error_rate: 0.1, error_for: 1s, latency_for: 1h, empty_for: 1h}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def no_upstream(method: str, path: str, body: bytes):
    raise AssertionError("no preflight here: the upstream is never asked")


def controller(tmp_path, route: str, clock: Clock) -> tuple[RolloutController, Metrics]:
    config = parse_config(f"routes:\n  docs: {route}\n", environ={})
    live = LiveConfig.initial(config, "hash", str(tmp_path / "bluegreen.yaml"))
    metrics = Metrics()
    store = FileStateStore(StateFile(tmp_path / "state.json"))
    return RolloutController(live, metrics, no_upstream, store, {}, clock=clock), metrics


def traffic(safety: RolloutController, green: UpstreamResponse, count: int = 20) -> None:
    for _ in range(count):
        safety.observe("docs", "green", "query", green, 0.002)
        safety.observe("docs", "blue", "query", OK_HITS, 0.002)


def test_green_errors_trip_the_guard_which_publishes_the_rollback_and_keeps_it(tmp_path):
    async def scenario():
        clock = Clock()
        safety, metrics = controller(tmp_path, f"{{blue: a, green: b, green_percent: 50, guard: {GUARD}}}", clock)
        held = safety.live.snapshot
        traffic(safety, FAILED)
        for _ in range(3):  # judged each interval: over max_error_rate for error_for (1 s), then rolled back
            clock.now += 1
            safety.step()
        await safety.flush()
        return safety, metrics, held

    safety, metrics, held = asyncio.run(scenario())
    assert held.thresholds["docs"] == 5000  # what a request in flight holds is never changed
    assert safety.live.snapshot.thresholds["docs"] == 0
    status = safety.rollouts["docs"].status(safety.clock())
    assert status["state"] == "rolled_back" and status["reason"] == "error_rate"
    assert metrics.registry.get_sample_value("bluegreen_rollbacks_total", {"route": "docs", "reason": "error_rate"}) == 1
    saved = json.loads((tmp_path / "state.json").read_text())
    assert "error_rate" in json.dumps(saved)


def test_healthy_green_keeps_its_share(tmp_path):
    async def scenario():
        clock = Clock()
        safety, _ = controller(tmp_path, f"{{blue: a, green: b, green_percent: 50, guard: {GUARD}}}", clock)
        for _ in range(3):
            traffic(safety, OK_HITS)
            clock.now += 1
            safety.step()
        await safety.flush()
        return safety, clock

    safety, clock = asyncio.run(scenario())
    assert safety.live.snapshot.thresholds["docs"] == 5000
    assert safety.rollouts["docs"].status(clock())["state"] == "active"


def test_the_staged_walk_steps_only_on_healthy_evidence_after_each_hold(tmp_path):
    async def scenario():
        clock = Clock()
        started = clock.now
        route = f"{{blue: a, green: b, green_percent: 10, guard: {GUARD}, rollout: {{steps: [10, 50, 100], hold: 60s}}}}"
        safety, _ = controller(tmp_path, route, clock)
        clock.now += 61
        safety.step()
        without_evidence = safety.live.snapshot.thresholds["docs"]
        steps = []  # (seconds since start, threshold) at each change
        for _ in range(4 * 61):  # healthy traffic, judged every second
            traffic(safety, OK_HITS, count=2)
            clock.now += 1
            before = safety.live.snapshot.thresholds["docs"]
            safety.step()
            if safety.live.snapshot.thresholds["docs"] != before:
                steps.append((clock.now - started, safety.live.snapshot.thresholds["docs"]))
        await safety.flush()
        return safety, clock, without_evidence, steps

    safety, clock, without_evidence, steps = asyncio.run(scenario())
    assert without_evidence == 1000, "a hold with no evidence is no reason to step"
    assert [threshold for _, threshold in steps] == [5000, 10000]
    assert steps[1][0] - steps[0][0] >= 60, steps  # each step holds for `hold` before the next
    assert safety.rollouts["docs"].status(clock())["step"]["index"] == 2
