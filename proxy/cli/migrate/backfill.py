"""`migrate backfill`: scroll BLUE in id order and upsert into GREEN, copying the vectors or re-embedding a
payload text field; resumable from a checkpoint, idempotent, rate-limited, retried.

Each batch: scroll BLUE from the checkpoint's offset (Qdrant's scroll without `order_by` walks ids in
order), read the same ids from GREEN, and upsert (`wait=true`) only the points GREEN does not already
hold identically (payload with the stamps, and in copy mode the vectors). Only then is the checkpoint
written. So a crash re-reads at most the one batch whose write was acknowledged but not yet recorded,
and a run over a complete copy writes nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from proxy.cli.exit_codes import EXIT_OK
from proxy.cli.migrate.checkpoint import Checkpoint, default_checkpoint, fingerprint
from proxy.cli.migrate.connection import MigrateError, Target, positive_float, positive_int
from proxy.cli.migrate.green_layout import LayoutError, pick_vector
from proxy.cli.migrate.point_compare import payload_differences, same_vector
from proxy.cli.migrate.progress import Progress
from proxy.cli.qdrant_rest import QdrantRest, UpstreamError, UpstreamUnreachable, collection_path
from proxy.embedding.embedders import EmbedderError
from routing.layout import vector_params, vectors_of

# An embedder that cannot load its model, answers the wrong dimension or was closed will not recover
# by waiting; timeouts, connection failures and error statuses of a service may.
PERMANENT_EMBEDDER_FAILURES = frozenset({"model", "dimensions", "closed"})
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 10.0


def add_parser(commands, parents) -> None:
    parser = commands.add_parser("backfill", parents=parents, help="copy (or re-embed) BLUE's points into GREEN, resumably")
    parser.add_argument("--from", dest="source", required=True, metavar="BLUE")
    parser.add_argument("--to", dest="target", required=True, metavar="GREEN")
    parser.add_argument("--batch", type=positive_int, default=256, help="points per scroll page and upsert (default 256)")
    parser.add_argument("--rate", type=positive_float, help="at most this many points per second")
    parser.add_argument("--checkpoint", metavar="PATH", help="default: backfill-BLUE-to-GREEN.checkpoint.json in "
                        "$XDG_STATE_HOME/bluegreen-proxy/backfill (~/.local/state/bluegreen-proxy/backfill)")
    parser.add_argument("--embedder", metavar="NAME", help="re-embed with this embedder of the config's `embedders`")
    parser.add_argument("--text-field", metavar="FIELD", help="re-embed: the payload field holding the text")
    parser.add_argument("--vector", metavar="NAME", help="re-embed: GREEN's named vector to fill (default: its only one)")
    parser.add_argument("--stamp", action="append", default=[], metavar="FIELD=VALUE",
                        help="write FIELD=VALUE (a string) into every copied point's payload; repeatable")
    parser.add_argument("--retries", type=int, default=5, help="retries of a failed call before stopping (default 5)")
    parser.set_defaults(run=run)


def parse_stamps(stamps: list[str]) -> dict[str, str]:
    parsed = {}
    for stamp in stamps:
        field, sep, value = stamp.partition("=")
        if not sep or not field:
            raise MigrateError(f"--stamp {stamp!r}: expected FIELD=VALUE")
        parsed[field] = value
    return parsed


class BackfillStopped(MigrateError):
    pass


class Backfill:
    def __init__(self, args: argparse.Namespace, target: Target, qdrant: QdrantRest):
        self.args = args
        self.qdrant = qdrant
        self.stamps = parse_stamps(args.stamp)
        self.reembed = bool(args.embedder or args.text_field)
        if self.reembed and not (args.embedder and args.text_field and target.config is not None):
            raise MigrateError("re-embed needs --config PATH --embedder NAME --text-field FIELD")
        self.target_config = target.config
        self.embedder = None
        self.vector_name = ""  # re-embed: '' for GREEN's unnamed vector
        self.checkpoint_path = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.source, args.target)
        self.arguments = {
            "from": args.source, "to": args.target, "mode": "re-embed" if self.reembed else "copy",
            "embedder": args.embedder, "text_field": args.text_field, "vector": args.vector, "stamps": self.stamps,
        }

    # ------------------------------------------------------------ setup

    def load_checkpoint(self) -> Checkpoint:
        try:
            checkpoint = Checkpoint.load(self.checkpoint_path)
        except ValueError as exc:
            raise MigrateError(str(exc)) from None
        wanted = fingerprint(self.arguments)
        if checkpoint is None:
            return Checkpoint(self.args.source, self.args.target, wanted, self.arguments)
        if checkpoint.fingerprint != wanted:
            changed = sorted(k for k in self.arguments.keys() | checkpoint.arguments.keys()
                             if self.arguments.get(k) != checkpoint.arguments.get(k))
            raise MigrateError(
                f"checkpoint {self.checkpoint_path} belongs to a backfill with other arguments "
                f"(differs in: {', '.join(changed)}): pass those arguments again, another --checkpoint, or delete it")
        return checkpoint

    async def prepare_reembed(self, green_info: dict) -> None:
        from proxy.embedding.embedders import build_embedders

        embedders_config = self.target_config.embedders
        if self.args.embedder not in embedders_config:
            known = ", ".join(sorted(embedders_config)) or "none"
            raise MigrateError(f"--embedder {self.args.embedder}: not in the config's embedders (it has: {known})")
        vectors = vectors_of(green_info)
        try:
            self.vector_name = pick_vector(vectors, self.args.vector, self.args.target)
        except LayoutError as exc:
            raise MigrateError(str(exc)) from None
        self.vector_size = vector_params(vectors, self.vector_name).get("size")
        self.embedder = build_embedders({self.args.embedder: embedders_config[self.args.embedder]})[self.args.embedder]
        if self.embedder.dimensions and self.vector_size and self.embedder.dimensions != self.vector_size:
            raise MigrateError(f"embedder {self.args.embedder} gives {self.embedder.dimensions}-dim vectors; "
                               f"{self.args.target} expects {self.vector_size}")

    # ------------------------------------------------------------ one batch

    async def with_retries(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        delay = FIRST_RETRY_DELAY
        for attempt in range(self.args.retries + 1):
            try:
                return await call()
            except UpstreamError as exc:
                if not exc.retryable:
                    raise BackfillStopped(f"{what} was refused: {exc.status} {exc.message}") from None
                error = f"{exc.status} {exc.message}"
            except UpstreamUnreachable as exc:
                error = exc.reason
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except EmbedderError as exc:
                if exc.kind in PERMANENT_EMBEDDER_FAILURES:
                    raise BackfillStopped(f"{what} failed: {exc}") from None
                error = str(exc)
            if attempt == self.args.retries:
                raise BackfillStopped(f"{what} failed after {attempt + 1} attempts: {error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def wanted_payload(self, point: dict) -> dict:
        return {**(point.get("payload") or {}), **self.stamps}

    def needs_write(self, point: dict, existing: dict | None) -> bool:
        if existing is None or payload_differences(self.wanted_payload(point), existing.get("payload")):
            return True
        if self.reembed:
            vector = existing.get("vector")
            return not vector or bool(self.vector_name and self.vector_name not in vector)
        return not same_vector(point.get("vector"), existing.get("vector"))

    async def embed(self, points: list[dict]) -> list[dict]:
        """Re-embed mode: the points to write with GREEN's vector computed from the text field."""
        field = self.args.text_field
        texts = [point["payload"][field] for point in points]
        vectors = await self.with_retries(f"embedding {len(texts)} texts with {self.args.embedder}",
                                          lambda: self.embedder.embed(texts, "document"))
        if vectors and self.vector_size and len(vectors[0]) != self.vector_size:
            raise BackfillStopped(f"embedder {self.args.embedder} gives {len(vectors[0])}-dim vectors; "
                                  f"{self.args.target} expects {self.vector_size}")
        out = []
        for point, vector in zip(points, vectors):
            vector = list(vector)
            out.append({**point, "vector": {self.vector_name: vector} if self.vector_name else vector})
        return out

    async def batch(self, checkpoint: Checkpoint) -> tuple[int, int, int]:
        """Settle one page of BLUE; returns (points scanned, written, skipped for lack of text)."""
        source, target = self.args.source, self.args.target
        scroll = {"limit": self.args.batch, "with_payload": True, "with_vector": not self.reembed}
        if checkpoint.next_offset is not None:
            scroll["offset"] = checkpoint.next_offset
        page = await self.with_retries(f"scrolling {source}", lambda: self.qdrant.call(
            "POST", collection_path(source, "points/scroll"), scroll))
        points = page.get("points") or []
        skipped = 0
        if self.reembed:
            field = self.args.text_field
            usable = [p for p in points if isinstance((p.get("payload") or {}).get(field), str)]
            skipped, points = len(points) - len(usable), usable
        written = 0
        if points:
            ids = [point["id"] for point in points]
            existing = await self.with_retries(f"reading {target}", lambda: self.qdrant.call(
                "POST", collection_path(target, "points"), {"ids": ids, "with_payload": True, "with_vector": True}))
            by_id = {record["id"]: record for record in existing or []}
            to_write = [point for point in points if self.needs_write(point, by_id.get(point["id"]))]
            if to_write and self.reembed:
                to_write = await self.embed(to_write)
            if to_write:
                body = {"points": [{"id": p["id"], "vector": p.get("vector") or {}, "payload": self.wanted_payload(p)}
                                   for p in to_write]}
                await self.with_retries(f"upserting {len(to_write)} points into {target}", lambda: self.qdrant.call(
                    "PUT", collection_path(target, "points"), body, wait="true"))
            written = len(to_write)
        scanned = len(points) + skipped
        checkpoint.next_offset = page.get("next_page_offset")
        checkpoint.complete = checkpoint.next_offset is None
        checkpoint.scanned += scanned
        checkpoint.written += written
        checkpoint.unchanged += len(points) - written
        checkpoint.skipped += skipped
        checkpoint.batches += 1
        checkpoint.save(self.checkpoint_path)
        return scanned, written, skipped

    # ------------------------------------------------------------ the run

    async def report_finished(self, checkpoint: Checkpoint) -> None:
        """A finished checkpoint ends the command: say so, when it finished and whether BLUE has changed since."""
        source = self.args.source
        now = await self.qdrant.count(source)
        changed = f" {source} now has {now} points, {checkpoint.scanned} when it finished." if now != checkpoint.scanned else ""
        print(f"backfill {source} -> {self.args.target} is already complete per the checkpoint {self.checkpoint_path} "
              f"of {checkpoint.updated_at} ({checkpoint.scanned} points scanned, {checkpoint.written} written): nothing done."
              f"{changed} To scan again, delete it or pass another --checkpoint (points already identical are not rewritten).")

    async def run(self) -> int:
        args = self.args
        checkpoint = self.load_checkpoint()
        if checkpoint.complete:
            await self.report_finished(checkpoint)
            return EXIT_OK
        green_info = await self.qdrant.info(args.target)
        if self.reembed:
            await self.prepare_reembed(green_info)
        total = await self.qdrant.count(args.source)
        resumed = checkpoint.batches > 0
        mode = f"re-embedding {args.text_field} with {args.embedder}" if self.reembed else "copying vectors"
        print(f"backfill {args.source} -> {args.target}: {total} points, {mode}, batches of {args.batch}"
              + (f", at most {args.rate:g} points/s" if args.rate else "")
              + (f"; resuming after {checkpoint.scanned} points (offset {checkpoint.next_offset})" if resumed else ""),
              flush=True)
        print(f"checkpoint {self.checkpoint_path}", flush=True)
        progress = Progress(f"{args.source} -> {args.target}", total, done=checkpoint.scanned)
        started, settled, written, skipped = time.monotonic(), 0, 0, 0
        try:
            while not checkpoint.complete:
                scanned, batch_written, batch_skipped = await self.batch(checkpoint)
                settled += scanned
                written += batch_written
                skipped += batch_skipped
                progress.total = max(progress.total, checkpoint.scanned)
                progress.advance(scanned)
                if args.rate:
                    await asyncio.sleep(max(0.0, started + settled / args.rate - time.monotonic()))
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task, then raises KeyboardInterrupt
            progress.close()
            print(f"backfill interrupted: the checkpoint {self.checkpoint_path} is intact: {checkpoint.scanned} of "
                  f"{total} points done. Run the same command to resume.", file=sys.stderr, flush=True)
            raise
        except BackfillStopped as exc:
            progress.close()
            raise MigrateError(
                f"backfill stopped: {exc}. The checkpoint {self.checkpoint_path} is intact: "
                f"{checkpoint.scanned} of {total} points done, next offset {checkpoint.next_offset}. "
                "Run the same command to resume.") from None
        progress.close()
        elapsed = time.monotonic() - started
        rate = settled / elapsed if elapsed > 0 else 0.0
        print(f"backfill complete: {settled} points scanned this run ({rate:.0f} points/s), {written} written, "
              f"{settled - written - skipped} already identical"
              + (f", {skipped} without text in {args.text_field} (not copied)" if skipped else "")
              + f"; in all {checkpoint.scanned} points, checkpoint {self.checkpoint_path}")
        return EXIT_OK


async def run(args: argparse.Namespace, target: Target) -> int:
    async with target.client() as qdrant:
        backfill = Backfill(args, target, qdrant)
        try:
            return await backfill.run()
        finally:
            if backfill.embedder is not None:
                await backfill.embedder.close()
