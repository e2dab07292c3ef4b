"""The Qdrant state store: the rollout records as points of one collection on the upstream itself.

One point per (route, config fingerprint), its id derived from both so every replica names the same
point; the payload is the record (`routing.replicas`) plus `route` and `writer`, a token unique to
each write. A save is a compare-and-set: read the point, merge by the same rule as the file store,
then upsert with `update_filter` on the `version` it read (`update_mode: update_only`; a new point
`insert_only`), `wait=true` and `ordering=strong`. Qdrant answers "completed" whether or not the
filter matched, so the writer reads the point back: its own `writer` token means it won; another's
means a conflict, and the merge runs again over what won. Reads ask for `consistency=majority`.

The calls go through the proxy's own upstream client (`UpstreamClient.fetch_json`): the key, TLS and
timeout the proxy already uses for Qdrant, no second client to configure.
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from proxy.control.preflight import FetchJson
from proxy.control.state_store import KEEP_FINGERPRINTS, Slot, StateStore, StateStoreError
from proxy.dataplane.upstream import UpstreamFailure
from proxy.metrics import Metrics
from routing.replicas import decisions, merge, version
from routing.table import quote_segment

log = logging.getLogger("bluegreen.state_store")

# Fixed, so that every replica derives the same point id for a route and fingerprint.
POINT_NAMESPACE = uuid.UUID("6f1d3a52-2c1e-4b7e-9a55-0b1e6e5a7c01")
# A collection needs a vector in some Qdrant builds: the smallest one there is.
COLLECTION_BODY = json.dumps({"vectors": {"size": 1, "distance": "Dot"}}).encode()
PLACEHOLDER_VECTOR = [1.0]
MAX_ATTEMPTS = 8  # conditional writes per record and save, each lost to another replica, before giving up
PAGE_SIZE = 256
WRITE_PARAMS = "?wait=true&ordering=strong"
READ_PARAMS = "?consistency=majority"
_NOT_RECORD = ("route", "writer")


def point_id(slot: Slot) -> str:
    name, fingerprint = slot
    return str(uuid.uuid5(POINT_NAMESPACE, f"{name}\n{fingerprint}"))


class QdrantStateStore(StateStore):
    kind = "qdrant"

    def __init__(self, fetch: FetchJson, collection: str, metrics: Metrics):
        self.fetch = fetch
        self.collection = collection
        self._path = f"/collections/{quote_segment(collection)}"
        self._ready = False  # the collection is known to exist (and any import is done)
        self._import: tuple[str, dict[Slot, dict]] | None = None  # (where from, records) until imported
        self._conflicts = metrics.state_store["conflicts"].labels(self.kind)

    def describe(self) -> str:
        return f"Qdrant collection {self.collection}"

    def details(self) -> dict:
        return {"store": self.kind, "collection": self.collection}

    async def open(self, import_records: dict[Slot, dict] | None = None, source: str = "") -> None:
        """Create the collection if it is missing and put `import_records` (read from `source`, a state
        file) into it if it is empty. An unreachable Qdrant is logged, not fatal: both happen at the
        first read or save that reaches it."""
        self._import = (source, import_records) if import_records else None
        try:
            await self._prepared()
        except StateStoreError as exc:
            log.error("%s; retried while serving", exc)

    async def read(self) -> dict[Slot, dict]:
        await self._prepared()
        return await self._read_all()

    async def save(self, local: dict[Slot, dict], bases: dict[Slot, dict | None]) -> dict[Slot, dict]:
        await self._prepared()
        return {slot: await self._save_one(slot, record, bases.get(slot)) for slot, record in local.items()}

    async def probe(self) -> str | None:
        try:
            if self._ready:
                await self._expect_ok("GET", self._path, b"")
            else:
                await self._prepared()
        except StateStoreError as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------ internals

    async def _save_one(self, slot: Slot, record: dict, base: dict | None) -> dict:
        stored, _ = await self._get(slot)
        for _ in range(MAX_ATTEMPTS):
            merged = merge(stored, record, base)
            if stored is not None and decisions(merged) == decisions(stored):
                return stored  # nothing of ours to add to what is stored
            written = {**merged, "version": max(version(stored), version(base)) + 1, "saved_at": time.time()}
            writer = uuid.uuid4().hex
            await self._put(slot, written, writer, expected_version=None if stored is None else version(stored))
            after, after_writer = await self._get(slot)
            if after_writer == writer:
                if stored is None:
                    await self._prune(slot[0])  # a new config's record: the oldest may go
                return after
            self._conflicts.inc()
            stored = after  # another replica's write won: merge over it
        raise StateStoreError(
            f"{self.describe()}: route {slot[0]}: {MAX_ATTEMPTS} conditional writes in a row lost to other "
            "replicas' writes (retried)"
        )

    async def _prune(self, name: str) -> None:
        """Keep the route's latest KEEP_FINGERPRINTS records, as the file store does. A failure only
        leaves an old record for the next new config's save to remove."""
        request = {"limit": PAGE_SIZE, "with_payload": True, "with_vector": False,
                   "filter": {"must": [{"key": "route", "match": {"value": name}}]}}
        try:
            result = await self._expect_ok("POST", f"{self._path}/points/scroll{READ_PARAMS}", json.dumps(request).encode())
            points = [point for point in (result or {}).get("points") or () if isinstance(point.get("payload"), dict)]
            if len(points) <= KEEP_FINGERPRINTS:
                return
            points.sort(key=lambda point: -(point["payload"].get("saved_at") or 0))
            old = [point["id"] for point in points[KEEP_FINGERPRINTS:]]
            await self._expect_ok("POST", f"{self._path}/points/delete{WRITE_PARAMS}", json.dumps({"points": old}).encode())
        except StateStoreError as exc:
            log.warning("%s: old records of route %s not removed: %s", self.describe(), name, exc)

    async def _put(self, slot: Slot, record: dict, writer: str, expected_version: int | None) -> None:
        """Upsert the record only where the stored point still has `expected_version` (None: only
        where there is no point yet)."""
        body: dict = {"points": [{
            "id": point_id(slot), "vector": PLACEHOLDER_VECTOR, "payload": {**record, "route": slot[0], "writer": writer},
        }]}
        if expected_version is None:
            body["update_mode"] = "insert_only"
        else:
            body["update_mode"] = "update_only"
            body["update_filter"] = {"must": [{"key": "version", "match": {"value": expected_version}}]}
        await self._expect_ok("PUT", f"{self._path}/points{WRITE_PARAMS}", json.dumps(body).encode())

    async def _get(self, slot: Slot) -> tuple[dict | None, str | None]:
        """The stored record and the token of the write that stored it; (None, None) when absent."""
        body = json.dumps({"ids": [point_id(slot)], "with_payload": True, "with_vector": False}).encode()
        result = await self._expect_ok("POST", f"{self._path}/points{READ_PARAMS}", body)
        for point in result if isinstance(result, list) else ():
            found = _record(point.get("payload") if isinstance(point, dict) else None)
            if found is not None and found[0] == slot:
                return found[1], point["payload"].get("writer")
        return None, None

    async def _read_all(self) -> dict[Slot, dict]:
        records: dict[Slot, dict] = {}
        offset = None
        while True:
            request = {"limit": PAGE_SIZE, "with_payload": True, "with_vector": False}
            if offset is not None:
                request["offset"] = offset
            result = await self._expect_ok("POST", f"{self._path}/points/scroll{READ_PARAMS}", json.dumps(request).encode())
            points = result.get("points") if isinstance(result, dict) else None
            for point in points if isinstance(points, list) else ():
                found = _record(point.get("payload") if isinstance(point, dict) else None)
                if found is not None:
                    records[found[0]] = found[1]
            offset = result.get("next_page_offset") if isinstance(result, dict) else None
            if offset is None:
                return records

    async def _prepared(self) -> None:
        """The collection exists (created if missing) and the pending import, if any, is done."""
        if self._ready:
            return
        status, document = await self._call("GET", self._path, b"")
        if status == 404:
            status, document = await self._call("PUT", self._path, COLLECTION_BODY)
            if status == 200:
                log.info("created %s for the rollout state", self.describe())
            elif status != 409:  # 409: another replica created it first
                raise self._refused("create", status, document)
        elif status != 200:
            raise self._refused("read", status, document)
        if self._import is not None:
            await self._import_records(*self._import)
            self._import = None
        self._ready = True

    async def _import_records(self, source: str, records: dict[Slot, dict]) -> None:
        """An upgrade from the file store: its records, into an empty collection only."""
        if await self._read_all():
            log.info("%s already holds rollout records: %s not imported", self.describe(), source)
            return
        for slot, record in records.items():
            await self._put(slot, {**record, "version": max(1, version(record))}, "import", expected_version=None)
        log.info("imported %d rollout records from %s into %s", len(records), source, self.describe())

    async def _expect_ok(self, method: str, path: str, body: bytes):
        """The `result` of a 200 answer; StateStoreError for anything else (a missing collection is
        created again at the next call)."""
        status, document = await self._call(method, path, body)
        if status != 200 or document is None:
            if status == 404:
                self._ready = False
            raise self._refused("write" if method == "PUT" else "read", status, document)
        return document.get("result")

    async def _call(self, method: str, path: str, body: bytes) -> tuple[int, dict | None]:
        try:
            return await self.fetch(method, path, body)
        except (UpstreamFailure, OSError) as exc:
            raise StateStoreError(f"cannot reach {self.describe()}: {exc}") from None

    def _refused(self, action: str, status: int, document: dict | None) -> StateStoreError:
        error = (document or {}).get("status")
        detail = error.get("error") if isinstance(error, dict) else f"HTTP {status}"
        return StateStoreError(f"cannot {action} {self.describe()}: {status} {detail}")


def _record(payload) -> tuple[Slot, dict] | None:
    """A point's payload as (slot, record); None for a point that is not a rollout record."""
    if not isinstance(payload, dict):
        return None
    name, fingerprint = payload.get("route"), payload.get("fingerprint")
    if not isinstance(name, str) or not isinstance(fingerprint, str):
        return None
    return (name, fingerprint), {key: value for key, value in payload.items() if key not in _NOT_RECORD}
