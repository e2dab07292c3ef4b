"""Collections (one qdrant-edge shard each) and aliases, persisted under the data directory.

    DATA/collections/<name>/shard/             the EdgeShard directory
    DATA/collections/<name>/collection.json    the create request as Qdrant received it (info, restarts),
                                               and the payload index requests (their parameters)
    DATA/aliases.json                          {alias: collection}
    DATA/snapshots/<name>/<snapshot>           collection snapshots (see Store.create_snapshot)

collection.json is written only after the shard exists, so a directory without it is a create that
never finished: skipped at start and replaced by the next create of that name.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from qdrant_client.http import models

from bluegreen_dev.embedded.convert import PointId, edge_config, effective_hnsw
from bluegreen_dev.embedded.errors import ApiError, collection_not_found, not_found, wrong_input

log = logging.getLogger(__name__)

COLLECTIONS_DIR = "collections"
SHARD_DIR = "shard"
META_FILE = "collection.json"
ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"
SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_SUFFIX = ".snapshot"

# Qdrant's rule for collection names; it also keeps every name a single safe directory name.
FORBIDDEN_NAME_CHARS = '<>:"/\\|?*\0\x1f'
MAX_NAME_LENGTH = 255

# What Qdrant reports for settings a create request leaves out.
OPTIMIZER_DEFAULTS = {
    "deleted_threshold": 0.2, "vacuum_min_vector_number": 1000, "default_segment_number": 0,
    "max_segment_size": None, "memmap_threshold": None, "indexing_threshold": 10000,
    "flush_interval_sec": 5, "max_optimization_threads": None,
}
WAL_DEFAULTS = {"wal_capacity_mb": 32, "wal_segments_ahead": 0}


def _write_json(path: Path, value: Any) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(value, indent=1))
    os.replace(temp, path)


def _dump(model: Any) -> dict:
    return {} if model is None else model.model_dump(mode="json", exclude_none=True)


def _snapshot_description(path: Path) -> dict:
    """Qdrant's SnapshotDescription: name, creation_time (UTC, no zone), size, sha256 checksum."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    stat = path.stat()
    created = datetime.fromtimestamp(stat.st_mtime, timezone.utc).replace(tzinfo=None)
    return {"name": path.name, "creation_time": created.isoformat(timespec="seconds"), "size": stat.st_size,
            "checksum": digest.hexdigest()}


def validate_name(name: str) -> None:
    bad = next((c for c in FORBIDDEN_NAME_CHARS if c in name), None)
    if bad is not None or not name or name in (".", "..") or len(name) > MAX_NAME_LENGTH:
        problem = f"collection name cannot contain {json.dumps(bad)} char" if bad else "invalid collection name"
        raise ApiError(422, f"Validation error in path parameters: [name: {problem}]")


class Collection:
    def __init__(self, name: str, directory: Path, shard: qe.EdgeShard, create: models.CreateCollection,
                 index_params: dict[str, dict] | None = None):
        self.name = name
        self.directory = directory
        self.shard = shard
        self.create = create
        # Parameterised payload indexes as requested ({field: {"type": "keyword", "is_tenant": true}}):
        # edge reports only their data type; Qdrant's info shows the parameters too.
        self.index_params = index_params or {}
        self.operation_id = 0  # Qdrant numbers each collection's updates; only the sequence matters here

    def apply(self, operation: qe.UpdateOperation) -> int:
        """Apply a write, make it durable, then let the optimizers do what is due.

        optimize() is a no-op (~50 us) until a segment crosses the indexing threshold (10,000 KB by
        default, ~6,500 384-dim points); then it builds the HNSW index inside this request, like a
        wait=true write that also waited for Qdrant's background optimizer. Below the threshold, plain
        segments are searched exhaustively, which is as fast as HNSW at that size.
        """
        self.shard.update(operation)
        self.shard.flush()
        self.shard.optimize()
        self.operation_id += 1
        return self.operation_id

    def record_index(self, field: str, params: dict | None) -> None:
        """Remember a payload index's parameters (None: a plain type, or the index was deleted)."""
        if params is None:
            self.index_params.pop(field, None)
        else:
            self.index_params[field] = params
        _write_json(self.directory / META_FILE, self.meta())

    def meta(self) -> dict:
        return {"name": self.name, "config": _dump(self.create), "payload_index_params": self.index_params}

    def fetch_vector(self, point_id: PointId, vector_name: str) -> Any:
        records = self.shard.retrieve([point_id], with_payload=False, with_vector=[vector_name] if vector_name else True)
        if not records:
            raise not_found(f"No point with id {point_id} found")
        vector = records[0].vector
        if isinstance(vector, dict):
            if vector_name not in vector:
                raise wrong_input(f"Not existing vector name error: {vector_name}")
            return vector[vector_name]
        return vector

    def info(self) -> dict:
        """The body of GET /collections/{name}, in the shape qdrant-client parses into CollectionInfo."""
        create = self.create
        vectors = create.vectors
        params = {
            "vectors": _dump(vectors) if isinstance(vectors, models.VectorParams)
            else {name: _dump(p) for name, p in (vectors or {}).items()},
            "shard_number": 1,
            "replication_factor": 1,
            "write_consistency_factor": 1,
            "on_disk_payload": create.on_disk_payload if create.on_disk_payload is not None else True,
        }
        if create.sparse_vectors:
            params["sparse_vectors"] = {name: _dump(p) for name, p in create.sparse_vectors.items()}
        optimizers = {**OPTIMIZER_DEFAULTS, **_dump(create.optimizers_config)}
        if not isinstance(optimizers["max_optimization_threads"], int):
            optimizers["max_optimization_threads"] = None  # "auto" is how a request says "unset"
        config = {
            "params": params,
            "hnsw_config": effective_hnsw(create.hnsw_config),
            "optimizer_config": optimizers,
            "wal_config": {**WAL_DEFAULTS, **_dump(create.wal_config)},
            "quantization_config": _dump(create.quantization_config) or None,
        }
        if create.metadata:
            config["metadata"] = create.metadata
        shard = self.shard.info()
        return {
            "status": "green",
            "optimizer_status": "ok",
            "indexed_vectors_count": shard.indexed_vectors_count,
            "points_count": shard.points_count,
            "segments_count": shard.segments_count,
            "config": config,
            "payload_schema": {
                # edge's enum prints as `PayloadSchemaType.Keyword`; Qdrant's name is `keyword`
                field: self._index_info(field, index) for field, index in shard.payload_schema.items()
            },
        }

    def _index_info(self, field: str, index: Any) -> dict:
        # edge's enum prints as `PayloadSchemaType.Keyword`; Qdrant's name is `keyword`
        info = {"data_type": str(index.data_type).rpartition(".")[2].lower(), "points": index.points}
        if field in self.index_params:
            info["params"] = self.index_params[field]
        return info

    def close(self) -> None:
        self.shard.close()


class Store:
    """Every collection's shard stays open for the life of the process; see Collection.apply for writes."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.collections_dir = data_dir / COLLECTIONS_DIR
        self.collections_dir.mkdir(parents=True, exist_ok=True)
        self._lock = self._lock_data_dir()
        self.collections: dict[str, Collection] = {}
        for directory in sorted(self.collections_dir.iterdir()):
            if (directory / META_FILE).is_file():
                self._load(directory)
            else:
                log.warning("skipping %s: no %s (a create that did not finish)", directory, META_FILE)
        aliases_path = data_dir / ALIASES_FILE
        stored = json.loads(aliases_path.read_text()) if aliases_path.is_file() else {}
        self.aliases: dict[str, str] = {a: c for a, c in stored.items() if c in self.collections}

    def _lock_data_dir(self):
        # Only one process may open a shard directory; a second server on the same data fails fast.
        handle = open(self.data_dir / LOCK_FILE, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(f"{self.data_dir} is in use by another embedded upstream") from None
        return handle

    def _load(self, directory: Path) -> None:
        meta = json.loads((directory / META_FILE).read_text())
        create = models.CreateCollection.model_validate(meta["config"])
        shard = qe.EdgeShard.load(str(directory / SHARD_DIR))
        self.collections[meta["name"]] = Collection(
            meta["name"], directory, shard, create, meta.get("payload_index_params"))

    def resolve(self, name: str) -> Collection:
        """A collection by its name or one of its aliases."""
        collection = self.collections.get(name) or self.collections.get(self.aliases.get(name, ""))
        if collection is None:
            raise collection_not_found(name)
        return collection

    def exists(self, name: str) -> bool:
        return name in self.collections or name in self.aliases

    def create(self, name: str, create: models.CreateCollection) -> None:
        validate_name(name)
        if name in self.collections:
            raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
        if name in self.aliases:
            raise ApiError(409, f"Wrong input: Can't create collection with name {name}. Alias with the same name already exists")
        config = edge_config(create)
        directory = self.collections_dir / name
        shutil.rmtree(directory, ignore_errors=True)  # leftovers of a create that did not finish
        try:
            shard = qe.EdgeShard.create(str(directory / SHARD_DIR), config)
        except Exception:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        collection = Collection(name, directory, shard, create)
        _write_json(directory / META_FILE, collection.meta())
        self.collections[name] = collection

    def delete(self, name: str, keep_aliases: bool = False) -> bool:
        """Like Qdrant: by the collection's own name only (never through an alias), false if absent."""
        collection = self.collections.pop(name, None)
        if collection is None:
            return False
        collection.close()
        shutil.rmtree(collection.directory)
        if not keep_aliases and name in self.aliases.values():
            self.aliases = {a: c for a, c in self.aliases.items() if c != name}
            _write_json(self.data_dir / ALIASES_FILE, self.aliases)
        return True

    def change_aliases(self, actions: list) -> None:
        """All actions or none: they are applied to a copy, which replaces the aliases only at the end."""
        aliases = dict(self.aliases)
        for action in actions:
            if isinstance(action, models.CreateAliasOperation):
                alias, collection = action.create_alias.alias_name, action.create_alias.collection_name
                if collection not in self.collections:
                    raise collection_not_found(collection)
                if alias in self.collections:
                    raise wrong_input(f"Alias `{alias}` clashes with the collection of the same name")
                aliases[alias] = collection
            elif isinstance(action, models.DeleteAliasOperation):
                alias = action.delete_alias.alias_name
                if aliases.pop(alias, None) is None:
                    raise not_found(f"Alias `{alias}` doesn't exist!")
            else:
                old, new = action.rename_alias.old_alias_name, action.rename_alias.new_alias_name
                if old not in aliases:
                    raise not_found(f"Alias `{old}` doesn't exist!")
                if new in self.collections:
                    raise wrong_input(f"Alias `{new}` clashes with the collection of the same name")
                aliases[new] = aliases.pop(old)
        _write_json(self.data_dir / ALIASES_FILE, aliases)
        self.aliases = aliases

    # ------------------------------------------------------------ snapshots

    def snapshots_dir(self, name: str) -> Path:
        return self.data_dir / SNAPSHOTS_DIR / name

    def create_snapshot(self, name: str) -> dict:
        """A gzipped tar of the collection's directory: collection.json and the shard directory.

        Handlers run one at a time and every write is flushed before it is acknowledged, so the
        directory is consistent while it is read. Named like Qdrant's: `{collection}-0-{time}.snapshot`.
        """
        collection = self.resolve(name)
        directory = self.snapshots_dir(collection.name)
        directory.mkdir(parents=True, exist_ok=True)
        created = datetime.now(timezone.utc).replace(tzinfo=None)
        base = f"{collection.name}-0-{created:%Y-%m-%d-%H-%M-%S}"
        snapshot = directory / f"{base}{SNAPSHOT_SUFFIX}"
        suffix = 1
        while snapshot.exists():
            snapshot, suffix = directory / f"{base}-{suffix}{SNAPSHOT_SUFFIX}", suffix + 1
        collection.shard.flush()
        temp = snapshot.with_name(f".{snapshot.name}.tmp")
        with tarfile.open(temp, "w:gz", compresslevel=1) as tar:  # the shard's files are mostly preallocated zeros
            tar.add(collection.directory / META_FILE, arcname=META_FILE)
            tar.add(collection.directory / SHARD_DIR, arcname=SHARD_DIR)
        os.replace(temp, snapshot)
        return _snapshot_description(snapshot)

    def list_snapshots(self, name: str) -> list[dict]:
        directory = self.snapshots_dir(self.resolve(name).name)
        if not directory.is_dir():
            return []
        return [_snapshot_description(p) for p in sorted(directory.glob(f"*{SNAPSHOT_SUFFIX}"))]

    def snapshot_file(self, name: str, snapshot: str) -> Path:
        """The file of one snapshot of a collection (which may be deleted since, as in Qdrant)."""
        collection = self.collections.get(name) or self.collections.get(self.aliases.get(name, ""))
        path = self.snapshots_dir(collection.name if collection else name) / snapshot
        if "/" in snapshot or snapshot.startswith(".") or not path.is_file():
            raise not_found(f"Snapshot {snapshot} of collection {name} not found")
        return path

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self.snapshot_file(name, snapshot).unlink()

    def recover(self, name: str, snapshot: Path) -> None:
        """Replace (or create) collection `name` with a snapshot's contents, as Qdrant's recovery does."""
        validate_name(name)
        staging = self.collections_dir / f".recover-{name}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with tarfile.open(snapshot) as tar:
                tar.extractall(staging, filter="data")
            meta = json.loads((staging / META_FILE).read_text())
        except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise wrong_input(f"Invalid snapshot {snapshot.name}: {exc}") from None
        if name in self.collections:
            self.delete(name, keep_aliases=True)
        meta["name"] = name
        _write_json(staging / META_FILE, meta)
        directory = self.collections_dir / name
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
        self._load(directory)

    def close(self) -> None:
        for collection in self.collections.values():
            collection.close()
        self.collections.clear()
        self._lock.close()
