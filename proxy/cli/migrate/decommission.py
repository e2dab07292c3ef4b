"""`migrate decommission BLUE --archive DIR [--yes]`: snapshot BLUE into DIR, write its metadata, delete it.

Refused while an alias points at BLUE or (with --config) a route may still send it traffic: a route
whose blue is BLUE (blue serves collection info, failover and every rollback, whatever green_percent
says), or whose green is BLUE with green_percent above 0, a rollout, or writes to green. Without --yes
it prints what it would do and exits 1. Nothing is deleted unless the snapshot was downloaded whole
(size, and the sha256 checksum when the upstream gives one) and the metadata file written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK
from proxy.cli.migrate.connection import MigrateError, Target
from proxy.cli.qdrant_rest import collection_path, segment


def add_parser(commands, parents) -> None:
    parser = commands.add_parser("decommission", parents=parents, help="archive (snapshot + metadata) and delete BLUE")
    parser.add_argument("collection", metavar="BLUE")
    parser.add_argument("--archive", required=True, metavar="DIR", help="where the snapshot and metadata go")
    parser.add_argument("--yes", action="store_true", help="do it (without: print what would be done, exit 1)")
    parser.set_defaults(run=run)


def routes_using(config, collection: str) -> list[str]:
    reasons = []
    for name, route in (config.routes.items() if config is not None else ()):
        if route.blue == collection:
            reasons.append(f"route {name} has it as blue")
        elif route.green == collection and (route.green_percent > 0 or route.rollout or route.writes != "blue"):
            reasons.append(f"route {name} has it as green ({route.green_percent:g} %, writes {route.writes})")
    return reasons


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def run(args: argparse.Namespace, target: Target) -> int:
    name, archive = args.collection, Path(args.archive)
    async with target.client() as qdrant:
        all_aliases = await qdrant.aliases()
        if name in all_aliases:
            raise MigrateError(f"{name} is an alias (of {all_aliases[name]}), not a collection: name the collection")
        info = await qdrant.info(name)
        aliases = sorted(alias for alias, collection in all_aliases.items() if collection == name)
        refusals = [f"alias {alias} points at it" for alias in aliases] + routes_using(target.config, name)
        if refusals:
            raise MigrateError(f"refusing to decommission {name}: " + "; ".join(refusals)
                               + ". Move them to another collection first (migrate promote, the route's config).")
        points = await qdrant.count(name)
        stamp = datetime.now(timezone.utc)
        metadata_path = archive / f"{name}-{stamp:%Y%m%dT%H%M%SZ}.metadata.json"
        if not args.yes:
            print(f"would decommission {name} ({points} points):")
            print(f"  1. create a snapshot of {name} and download it into {archive}/")
            print(f"  2. write its metadata (config, payload schema, aliases, count) to {metadata_path}")
            print(f"  3. delete the collection {name}")
            print("nothing done: pass --yes to do it")
            return EXIT_FAILED
        archive.mkdir(parents=True, exist_ok=True)
        snapshot = await qdrant.call("POST", collection_path(name, "snapshots"), wait="true")
        snapshot_path = archive / snapshot["name"]
        size = await qdrant.download(collection_path(name, "snapshots", segment(snapshot["name"])), snapshot_path)
        if snapshot.get("size") is not None and size != snapshot["size"]:
            raise MigrateError(f"snapshot download incomplete: {size} of {snapshot['size']} bytes; {name} NOT deleted")
        checksum = _sha256(snapshot_path)
        if snapshot.get("checksum") and snapshot["checksum"] != checksum:
            raise MigrateError(f"snapshot checksum mismatch ({checksum} != {snapshot['checksum']}); {name} NOT deleted")
        metadata = {
            "name": name, "points_count": points, "config": info.get("config"),
            "payload_schema": info.get("payload_schema"), "aliases": aliases,
            "date": stamp.isoformat(timespec="seconds"), "upstream": target.url,
            "snapshot": {"file": snapshot_path.name, "size": size, "sha256": checksum,
                         "creation_time": snapshot.get("creation_time")},
        }
        temp = metadata_path.with_name(f".{metadata_path.name}.tmp")
        with open(temp, "w") as out:
            json.dump(metadata, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, metadata_path)
        if not await qdrant.call("DELETE", collection_path(name)):
            raise MigrateError(f"the upstream did not delete {name} (it answered false)")
    print(f"decommissioned {name} ({points} points): archived in {archive.resolve()}")
    print(f"  snapshot  {snapshot_path} ({size} bytes, sha256 {checksum[:16]}...)")
    print(f"  metadata  {metadata_path}")
    print(f"restore with Qdrant's snapshot recovery (PUT /collections/{name}/snapshots/upload or /snapshots/recover)")
    return EXIT_OK
