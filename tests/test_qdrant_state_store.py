"""The Qdrant state store (proxy.control.qdrant_state_store) in-process, against the embedded upstream
over real sockets through the proxy's own upstream client: collection created, compare-and-set under
concurrent writers, import, and an unreachable Qdrant."""
from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from proxy.control.qdrant_state_store import QdrantStateStore, point_id
from proxy.control.state_store import KEEP_FINGERPRINTS, StateStoreError
from proxy.dataplane.upstream import UpstreamClient
from proxy.metrics import Metrics
from routing.config import ConfigError, Upstream, parse_config
from routing.replicas import decisions
from tests.support import free_port, metric_value
from tests.test_rollout_store import LATCH_A, LATCH_B, record


def run_with_stores(url: str, count: int, scenario, collection: str | None = None):
    """scenario(stores, metrics) with `count` stores (one upstream client each, as replicas have) on
    one fresh collection."""
    collection = collection or f"state_{uuid.uuid4().hex[:8]}"

    async def main():
        metrics = Metrics()
        clients = [UpstreamClient(url, Upstream(timeout=5.0)) for _ in range(count)]
        stores = [QdrantStateStore(client.fetch_json, collection, metrics) for client in clients]
        try:
            return await scenario(stores, metrics)
        finally:
            for client in clients:
                await client.close()

    return asyncio.run(main())


def test_creates_its_collection_and_keeps_records_with_rising_versions(embedded_upstream):
    collection = f"state_{uuid.uuid4().hex[:8]}"

    async def scenario(stores, metrics):
        store = stores[0]
        await store.open()
        assert await store.read() == {}
        slot = ("docs", "f1")
        first = (await store.save({slot: record(latch=LATCH_A)}, {}))[slot]
        assert first["version"] == 1 and first["rolled_back"] == LATCH_A
        resumed = (await store.save({slot: record(step=1)}, {slot: first}))[slot]
        assert resumed["version"] == 2 and resumed["rolled_back"] is None and resumed["step_index"] == 1
        assert await store.read() == {slot: resumed}
        assert await store.probe() is None

    run_with_stores(embedded_upstream, 1, scenario, collection)
    info = httpx.get(f"{embedded_upstream}/collections/{collection}").json()["result"]
    assert info["config"]["params"]["vectors"]["size"] == 1
    point = httpx.post(f"{embedded_upstream}/collections/{collection}/points", json={"ids": [point_id(("docs", "f1"))], "with_payload": True}).json()
    payload = point["result"][0]["payload"]
    assert payload["route"] == "docs" and payload["fingerprint"] == "f1" and payload["version"] == 2


def test_concurrent_writers_merge(embedded_upstream):
    """Six replicas save at once from the same base: two rollbacks, one further step, routine saves.
    The compare-and-set lets one write win at a time; a loser re-reads and merges, so a rollback
    (the first cause) and the step both survive."""
    slot = ("docs", "f1")

    async def scenario(stores, metrics):
        base = (await stores[0].save({slot: record()}, {}))[slot]
        locals_ = [record(latch=LATCH_A), record(latch=LATCH_B), record(step=1), record(hold=5.0), record(hold=6.0), record()]
        saved = await asyncio.gather(*(store.save({slot: local}, {slot: base}) for store, local in zip(stores, locals_)))
        final = await stores[0].read()
        return saved, final[slot], metrics

    saved, final, metrics = run_with_stores(embedded_upstream, 6, scenario)
    assert final["rolled_back"] in (LATCH_A, LATCH_B) and final["step_index"] == 1
    assert final["version"] >= 3  # the rollbacks and the step each took a write
    for answer in saved:  # each writer was told what is stored now, or an earlier state it is merged into
        assert answer[slot]["version"] <= final["version"]


def test_a_write_that_loses_the_race_is_a_conflict_merged_again(embedded_upstream):
    """Replica A reads version 1, then B writes version 2 before A's conditional write: A's write
    does not apply, A sees B's write on reading back, counts a conflict and merges over it."""
    slot = ("docs", "f1")

    async def scenario(stores, metrics):
        a, b = stores
        base = (await a.save({slot: record()}, {}))[slot]
        b_wrote = asyncio.Event()
        real_fetch = a.fetch

        async def fetch_after_b(method, path, body):
            if method == "PUT" and "/points" in path:
                await b_wrote.wait()
            return await real_fetch(method, path, body)

        a.fetch = fetch_after_b
        a_saving = asyncio.create_task(a.save({slot: record(latch=LATCH_A)}, {slot: base}))
        await asyncio.sleep(0.2)  # A has read version 1 and waits to write
        by_b = (await b.save({slot: record(step=1)}, {slot: base}))[slot]
        b_wrote.set()
        by_a = (await a_saving)[slot]
        return by_b, by_a, metrics

    by_b, by_a, metrics = run_with_stores(embedded_upstream, 2, scenario)
    assert by_b["version"] == 2 and by_b["step_index"] == 1
    assert by_a["version"] == 3 and by_a["step_index"] == 1 and by_a["rolled_back"] == LATCH_A
    assert metric_value(metrics.exposition().decode(), "bluegreen_state_store_conflicts_total", store="qdrant") == 1


def test_a_resume_lifts_only_the_rollback_it_saw(embedded_upstream):
    slot = ("docs", "f1")

    async def scenario(stores, metrics):
        a, b = stores
        rolled = (await a.save({slot: record(latch=LATCH_A)}, {}))[slot]
        resumed = (await b.save({slot: record()}, {slot: rolled}))[slot]  # b saw the rollback: lifted
        assert resumed["rolled_back"] is None
        again = (await a.save({slot: record(latch=LATCH_B)}, {slot: resumed}))[slot]
        stale = (await b.save({slot: record(hold=9.0)}, {slot: rolled}))[slot]  # b on an old base: no undo
        return again, stale

    again, stale = run_with_stores(embedded_upstream, 2, scenario)
    assert stale == again and stale["rolled_back"] == LATCH_B


def test_imports_a_state_file_into_an_empty_collection_only(embedded_upstream):
    imported = {("docs", "f1"): {**record(step=1, latch=LATCH_A), "version": 7, "saved_at": 1.0},
                ("kb", "f9"): record(fingerprint="f9")}  # a format-1 record has no version: imported as 1

    async def scenario(stores, metrics):
        first, second = stores
        await first.open(imported, "old.state.json")
        stored = await first.read()
        assert {slot: decisions(r) for slot, r in stored.items()} == {slot: decisions(r) for slot, r in imported.items()}
        assert stored[("docs", "f1")]["version"] == 7 and stored[("kb", "f9")]["version"] == 1
        await second.open({("other", "f1"): record()}, "another.json")  # not empty now: nothing imported
        assert await second.read() == stored

    run_with_stores(embedded_upstream, 2, scenario)


def test_an_unreachable_qdrant_is_an_error_that_names_the_store():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario(stores, metrics):
        store = stores[0]
        await store.open()  # logged, not fatal
        with pytest.raises(StateStoreError, match="cannot reach Qdrant collection s1"):
            await store.read()
        with pytest.raises(StateStoreError, match="cannot reach Qdrant collection s1"):
            await store.save({("docs", "f1"): record()}, {})
        assert "cannot reach Qdrant collection s1" in await store.probe()

    run_with_stores(url, 1, scenario, "s1")


def test_a_refusing_qdrant_is_an_error_with_its_message(embedded_upstream):
    async def scenario(stores, metrics):
        with pytest.raises(StateStoreError, match="cannot create Qdrant collection .*: 4"):
            await stores[0].read()

    run_with_stores(embedded_upstream, 1, scenario, "bad name\x00")


# ---------------------------------------------------------------- the `state:` block


@pytest.mark.parametrize("text, message", [
    ("state: {store: qdrant}\nroutes: {bluegreen_state: {blue: a, green: b}}\n",
     "state.collection: `bluegreen_state` is a collection of route bluegreen_state"),
    ("state: {store: qdrant, collection: docs_v2}\nroutes: {docs: {blue: docs_v1, green: docs_v2}}\n",
     "state.collection: `docs_v2` is a collection of route docs"),
    ("state: {store: qdrant, collection: 'a/b'}\nroutes: {}\n", "state.collection: 'a/b': a collection name"),
    ("state: {store: etcd}\nroutes: {}\n", "state.store: must be one of 'file' or 'qdrant'"),
    ("state_file: /a.json\nstate: {path: /b.json}\nroutes: {}\n", "state_file: names another file than state.path"),
    ("state: {sync_interval: 0s}\nroutes: {}\n", "state.sync_interval: must be a positive duration"),
])
def test_state_settings_are_checked(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert message in str(caught.value)


def test_state_defaults_and_the_older_spelling():
    default = parse_config("routes: {}\n", environ={}).state
    assert (default.store, default.path, default.collection, default.sync_interval) == ("file", None, "bluegreen_state", 1.0)
    assert parse_config("state_file: /s.json\nroutes: {}\n", environ={}).state.path == "/s.json"
    qdrant = parse_config("state: {store: qdrant, sync_interval: 250ms}\nroutes: {docs: {blue: a, green: b}}\n", environ={})
    assert (qdrant.state.store, qdrant.state.sync_interval) == ("qdrant", 0.25)


def test_a_route_keeps_the_records_of_its_latest_configs(embedded_upstream):
    async def scenario(stores, metrics):
        store = stores[0]
        await store.save({("docs", "old"): record(latch=LATCH_A, fingerprint="old")}, {})
        await store.save({("kb", "k1"): record(fingerprint="k1")}, {})
        for n in range(KEEP_FINGERPRINTS + 2):
            await store.save({("docs", f"f{n}"): record(fingerprint=f"f{n}")}, {})
        return await store.read()

    stored = run_with_stores(embedded_upstream, 1, scenario)
    kept = sorted(fingerprint for name, fingerprint in stored if name == "docs")
    assert kept == [f"f{n}" for n in range(2, KEEP_FINGERPRINTS + 2)]
    assert ("kb", "k1") in stored  # another route's record is its own
