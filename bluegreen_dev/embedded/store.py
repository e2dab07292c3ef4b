"""Collections (one qdrant-edge shard each) and aliases, persisted under the data directory.

    DATA/collections/<name>/shard/             the EdgeShard directory
    DATA/collections/<name>/collection.json    the create request as Qdrant received it (info, restarts)
    DATA/aliases.json                          {alias: collection}

collection.json is written only after the shard exists, so a directory without it is a create that
never finished: skipped at start and replaced by the next create of that name.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
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


def validate_name(name: str) -> None:
    bad = next((c for c in FORBIDDEN_NAME_CHARS if c in name), None)
    if bad is not None or not name or name in (".", "..") or len(name) > MAX_NAME_LENGTH:
        problem = f"collection name cannot contain {json.dumps(bad)} char" if bad else "invalid collection name"
        raise ApiError(422, f"Validation error in path parameters: [name: {problem}]")


class Collection:
    def __init__(self, name: str, directory: Path, shard: qe.EdgeShard, create: models.CreateCollection):
        self.name = name
        self.directory = directory
        self.shard = shard
        self.create = create
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
                field: {"data_type": str(index.data_type).rpartition(".")[2].lower(), "points": index.points}
                for field, index in shard.payload_schema.items()
            },
        }

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
        self.collections[meta["name"]] = Collection(meta["name"], directory, shard, create)

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
        _write_json(directory / META_FILE, {"name": name, "config": _dump(create)})
        self.collections[name] = Collection(name, directory, shard, create)

    def delete(self, name: str) -> bool:
        """Like Qdrant: by the collection's own name only (never through an alias), false if absent."""
        collection = self.collections.pop(name, None)
        if collection is None:
            return False
        collection.close()
        shutil.rmtree(collection.directory)
        if name in self.aliases.values():
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

    def close(self) -> None:
        for collection in self.collections.values():
            collection.close()
        self.collections.clear()
        self._lock.close()
