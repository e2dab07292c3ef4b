"""Replicas agreeing through the Qdrant state store (`state: {store: qdrant}`): real proxy processes in
front of the fault injector and the embedded upstream, or an upstream of the test's own that it stops
and restarts. No file is shared: the replicas' config directories are their own."""
from __future__ import annotations

import random
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from proxy.control.rollout_store import StateFile
from tests.support import (
    ADMIN_TOKEN, RunningProxy, free_port, metric_value, qdrant_client, route_yaml, start_embedded_upstream, wait_until,
)
from tests.test_proxy import DIM, make_collections
from tests.test_replicas import holds_for, state_of
from tests.test_safety import admin_post, cli, collections, drive  # noqa: F401 - collections is a fixture

PROPAGATION_SECONDS = 2.0  # a decision acknowledged on one replica is in force on all within this


def qdrant_state(collection: str, **extra: str) -> str:
    options = "".join(f", {key}: {value}" for key, value in extra.items())
    return f"state: {{store: qdrant, collection: {collection}{options}}}\n"


def stored_records(upstream_url: str, collection: str) -> list[dict]:
    """Every point's payload in the state collection, read directly from the upstream."""
    answer = httpx.post(f"{upstream_url}/collections/{collection}/points/scroll",
                        json={"limit": 1000, "with_payload": True}, timeout=10)
    answer.raise_for_status()
    return [point["payload"] for point in answer.json()["result"]["points"]]


def stored_record(upstream_url: str, collection: str, logical: str) -> dict:
    records = [payload for payload in stored_records(upstream_url, collection) if payload["route"] == logical]
    return max(records, key=lambda payload: payload["saved_at"])


@pytest.fixture
def state_collection():
    return f"state_{uuid.uuid4().hex[:8]}"


def test_three_replicas_agree_and_lose_no_acknowledged_decision(collections, proxies, faulty_upstream, state_collection):
    logical, blue, green = collections
    upstream_url = faulty_upstream[1]
    replicas = [proxies(route_yaml(logical, blue, green, 50), name=f"r{n}", extra_yaml=qdrant_state(state_collection))
                for n in range(3)]
    assert not list(replicas[0].config_dir.glob("*.state.json"))  # no file is written with the Qdrant store

    # One replica's rollback: stored when acknowledged, in force on all within 2 s, never undone.
    done = admin_post(replicas[0], f"/admin/routes/{logical}/rollback", body={"reason": "one"})
    assert done.status_code == 200 and done.json()["persisted"] is True
    assert stored_record(upstream_url, state_collection, logical)["rolled_back"]["detail"] == "one"
    started = time.monotonic()
    wait_until(lambda: all(state_of(p, logical)["state"] == "rolled_back" for p in replicas), timeout=PROPAGATION_SECONDS)
    assert time.monotonic() - started <= PROPAGATION_SECONDS
    holds_for(2.5, lambda: all(state_of(p, logical)["detail"] == "one" for p in replicas))
    assert drive(replicas[2].url, logical, 30) == {"200/blue": 30}

    # Operations in turn on different replicas, each right after the last (no wait for the sync): each
    # decides on what the previous one stored, and each acknowledged one is what is stored.
    rng = random.Random(20)
    for n in range(24):
        replica = replicas[n % 3]
        if rng.random() < 0.5:
            answer = admin_post(replica, f"/admin/routes/{logical}/rollback", body={"reason": f"op {n}"})
        else:
            answer = admin_post(replica, f"/admin/routes/{logical}/resume")
        assert answer.status_code == 200 and answer.json()["persisted"] is True, answer.text
        stored = stored_record(upstream_url, state_collection, logical)
        assert (stored["rolled_back"] is not None) == (answer.json()["state"] == "rolled_back")
        if answer.json()["state"] == "rolled_back":
            assert stored["rolled_back"]["detail"] == answer.json()["detail"]

    # All three at once, each twice: rollbacks and resumes race; every answer is acknowledged and the
    # replicas end agreeing with what is stored.
    def operate(job: tuple[int, str]) -> httpx.Response:
        index, action = job
        body = {"reason": f"race {index}"} if action == "rollback" else None
        return admin_post(replicas[index % 3], f"/admin/routes/{logical}/{action}", body=body)

    jobs = [(n, "rollback" if n % 2 else "resume") for n in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(operate, jobs))
    assert [answer.status_code for answer in answers] == [200] * 6
    stored = stored_record(upstream_url, state_collection, logical)
    expected = "rolled_back" if stored["rolled_back"] else "active"

    def agreed() -> bool:
        return all(state_of(p, logical)["state"] == expected for p in replicas)

    wait_until(agreed, timeout=PROPAGATION_SECONDS + 1)
    holds_for(2.0, agreed)
    metrics = replicas[0].metrics_text()
    assert metric_value(metrics, "bluegreen_state_store_writes_total", store="qdrant") >= 1
    assert metric_value(metrics, "bluegreen_state_store_errors_total", store="qdrant") == 0
    routes = replicas[1].admin_json()
    assert routes["state_store"]["store"] == "qdrant" and routes["state_store"]["collection"] == state_collection
    assert routes["state_store"]["last_sync_age_s"] < 2.0
    shown = cli("status", "--admin", replicas[1].admin_url)
    assert shown.returncode == 0 and re.search(rf"state store: qdrant collection {state_collection}, last sync \d+\.\ds ago\n", shown.stdout)


def test_kill_9_during_writes_leaves_valid_records(collections, proxies, faulty_upstream, state_collection):
    logical, blue, green = collections
    upstream_url = faulty_upstream[1]
    victim, survivor = (proxies(route_yaml(logical, blue, green, 50), name=name, extra_yaml=qdrant_state(state_collection))
                        for name in ("victim", "survivor"))
    stop = threading.Event()

    def hammer() -> None:
        n = 0
        while not stop.is_set():
            action = "rollback" if n % 2 == 0 else "resume"
            try:
                admin_post(victim, f"/admin/routes/{logical}/{action}", body={"reason": f"hammer {n}"} if action == "rollback" else None)
            except httpx.HTTPError:
                return  # killed
            n += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    time.sleep(1.5)
    victim.server.process.kill()  # SIGKILL mid-writes
    victim.server.process.wait()
    stop.set()
    thread.join(10)

    for payload in stored_records(upstream_url, state_collection):
        assert isinstance(payload["version"], int) and payload["version"] >= 1
        assert payload["route"] == logical and isinstance(payload["fingerprint"], str)
        assert payload["rolled_back"] is None or isinstance(payload["rolled_back"].get("reason"), str)
    # The survivor keeps deciding, and its decisions are kept. (A write the victim had in flight may
    # land first: a rollback then keeps that first cause, by the merge rule.)
    answer = admin_post(survivor, f"/admin/routes/{logical}/rollback", body={"reason": "after the kill"})
    assert answer.status_code == 200 and answer.json()["persisted"] is True and answer.json()["state"] == "rolled_back"
    kept = answer.json()["detail"]
    assert stored_record(upstream_url, state_collection, logical)["rolled_back"]["detail"] == kept
    # The victim, restarted, starts from what is stored.
    victim.start()
    assert state_of(victim, logical)["detail"] == kept


def test_qdrant_stopped_then_restarted(tmp_path, state_collection):
    """With Qdrant down an admin rollback applies on this replica and answers 503 `persisted: false`;
    /readyz says so; once Qdrant is back the retry stores it and another replica adopts it."""
    port = free_port()
    data = tmp_path / "qdrant-data"
    upstream, url = start_embedded_upstream(data, tmp_path, port=port)
    tag = uuid.uuid4().hex[:8]
    logical, blue, green = f"kb_{tag}", f"kb_{tag}_blue", f"kb_{tag}_green"
    make_collections(url, blue, green)
    routes = route_yaml(logical, blue, green, 50)
    options = dict(extra_yaml=qdrant_state(state_collection), admin_options=f"token: {ADMIN_TOKEN}")
    first = RunningProxy(tmp_path / "first", url, routes, **options).start()
    second = None
    try:
        assert drive(first.url, logical, 20).keys() <= {"200/blue", "200/green"}
        upstream.stop()
        answer = admin_post(first, f"/admin/routes/{logical}/rollback", body={"reason": "qdrant down"})
        assert answer.status_code == 503
        document = answer.json()
        assert document["persisted"] is False and document["state"] == "rolled_back"
        assert "NOT persisted" in document["status"]["error"] and f"Qdrant collection {state_collection}" in document["status"]["error"]
        ready = httpx.get(first.admin_url + "/readyz").json()
        assert ready["ready"] is True and ready["state_store"]["writable"] is False
        assert "cannot reach" in ready["state_store"]["error"]
        assert "state_file" not in ready  # the file store's block only with the file store
        shown = cli("status", "--admin", first.admin_url)
        assert f"state store: qdrant collection {state_collection}, last sync" in shown.stdout and "NOT writable: cannot reach" in shown.stdout

        upstream, _ = start_embedded_upstream(data, tmp_path, port=port)
        wait_until(lambda: httpx.get(first.admin_url + "/readyz").json()["state_store"]["writable"], timeout=10)
        wait_until(lambda: stored_record(url, state_collection, logical)["rolled_back"] is not None, timeout=5)
        assert stored_record(url, state_collection, logical)["rolled_back"]["detail"] == "qdrant down"
        assert drive(first.url, logical, 20) == {"200/blue": 20}  # traffic flows again, still rolled back
        errors = metric_value(first.metrics_text(), "bluegreen_state_store_errors_total", store="qdrant")
        assert errors >= 1

        second = RunningProxy(tmp_path / "second", url, routes, **options).start()
        assert state_of(second, logical)["detail"] == "qdrant down"
    finally:
        for proxy in (first, second):
            if proxy is not None:
                proxy.stop()
        upstream.stop()


def test_the_state_collection_is_refused_on_the_data_port(collections, proxies, faulty_upstream, state_collection):
    logical, blue, green = collections
    upstream_url = faulty_upstream[1]
    proxy = proxies(route_yaml(logical, blue, green, 50), extra_yaml=qdrant_state(state_collection))
    assert admin_post(proxy, f"/admin/routes/{logical}/rollback", body={"reason": "kept"}).json()["persisted"] is True
    client = qdrant_client(proxy.url)
    refusals = [
        lambda: client.get_collection(state_collection),
        lambda: client.scroll(state_collection, limit=10),
        lambda: client.delete_collection(state_collection),
        lambda: client.upsert(state_collection, [models.PointStruct(id=1, vector=[1.0], payload={})]),
        lambda: client.delete(state_collection, points_selector=models.FilterSelector(filter=models.Filter())),
        lambda: client.update_collection_aliases([models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=state_collection, alias_name="peek"))]),
        lambda: client.query_points(blue, query=[0.5] * DIM, lookup_from=models.LookupLocation(collection=state_collection)),
        lambda: client.query_points_groups(blue, query=[0.5] * DIM, group_by="home",
                                           with_lookup=models.WithLookup(collection=state_collection)),
    ]
    for refused in refusals:
        with pytest.raises(UnexpectedResponse) as caught:
            refused()
        assert caught.value.status_code == 403
        assert f"`{state_collection}` is reserved" in caught.value.content.decode()
    escaped = '{"actions": [{"delete_alias": {"alias_name": "x"}}, {"create_alias": {"collection_name": "%s", "alias_name": "y"}}]}'
    sneaky = escaped % state_collection.replace("_", "\\u005f")
    answer = httpx.post(f"{proxy.url}/collections/aliases", content=sneaky, headers={"content-type": "application/json"})
    assert answer.status_code == 403
    percent = httpx.get(f"{proxy.url}/collections/{state_collection.replace('_', '%5F')}")
    assert percent.status_code == 403
    assert state_collection in [c.name for c in client.get_collections().collections]  # listing is not reading it
    client.close()
    assert stored_record(upstream_url, state_collection, logical)["rolled_back"]["detail"] == "kept"

    # The store is bound at start-up: a reload naming another collection (or the file store) leaves
    # the one in use refused until a restart.
    for other_state in (qdrant_state(f"{state_collection}_new"), "state: {store: file}\n"):
        proxy.extra_yaml = other_state
        proxy.write_routes(route_yaml(logical, blue, green, 40))
        wait_until(lambda: state_of(proxy, logical)["green_percent"] == 40, timeout=5)
        assert httpx.get(f"{proxy.url}/collections/{state_collection}").status_code == 403
        proxy.write_routes(route_yaml(logical, blue, green, 50))
        wait_until(lambda: state_of(proxy, logical)["green_percent"] == 50, timeout=5)


def test_a_state_file_is_imported_on_first_start(collections, proxies, faulty_upstream, state_collection, tmp_path):
    logical, blue, green = collections
    upstream_url = faulty_upstream[1]
    routes = route_yaml(logical, blue, green, 50)
    old_file = tmp_path / "old.state.json"
    with_file = proxies(routes, name="file", extra_yaml=f"state_file: {old_file}\n")
    assert admin_post(with_file, f"/admin/routes/{logical}/rollback", body={"reason": "before the upgrade"}).status_code == 200
    with_file.stop()
    assert StateFile(old_file).read()

    named = proxies(routes, name="named", extra_yaml=qdrant_state(state_collection, path=str(old_file)))
    assert state_of(named, logical)["detail"] == "before the upgrade"
    assert stored_record(upstream_url, state_collection, logical)["rolled_back"]["detail"] == "before the upgrade"

    # --import-state FILE, into another empty collection; a collection with records is left as it is.
    other = f"{state_collection}_b"
    flagged = RunningProxy(tmp_path / "flagged", faulty_upstream[0], routes, extra_yaml=qdrant_state(other),
                           admin_options=f"token: {ADMIN_TOKEN}")
    flagged.server.args += ["--import-state", str(old_file)]
    try:
        flagged.start()
        assert state_of(flagged, logical)["detail"] == "before the upgrade"
        assert admin_post(flagged, f"/admin/routes/{logical}/resume").json()["persisted"] is True
        flagged.stop()
        flagged.start()  # not empty now: the file is not imported again, the resume stands
        assert state_of(flagged, logical)["state"] == "active"
    finally:
        flagged.stop()
