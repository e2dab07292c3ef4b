"""Rollout safety end to end: qdrant-client / HTTP -> proxy -> fault injector -> embedded upstream.

The fault injector (tests/faults.py) makes green slow, erroring, dropping or empty on demand. Guard
windows are configured in hundreds of milliseconds, so each rule trips within seconds of real time;
the window arithmetic itself is unit-tested with a fake clock in test_guard.py and test_rollout.py.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import aiohttp
import httpx
import pytest
from qdrant_client import models

from tests.faults import clear_faults, set_fault
from tests.support import ADMIN_TOKEN, RunningProxy, metric_value, qdrant_client, route_yaml, wait_until
from tests.test_proxy import DIM, POINTS, make_collections

pytestmark = pytest.mark.slow  # guard windows and holds judged over real seconds, several per test

TOKEN = ADMIN_TOKEN
FAST_GUARD = (
    "{interval: 200ms, window: 2s, min_requests: 20, error_for: 600ms, latency_for: 600ms, "
    "empty_for: 600ms, max_latency_ratio: 2.0, max_error_rate: 0.05, max_empty_excess: 0.05%s}"
)


@pytest.fixture
def collections(faulty_upstream):
    fault_url, upstream_url = faulty_upstream
    tag = uuid.uuid4().hex[:8]
    logical, blue, green = f"kb_{tag}", f"kb_{tag}_blue", f"kb_{tag}_green"
    make_collections(upstream_url, blue, green)
    yield logical, blue, green
    clear_faults(fault_url)


def drive(proxy_url: str, logical: str, requests: int, offset: int = 0) -> dict[str, int]:
    """Send `requests` searches from distinct users; count answers by `status/colour`."""

    async def run() -> dict[str, int]:
        counts: dict[str, int] = {}
        queue = list(range(offset, offset + requests))
        async with aiohttp.ClientSession() as session:
            async def worker() -> None:
                while queue:
                    user = queue.pop()
                    async with session.post(
                        f"{proxy_url}/collections/{logical}/points/query",
                        json={"query": [0.5] * DIM, "limit": 3}, headers={"x-user-id": f"user-{user}"},
                    ) as response:
                        await response.read()
                        key = f"{response.status}/{response.headers.get('x-bluegreen-color')}"
                        counts[key] = counts.get(key, 0) + 1

            await asyncio.gather(*(worker() for _ in range(8)))
        return counts

    return asyncio.run(run())


def drive_until(proxy: RunningProxy, logical: str, predicate, timeout: float = 15.0) -> dict[str, int]:
    """Keep traffic flowing until the admin document satisfies `predicate`; all answers seen."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    batch = 0
    while time.monotonic() < deadline:
        for key, count in drive(proxy.url, logical, 60, offset=batch * 60).items():
            seen[key] = seen.get(key, 0) + count
        batch += 1
        if predicate(proxy.admin_json()["routes"][logical]):
            return seen
    raise TimeoutError(f"not reached within {timeout}s: {proxy.admin_json()['routes'][logical]}")


def held_past(status: dict, hold: float) -> dict | None:
    """The route's status once its hold clock was restarted at least `hold` after its step started."""
    step = status["step"]
    return status if step["hold_started"] - step["started"] >= hold else None


def saved_record(state_file, logical: str) -> dict:
    """The route's latest record in the state file (one per config fingerprint)."""
    records = json.loads(state_file.read_text())["routes"][logical].values()
    return max(records, key=lambda record: record["saved_at"])


def admin_post(proxy: RunningProxy, path: str, token: str | None = TOKEN, body: dict | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(proxy.admin_url + path, json=body, headers=headers)


# ---------------------------------------------------------------- the three trip rules


def test_error_rate_trip_rolls_back_and_failover_hides_every_error(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, status=500, operations=["query"])
    proxy = proxies(route_yaml(logical, blue, green, 50, guard=FAST_GUARD % ""))

    seen = drive_until(proxy, logical, lambda r: r["state"] == "rolled_back")
    assert set(seen) == {"200/blue"}, seen  # every green failure was answered from blue
    status = proxy.admin_json()["routes"][logical]
    assert status["reason"] == "error_rate"
    assert status["effective_green_percent"] == 0 and status["green_percent"] == 50
    assert status["figures"]["green_error_rate"] > 0.05 and status["since"] > 0
    metrics = proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_rollbacks_total", route=logical, reason="error_rate") == 1
    assert metric_value(metrics, "bluegreen_route_state", route=logical, state="rolled_back") == 1
    assert metric_value(metrics, "bluegreen_green_percent", route=logical) == 0
    assert metric_value(metrics, "bluegreen_failovers_total", route=logical) > 0
    assert metric_value(metrics, "bluegreen_requests_total", route=logical, color="green", status="5xx") > 0
    after = drive(proxy.url, logical, 100)
    assert after == {"200/blue": 100}


def test_latency_trip(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, delay_ms=60, operations=["query"])
    proxy = proxies(route_yaml(logical, blue, green, 50, guard=FAST_GUARD % ""))
    seen = drive_until(proxy, logical, lambda r: r["state"] == "rolled_back")
    assert set(seen) <= {"200/blue", "200/green"}
    status = proxy.admin_json()["routes"][logical]
    assert status["reason"] == "latency"
    assert status["figures"]["latency_ratio"] > 2.0
    assert metric_value(proxy.metrics_text(), "bluegreen_rollbacks_total", route=logical, reason="latency") == 1


def test_empty_results_trip(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, empty=True, operations=["query"])
    proxy = proxies(route_yaml(logical, blue, green, 50, guard=FAST_GUARD % ""))
    drive_until(proxy, logical, lambda r: r["state"] == "rolled_back")
    status = proxy.admin_json()["routes"][logical]
    assert status["reason"] == "empty_results"
    assert status["figures"]["empty_excess"] > 0.05


def test_alert_action_reports_without_rolling_back(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, status=503, operations=["query"])
    proxy = proxies(route_yaml(logical, blue, green, 50, guard=FAST_GUARD % ", action: alert"))
    drive_until(proxy, logical, lambda r: r["last_alert"] is not None)
    status = proxy.admin_json()["routes"][logical]
    assert status["state"] == "active" and status["effective_green_percent"] == 50
    assert status["last_alert"]["reason"] == "error_rate"
    assert metric_value(proxy.metrics_text(), "bluegreen_rollbacks_total", route=logical) == 0


def test_too_little_green_evidence_never_trips(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, status=500, operations=["query"])
    guard = FAST_GUARD.replace("min_requests: 20", "min_requests: 5000") % ""
    proxy = proxies(route_yaml(logical, blue, green, 50, guard=guard))
    deadline = time.monotonic() + 2.0  # ten judgements at 200 ms, each with a 100 % green error rate
    while time.monotonic() < deadline:
        drive(proxy.url, logical, 60)
    status = proxy.admin_json()["routes"][logical]
    assert status["state"] == "active" and status["effective_green_percent"] == 50
    assert metric_value(proxy.metrics_text(), "bluegreen_rollbacks_total", route=logical) == 0


# ---------------------------------------------------------------- latch, resume, manual rollback


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True, timeout=30,
        env=None if env is None else {**os.environ, **env},
    )


def test_rollback_latches_across_restart_until_resume_or_config_change(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, status=500, operations=["query"])
    proxy = proxies(route_yaml(logical, blue, green, 50, guard=FAST_GUARD % ""))
    drive_until(proxy, logical, lambda r: r["state"] == "rolled_back")
    clear_faults(faulty_upstream[0], green)

    proxy.stop()
    saved = saved_record(proxy.config_path.with_name("bluegreen.state.json"), logical)
    assert saved["rolled_back"]["reason"] == "error_rate"
    proxy.start()
    status = proxy.admin_json()["routes"][logical]
    assert status["state"] == "rolled_back" and status["reason"] == "error_rate"
    assert drive(proxy.url, logical, 50) == {"200/blue": 50}

    resumed = cli("resume", logical, "--config", str(proxy.config_path), env={"BLUEGREEN_ADMIN_TOKEN": TOKEN})
    assert resumed.returncode == 0, resumed.stderr
    assert proxy.admin_json()["routes"][logical]["effective_green_percent"] == 50
    assert "200/green" in drive(proxy.url, logical, 100)

    rolled = cli("rollback", logical, "--reason", "recall dropped", "--admin", proxy.admin_url, "--token", TOKEN)
    assert rolled.returncode == 0, rolled.stderr
    status = proxy.admin_json()["routes"][logical]
    assert (status["state"], status["reason"], status["detail"]) == ("rolled_back", "manual", "recall dropped")
    assert drive(proxy.url, logical, 50) == {"200/blue": 50}  # effective on the next request
    printed = cli("status", "--admin", proxy.admin_url)
    assert "rolled_back" in printed.stdout and "recall dropped" in printed.stdout

    proxy.write_routes(route_yaml(logical, blue, green, 40, guard=FAST_GUARD % ""))  # a new green_percent clears it
    wait_until(lambda: proxy.admin_json()["routes"][logical]["state"] == "active", timeout=5)
    assert proxy.admin_json()["routes"][logical]["effective_green_percent"] == 40


def test_admin_commands_need_the_token(collections, faulty_upstream, tmp_path):
    logical, blue, green = collections
    open_proxy = RunningProxy(tmp_path / "no-token", faulty_upstream[0], route_yaml(logical, blue, green, 50)).start()
    try:
        refused = admin_post(open_proxy, f"/admin/routes/{logical}/rollback", token=None, body={"reason": "x"})
        assert refused.status_code == 403 and "admin.token" in refused.json()["status"]["error"]
    finally:
        open_proxy.stop()


def test_admin_rollback_with_wrong_and_right_token(collections, proxies):
    logical, blue, green = collections
    proxy = proxies(route_yaml(logical, blue, green, 100))
    assert admin_post(proxy, f"/admin/routes/{logical}/rollback", token="nope").status_code == 401
    assert admin_post(proxy, "/admin/routes/unknown/rollback").status_code == 404
    assert drive(proxy.url, logical, 20) == {"200/green": 20}
    done = admin_post(proxy, f"/admin/routes/{logical}/rollback", body={"reason": "on-call"})
    assert done.status_code == 200 and done.json()["state"] == "rolled_back"
    assert drive(proxy.url, logical, 20) == {"200/blue": 20}
    assert admin_post(proxy, f"/admin/routes/{logical}/resume").json()["effective_green_percent"] == 100


# ---------------------------------------------------------------- staged rollout


def test_staged_walk_needs_healthy_evidence_to_step(collections, proxies):
    logical, blue, green = collections
    rollout = "{steps: [10, 50, 100], hold: 600ms}"
    # Both colours are the same upstream: a latency difference here is the machine's load, not evidence.
    guard = (FAST_GUARD % "").replace("max_latency_ratio: 2.0", "max_latency_ratio: 1000.0")
    proxy = proxies(route_yaml(logical, blue, green, 10, guard=guard, rollout=rollout))
    # No traffic: every judgement lacks evidence and restarts the hold clock. Once one has done so a
    # whole hold after the step started, the walk has had its chance to step, and did not.
    status = wait_until(lambda: held_past(proxy.admin_json()["routes"][logical], 0.6), timeout=30)
    assert status["state"] == "stepping" and status["step"]["index"] == 0
    assert status["effective_green_percent"] == 10
    drive_until(proxy, logical, lambda r: r["state"] == "active", timeout=30)
    status = proxy.admin_json()["routes"][logical]
    assert status["effective_green_percent"] == 100 and status["step"]["index"] == 2
    assert drive(proxy.url, logical, 30) == {"200/green": 30}
    state_file = proxy.config_path.with_name("bluegreen.state.json")  # written just after the step, by a thread
    wait_until(lambda: saved_record(state_file, logical)["step_index"] == 2, timeout=3)


def test_trip_during_walk_stops_it(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, status=500, operations=["query"])
    rollout = "{steps: [25, 50, 100], hold: 1h}"
    proxy = proxies(route_yaml(logical, blue, green, 25, guard=FAST_GUARD % "", rollout=rollout))
    drive_until(proxy, logical, lambda r: r["state"] == "rolled_back")
    status = proxy.admin_json()["routes"][logical]
    assert status["step"]["index"] == 0 and status["step"]["next_in_s"] is None


# ---------------------------------------------------------------- preflight gate


def test_half_populated_green_gets_no_reads_until_it_catches_up(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    upstream_url = faulty_upstream[1]
    direct = qdrant_client(upstream_url)
    direct.delete(green, points_selector=models.PointIdsList(points=list(range(POINTS // 2))), wait=True)
    preflight = f"{{max_count_drift: 0.01, expect: {{size: {DIM}, distance: Cosine}}, recheck: 300ms}}"
    proxy = proxies(route_yaml(logical, blue, green, 50, preflight=preflight))

    wait_until(lambda: proxy.admin_json()["routes"][logical]["reason"] == "point_count", timeout=5)
    status = proxy.admin_json()["routes"][logical]
    assert status["state"] == "preflight_failed" and status["effective_green_percent"] == 0
    assert drive(proxy.url, logical, 100) == {"200/blue": 100}
    readiness = httpx.get(proxy.admin_url + "/readyz").json()
    assert readiness["routes"][logical]["state"] == "preflight_failed"
    assert "point_count" in readiness["routes"][logical]["detail"]
    check = cli("preflight", "--config", str(proxy.config_path), logical)
    assert check.returncode == 1 and "[FAIL] point_count" in check.stdout and "[ok] vectors" in check.stdout

    direct.upsert(green, [models.PointStruct(id=i, vector=[0.1] * DIM, payload={"home": green})
                          for i in range(POINTS // 2)], wait=True)
    wait_until(lambda: proxy.admin_json()["routes"][logical]["state"] == "active", timeout=5)
    assert "200/green" in drive(proxy.url, logical, 100)
    assert cli("preflight", "--config", str(proxy.config_path), logical).returncode == 0

    direct.delete_collection(green)  # deleted mid-rollout: green loses its traffic
    wait_until(lambda: proxy.admin_json()["routes"][logical]["state"] == "preflight_failed", timeout=5)
    assert "green_exists" in proxy.admin_json()["routes"][logical]["reason"]
    assert drive(proxy.url, logical, 60) == {"200/blue": 60}
    direct.close()


def test_vector_layout_mismatch_fails_preflight(collections, proxies):
    logical, blue, green = collections
    preflight = "{expect: {size: 1024, distance: Cosine}, recheck: 300ms}"
    proxy = proxies(route_yaml(logical, blue, green, 50, preflight=preflight))
    wait_until(lambda: proxy.admin_json()["routes"][logical]["state"] == "preflight_failed"
               and proxy.admin_json()["routes"][logical]["reason"] != "pending", timeout=5)
    status = proxy.admin_json()["routes"][logical]
    assert status["reason"] == "vectors" and "1024" in status["detail"]


# ---------------------------------------------------------------- failover


def test_failover_hides_a_dropped_green_read(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, drop=True, operations=["query", "count"])
    proxy = proxies(route_yaml(logical, blue, green, 100))
    client = qdrant_client(proxy.url, headers={"x-user-id": "u1"})
    points = client.query_points(logical, query=[0.5] * DIM, limit=3).points
    assert points and all(point.payload["home"] == blue for point in points)
    assert client.count(logical).count == POINTS
    metrics = proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_failovers_total", route=logical) == 2
    assert metric_value(metrics, "bluegreen_requests_total", route=logical, color="green", status="error") == 2
    client.close()


def test_failover_off_lets_the_client_see_the_error(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, status=503, operations=["query"])
    proxy = proxies(route_yaml(logical, blue, green, 100, failover="false"))
    response = httpx.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": [0.5] * DIM})
    assert response.status_code == 503 and response.headers["x-bluegreen-color"] == "green"


# ---------------------------------------------------------------- a new embedding model


def test_new_embedding_model_clients_ask_the_colour_then_send_it(collections, faulty_upstream, proxies):
    """Green holds a new model's vectors (another dimension): a client asks the proxy which colour its
    key gets, embeds with that colour's model, and sends the query with the colour it embedded for."""
    logical, blue, _ = collections
    fault_url, upstream_url = faulty_upstream
    wide, wide_dim = f"{blue}_wide", DIM + 4
    direct = qdrant_client(upstream_url)
    direct.create_collection(wide, vectors_config=models.VectorParams(size=wide_dim, distance=models.Distance.COSINE))
    direct.upsert(wide, [models.PointStruct(id=i, vector=[1.0] * wide_dim, payload={"home": wide})
                         for i in range(POINTS)], wait=True)
    proxy = proxies(route_yaml(logical, blue, wide, 50, allow_override="true"))
    ask = f"{proxy.url}/bluegreen/routes/{logical}/color"

    served = {}
    for user in (f"user-{i}" for i in range(40)):
        answer = httpx.get(ask, headers={"x-user-id": user})
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
        decision = answer.json()["result"]
        assert decision["collection"] == (wide if decision["color"] == "green" else blue)
        assert decision["effective_green_percent"] == 50
        unforced = httpx.post(f"{proxy.url}/collections/{logical}/points/count", json={}, headers={"x-user-id": user})
        assert unforced.headers["x-bluegreen-color"] == decision["color"]  # the same split
        vector = [0.5] * (wide_dim if decision["color"] == "green" else DIM)  # "embed" for that colour
        query = httpx.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": vector, "limit": 2, "with_payload": True},
                           headers={"x-user-id": user, "x-bluegreen-color": decision["color"]})
        assert query.status_code == 200, query.text
        assert {p["payload"]["home"] for p in query.json()["result"]["points"]} == {decision["collection"]}
        served[user] = decision["color"]
    assert set(served.values()) == {"blue", "green"}

    # A forced colour is never failed over: the other colour's vectors are another model's.
    green_user = next(user for user, colour in served.items() if colour == "green")
    set_fault(fault_url, wide, status=503, operations=["query"])
    failing = httpx.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": [0.5] * wide_dim},
                         headers={"x-user-id": green_user, "x-bluegreen-color": "green"})
    assert failing.status_code == 503 and failing.headers["x-bluegreen-color"] == "green"
    assert metric_value(proxy.metrics_text(), "bluegreen_failovers_total", route=logical) == 0
    clear_faults(fault_url, wide)

    assert admin_post(proxy, f"/admin/routes/{logical}/rollback", body={"reason": "recall"}).status_code == 200
    decision = httpx.get(ask, headers={"x-user-id": green_user}).json()["result"]
    assert (decision["color"], decision["collection"], decision["effective_green_percent"]) == ("blue", blue, 0)

    no_key = httpx.get(ask)
    assert no_key.status_code == 400 and "x-user-id" in no_key.json()["status"]["error"]
    unknown = httpx.get(f"{proxy.url}/bluegreen/routes/nope/color", headers={"x-user-id": "u"})
    assert unknown.status_code == 404 and "/bluegreen/routes/{route}/color" in unknown.json()["status"]["error"]
    assert httpx.post(ask, headers={"x-user-id": "u"}).status_code == 405
    direct.delete_collection(wide)
    direct.close()
