"""One snapshot per request: config, route table and the effective split travel together, and the
rollout controller publishes a new snapshot rather than changing what a request holds."""
from __future__ import annotations

import asyncio

from proxy.dataplane.live import LiveConfig, Snapshot
from proxy.metrics import Metrics
from proxy.control.rollout_controller import RolloutController
from proxy.control.rollout_store import FileStateStore, StateFile
from routing.config import parse_config


async def no_upstream(method: str, path: str, body: bytes):
    raise AssertionError("a plain split never asks the upstream")


def controller(tmp_path, percent: float = 40) -> RolloutController:
    config = parse_config(f"routes:\n  docs: {{blue: a, green: b, green_percent: {percent}}}\n  kb: {{blue: c, green: d}}\n", environ={})
    live = LiveConfig.initial(config, "hash-1", str(tmp_path / "bluegreen.yaml"))
    return RolloutController(live, Metrics(), no_upstream, FileStateStore(StateFile(tmp_path / "state.json")), {})


def test_a_rollback_publishes_a_new_snapshot_and_leaves_the_held_one_alone(tmp_path):
    async def scenario() -> None:
        safety = controller(tmp_path)
        held = safety.live.snapshot
        assert held.thresholds == {"docs": 4000, "kb": 0}
        safety.rollback("docs", "test")
        published = safety.live.snapshot
        assert published is not held and published.thresholds["docs"] == 0
        assert held.thresholds["docs"] == 4000  # a request in flight finishes on what it read
        assert (published.generation, published.table, published.config) == (held.generation, held.table, held.config)
        await safety.flush()

    asyncio.run(scenario())


def test_a_reload_publishes_the_effective_split_in_the_same_swap(tmp_path):
    async def scenario() -> None:
        safety = controller(tmp_path)
        safety.rollback("docs", "test")
        old = safety.live.snapshot
        kb_raised = parse_config(
            "routes:\n  docs: {blue: a, green: b, green_percent: 40}\n  kb: {blue: c, green: d, green_percent: 5}\n", environ={})
        new = safety.apply_config(Snapshot.of(kb_raised, 2, "hash-2"))
        assert new.generation == 2 and new.thresholds == {"docs": 0, "kb": 500}  # still rolled back
        assert safety.live.snapshot is new and old.generation == 1  # published in one swap; the held one unchanged
        await safety.flush()

    asyncio.run(scenario())


def test_a_routes_effective_threshold_is_read_from_its_snapshot():
    snapshot = Snapshot.of(parse_config("upstream: {url: 'http://127.0.0.1:1'}\nroutes:\n  docs: {blue: a, green: b, green_percent: 10}\n"), 1, "h")
    route = snapshot.table.routes["docs"]
    assert snapshot.threshold(route) == route.configured_threshold == 1000
    assert snapshot.with_thresholds({"docs": 0}).threshold(route) == 0
