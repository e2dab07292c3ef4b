"""Replicas sharing one state file, and admin answers that say whether a decision was kept.
Real proxy processes on one file, in front of the fault injector and the embedded upstream."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from proxy.control.rollout_store import StateFile
from tests.support import route_yaml, wait_until
from tests.test_rollout_store import record
from tests.test_safety import (  # noqa: F401 - collections is a fixture
    FAST_GUARD, TOKEN, admin_post, cli, collections, drive, saved_record,
)


def state_of(proxy, logical: str) -> dict:
    return proxy.admin_json()["routes"][logical]


def holds_for(seconds: float, predicate) -> None:
    """The predicate stays true for `seconds` (checked every 100 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate()
        time.sleep(0.1)


def test_replicas_never_lose_an_acknowledged_decision(collections, proxies, tmp_path):
    logical, blue, green = collections
    shared = tmp_path / "shared-state.json"
    # A staged rollout with a guard: each replica judges its own traffic every 200 ms, and the idle
    # one's hold clock restarts at every judgement (not enough data). Its saves used to overwrite.
    routes = route_yaml(logical, blue, green, 50, guard=FAST_GUARD % "", rollout="{steps: [50, 100], hold: 1h}")
    busy = proxies(routes, name="busy", extra_yaml=f"state_file: {shared}\n")
    idle = proxies(routes, name="idle", extra_yaml=f"state_file: {shared}\n")
    stop = threading.Event()
    other_saves = []

    def traffic() -> None:
        batch = 0
        while not stop.is_set():
            drive(busy.url, logical, 40, offset=batch * 40)
            batch += 1

    def another_writer() -> None:
        """A third writer on the same file (another route), through the same lock and merge."""
        state_file, base = StateFile(shared), None
        while not stop.is_set():
            step = len(other_saves) + 1
            base = state_file.save({("other", "f1"): record(step=step)}, {("other", "f1"): base})[("other", "f1")]
            other_saves.append(step)
            time.sleep(0.01)

    threads = [threading.Thread(target=traffic), threading.Thread(target=another_writer)]
    for thread in threads:
        thread.start()
    try:
        both = (busy, idle)
        done = admin_post(busy, f"/admin/routes/{logical}/rollback", body={"reason": "replica test"})
        assert done.status_code == 200 and done.json()["persisted"] is True
        assert saved_record(shared, logical)["rolled_back"]["detail"] == "replica test"  # acknowledged once saved
        wait_until(lambda: state_of(idle, logical)["state"] == "rolled_back", timeout=3)
        holds_for(3.5, lambda: all(state_of(p, logical)["detail"] == "replica test" for p in both))
        assert drive(idle.url, logical, 30) == {"200/blue": 30}

        resumed = admin_post(idle, f"/admin/routes/{logical}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] == "stepping"
        wait_until(lambda: state_of(busy, logical)["state"] == "stepping", timeout=3)
        holds_for(3.5, lambda: all(state_of(p, logical)["state"] == "stepping" for p in both))
        assert "200/green" in drive(idle.url, logical, 60)

        # Both replicas roll back at once: one cause wins, on both, and stays.
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(
                lambda proxy: admin_post(proxy, f"/admin/routes/{logical}/rollback", body={"reason": f"from {proxy is busy}"}),
                both,
            ))
        assert [answer.status_code for answer in answers] == [200, 200]
        wait_until(lambda: state_of(busy, logical)["detail"] == state_of(idle, logical)["detail"], timeout=3)
        kept = state_of(busy, logical)["detail"]
        holds_for(2.0, lambda: all(state_of(p, logical)["detail"] == kept for p in both))
        assert saved_record(shared, logical)["rolled_back"]["detail"] == kept
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert StateFile(shared).read()[("other", "f1")]["step_index"] == other_saves[-1]  # nobody overwrote it


def test_a_decision_that_cannot_be_saved_is_answered_as_not_persisted(collections, proxies, tmp_path):
    logical, blue, green = collections
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    proxy = proxies(route_yaml(logical, blue, green, 100), extra_yaml=f"state_file: {blocker / 'state.json'}\n")
    readiness = httpx.get(proxy.admin_url + "/readyz").json()
    assert readiness["ready"] is True and readiness["state_file"]["writable"] is False
    assert "Not a directory" in readiness["state_file"]["error"]

    answer = admin_post(proxy, f"/admin/routes/{logical}/rollback", body={"reason": "disk"})
    assert answer.status_code == 503
    document = answer.json()
    assert document["persisted"] is False and document["state"] == "rolled_back"
    assert "NOT persisted" in document["status"]["error"] and "Not a directory" in document["status"]["error"]
    assert drive(proxy.url, logical, 20) == {"200/blue": 20}  # the decision applies on this replica

    resumed = cli("resume", logical, "--admin", proxy.admin_url, "--token", TOKEN)
    assert resumed.returncode == 1 and "not persisted (503)" in resumed.stderr
    assert state_of(proxy, logical)["state"] == "active"


def test_admin_bodies_are_capped(collections, proxies):
    logical, blue, green = collections
    proxy = proxies(route_yaml(logical, blue, green, 100))
    path = f"{proxy.admin_url}/admin/routes/{logical}/rollback"
    headers = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    huge = httpx.post(path, headers=headers, content=b'{"reason": "' + b"x" * 20_000_000 + b'"}')
    assert huge.status_code == 413 and "64 KiB" in huge.json()["status"]["error"]

    def chunks():  # no content-length: the cap counts what arrives
        yield b'{"reason": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    assert httpx.post(path, headers=headers, content=chunks()).status_code == 413
    assert state_of(proxy, logical)["state"] == "active"
    fits = httpx.post(path, headers=headers, json={"reason": "y" * 60_000})
    assert fits.status_code == 200 and fits.json()["detail"] == "y" * 60_000
