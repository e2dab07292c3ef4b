"""The rollout records kept across restarts and shared by replicas: the file store, the choice of
store, and the event-loop side that keeps the routes and their store in step.

`StateFile` is the file store's blocking I/O, run in worker threads (`FileStateStore`): a whole-file
read (no lock: the file is only ever replaced by rename), and a save that holds `fcntl.flock` on
`<file>.lock` around read -> merge -> write a unique temp file (`mkstemp` in the same directory) ->
fsync -> rename, so that concurrent writers (threads, processes, replicas on a shared volume) never
lose each other's records. `SharedRollouts` is the event-loop side, whatever the store: what each
route was derived from, the one writer task, and other replicas' newer records. The merge rule
itself is pure: `routing.replicas`.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from proxy.control.preflight import FetchJson
from proxy.control.qdrant_state_store import QdrantStateStore
from proxy.control.state_store import KEEP_FINGERPRINTS, Slot, StateStore, StateStoreError
from proxy.metrics import Metrics
from routing.config import Config, ConfigError
from routing.replicas import decisions, merge, version

log = logging.getLogger("bluegreen.rollout_store")

FILE_FORMAT = 2  # 2: {route: {fingerprint: record with `version`}}; format 1 ({route: record}) is read too


def default_state_file(config_path: str) -> Path:
    path = Path(config_path)
    return path.with_name(f"{path.stem}.state.json")


class StateFileError(StateStoreError, OSError):
    """The state file could not be written; the message says which file and why."""


class StateFile:
    def __init__(self, path: Path):
        self.path = path
        self.lock_path = path.with_name(f"{path.name}.lock")

    def prepare(self, config_path: str) -> None:
        """At start-up: refuse a path that holds something else (the config, a file that is not a state
        file: the first save would replace it), then remove the temp files a crash mid-save left.
        Raises StateFileError naming the file."""
        try:
            if os.path.exists(config_path) and self.path.exists() and self.path.samefile(config_path):
                raise StateFileError(f"state file {self.path} is the config file: name another file")
            if self.path.exists() and not _is_state_file(self.path):
                raise StateFileError(
                    f"state file {self.path} exists and is not a bluegreen-proxy state file: it would be "
                    "replaced; name another file (or remove this one)"
                )
            if self.path.parent.is_dir():
                with self._locked():  # a writer holds the lock while its temp file exists: these are stale
                    for stale in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
                        stale.unlink(missing_ok=True)
                        log.info("removed %s, left by a save that was cut off", stale)
        except StateFileError:
            raise
        except OSError as exc:
            raise StateFileError(f"cannot use state file {self.path}: {exc.strerror or exc}") from None

    def owns(self, path: str) -> bool:
        """The state file, its lock or one of its temp files (their changes are not config changes)."""
        name = Path(path).name
        return name in (self.path.name, self.lock_path.name) or name.startswith(f".{self.path.name}.")

    def read(self) -> dict[Slot, dict]:
        """Every record by (route, fingerprint); {} when the file is absent or unreadable (logged)."""
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("cannot read state file %s: %s", self.path, exc)
            return {}
        routes = document.get("routes") if isinstance(document, dict) else None
        if not isinstance(routes, dict):
            return {}
        records = {}
        for name, by_fingerprint in routes.items():
            if isinstance(by_fingerprint, dict) and isinstance(by_fingerprint.get("fingerprint"), str):
                by_fingerprint = {by_fingerprint["fingerprint"]: by_fingerprint}  # format 1
            for fingerprint, record in (by_fingerprint.items() if isinstance(by_fingerprint, dict) else ()):
                if isinstance(record, dict) and record.get("fingerprint") == fingerprint:
                    records[(name, fingerprint)] = record
        return records

    def save(self, local: dict[Slot, dict], bases: dict[Slot, dict | None]) -> dict[Slot, dict]:
        """Merge each `local` record (derived from `bases[slot]`) into the file under the lock; the
        records as stored afterwards. Raises StateFileError when it cannot be written."""
        try:
            with self._locked():
                records = self.read()
                changed = False
                for slot, record in local.items():
                    stored, base = records.get(slot), bases.get(slot)
                    merged = merge(stored, record, base)
                    if decisions(merged) != decisions(stored):
                        version_now = max(version(stored), version(base)) + 1
                        records[slot] = {**merged, "version": version_now, "saved_at": time.time()}
                        changed = True
                if changed:
                    self._replace(records)
                return {slot: records[slot] for slot in local}
        except OSError as exc:
            raise StateFileError(f"cannot write state file {self.path}: {exc.strerror or exc}") from None

    def probe(self) -> str | None:
        """Whether a save could take the lock now (the directory exists and is writable): the error or None."""
        try:
            with self._locked():
                pass
        except OSError as exc:
            return f"cannot write state file {self.path}: {exc.strerror or exc}"
        return None

    @contextlib.contextmanager
    def _locked(self):
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _replace(self, records: dict[Slot, dict]) -> None:
        routes: dict[str, dict[str, dict]] = {}
        for (name, fingerprint), record in sorted(records.items(), key=lambda item: -(item[1].get("saved_at") or 0)):
            kept = routes.setdefault(name, {})
            if len(kept) < KEEP_FINGERPRINTS:
                kept[fingerprint] = record
        document = {"version": FILE_FORMAT, "updated_at": time.time(), "routes": routes}
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        with contextlib.suppress(OSError):  # the rename itself survives a crash once the directory is synced
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


def _is_state_file(path: Path) -> bool:
    """Empty, or a JSON object with `routes`: what this module writes (formats 1 and 2)."""
    with open(path, "rb") as handle:
        head = handle.read(1)
        if not head:
            return True
        try:
            document = json.loads(head + handle.read())
        except ValueError:
            return False
    return isinstance(document, dict) and isinstance(document.get("routes"), dict)


class FileStateStore(StateStore):
    """The state file as a store: its blocking I/O in worker threads."""

    kind = "file"

    def __init__(self, file: StateFile):
        self.file = file

    def describe(self) -> str:
        return f"state file {self.file.path}"

    def details(self) -> dict:
        return {"store": self.kind, "path": str(self.file.path)}

    def owns(self, path: str) -> bool:
        return self.file.owns(path)

    async def read(self) -> dict[Slot, dict]:
        return await asyncio.to_thread(self.file.read)

    async def save(self, local: dict[Slot, dict], bases: dict[Slot, dict | None]) -> dict[Slot, dict]:
        return await asyncio.to_thread(self.file.save, local, bases)

    async def probe(self) -> str | None:
        return await asyncio.to_thread(self.file.probe)


async def open_state_store(
    config: Config, config_path: str, fetch: FetchJson, metrics: Metrics, import_from: str | None = None,
) -> StateStore:
    """The store `state:` names, ready to read. Raises ConfigError when it must not be used (a state
    file that is something else); an unreachable Qdrant is not that: it is retried while serving."""
    settings = config.state
    if settings.store == "qdrant":
        store = QdrantStateStore(fetch, settings.collection, metrics)
        if import_from and not os.path.isfile(import_from):
            raise ConfigError(f"--import-state: {import_from} is not a file")
        source = import_from or settings.path
        records = await asyncio.to_thread(StateFile(Path(source)).read) if source else None
        await store.open(records, source or "")
        return store
    if import_from:
        raise ConfigError("--import-state: imports a state file into the Qdrant store (state: {store: qdrant})")
    file = StateFile(Path(settings.path) if settings.path else default_state_file(config_path))
    try:
        await asyncio.to_thread(file.prepare, config_path)
    except StateFileError as exc:
        raise ConfigError(f"{'state_file' if config.state_file else 'state.path'}: {exc}") from None
    return FileStateStore(file)


async def read_at_start(store: StateStore) -> dict[Slot, dict]:
    """The saved records the rollouts are built from, before serving; {} when the store cannot be
    read now (its records are adopted at the first sync that can read them)."""
    try:
        return await store.read()
    except StateStoreError as exc:
        log.error("%s; starting without saved rollout decisions until it can be read", exc)
        return {}


class SharedRollouts:
    """Keeps the routes' rollouts and the state store in step, from the event loop.

    `current()` gives each route's record now; `adopt(name, record)` replaces a route's rollout with
    a record read or merged from the store. Per (route, fingerprint), `base` is the stored record the
    rollout was last derived from; a rollout whose decisions differ from its base has a change to save.
    """

    def __init__(self, store: StateStore, metrics: Metrics, current: Callable[[], dict[str, dict]],
                 adopt: Callable[[str, dict], None]):
        self.store = store
        self.current = current
        self.adopt = adopt
        self.bases: dict[Slot, dict] = {}
        self.error: str | None = None  # the last read's or save's failure, until one succeeds
        self.last_sync: float | None = None  # when the store last answered a read or a save
        self._writer: asyncio.Task | None = None
        counters = metrics.state_store
        self._reads, self._writes = counters["reads"].labels(store.kind), counters["writes"].labels(store.kind)
        self._read_errors = counters["errors"].labels(store.kind, "read")
        self._write_errors = counters["errors"].labels(store.kind, "write")
        counters["conflicts"].labels(store.kind)  # exported at 0; the Qdrant store counts them

    def unsaved(self) -> dict[Slot, dict]:
        changed = {}
        for name, record in self.current().items():
            slot = (name, record["fingerprint"])
            if decisions(record) != decisions(self.bases.get(slot)):
                changed[slot] = record
        return changed

    def save_changes(self) -> None:
        """Start the writer when a route has a decision its base does not."""
        if (self._writer is None or self._writer.done()) and self.unsaved():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def flush(self) -> None:
        """Return once the writer is idle (everything queued saved, or its save failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def persist(self, name: str) -> str | None:
        """Save now; None once the route's decisions are in the store, else why not."""
        self.save_changes()
        await self.flush()
        if any(slot[0] == name for slot in self.unsaved()):
            return self.error or f"{self.store.describe()} not yet written"
        return None

    async def sync(self) -> None:
        """Adopt the routes another replica saved since we last saw them."""
        if self._writer is not None and not self._writer.done():
            return  # the writer merges and adopts what it finds
        stored = await self._read()
        if stored is None or (self._writer is not None and not self._writer.done()):
            self.save_changes()
            return
        current = self.current()
        for (name, fingerprint), record in stored.items():
            local, base = current.get(name), self.bases.get((name, fingerprint))
            if local is None or local["fingerprint"] != fingerprint:
                continue  # a route or config this replica does not serve (yet)
            if base is not None and version(record) <= version(base):
                continue
            if decisions(local) != decisions(base):
                continue  # we have a change of our own to save: the save merges the two
            self.bases[(name, fingerprint)] = record
            if decisions(record) != decisions(local):
                self.adopt(name, record)
        self.save_changes()  # retries a failed save, too

    async def probe(self) -> str | None:
        """Why decisions cannot be kept now (the store cannot be written), or the last failure."""
        return await self.store.probe() or self.error

    async def _read(self) -> dict[Slot, dict] | None:
        """Every stored record, or None when the store cannot be read (the error kept and logged once)."""
        try:
            stored = await self.store.read()
        except StateStoreError as exc:
            self._read_errors.inc()
            self._failed(str(exc))
            return None
        self._reads.inc()
        self._answered()
        return stored

    def _failed(self, error: str) -> None:
        if self.error != error:
            log.error("%s: rollout decisions will not survive a restart nor reach other replicas", error)
        self.error = error

    def _answered(self) -> None:
        if self.error is not None:
            log.info("%s answers again", self.store.describe())
        self.error = None
        self.last_sync = time.time()

    async def _write(self) -> None:
        """The one writer: saves what changed, then adopts what the merge kept of other replicas'."""
        while True:
            local = self.unsaved()
            if not local:
                return
            bases = {name: self.bases.get(name) for name in local}
            try:
                stored = await self.store.save(local, bases)
            except StateStoreError as exc:
                self._write_errors.inc()
                self._failed(str(exc))
                return  # retried at the next change or sync
            self._writes.inc()
            self._answered()
            now = self.current()
            for (name, fingerprint), record in stored.items():
                self.bases[(name, fingerprint)] = record
                current = now.get(name)
                if current is None or current["fingerprint"] != fingerprint:
                    continue  # removed or reconfigured during the save
                written = local[(name, fingerprint)]
                if decisions(current) != decisions(written):
                    # Changed during the save: merge that change over what is stored, as a save would.
                    merged = merge(record, current, {**written, "version": version(bases[(name, fingerprint)])})
                else:
                    merged = record
                if decisions(merged) != decisions(current):
                    self.adopt(name, merged)
