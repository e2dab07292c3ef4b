"""`migrate create-green`: GREEN with BLUE's layout (vectors, HNSW, quantization, optimizer, sharding,
replication) and the same payload indexes, with the new model's size and distance from the flags."""
from __future__ import annotations

import argparse

from proxy.cli.exit_codes import EXIT_OK
from proxy.cli.migrate.connection import MigrateError, Target, positive_int
from proxy.cli.migrate.green_layout import LayoutError, describe_layout, green_create_request, index_requests, index_type
from proxy.cli.qdrant_rest import collection_path


def add_parser(commands, parents) -> None:
    parser = commands.add_parser("create-green", parents=parents, help="create GREEN with BLUE's layout and payload indexes")
    parser.add_argument("--from", dest="source", required=True, metavar="BLUE")
    parser.add_argument("--to", dest="target", required=True, metavar="GREEN")
    parser.add_argument("--size", type=positive_int, help="the new model's vector size")
    parser.add_argument("--distance", help="Cosine, Euclid, Dot or Manhattan")
    parser.add_argument("--vector", metavar="NAME", help="the named vector --size/--distance apply to")
    parser.add_argument("--if-not-exists", action="store_true", help="GREEN existing is not an error (left unchanged)")
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace, target: Target) -> int:
    async with target.client() as qdrant:
        if await qdrant.exists(args.target):
            if args.if_not_exists:
                print(f"{args.target} exists: left unchanged (--if-not-exists)")
                return EXIT_OK
            raise MigrateError(f"{args.target} already exists: refusing to touch it (--if-not-exists accepts it)")
        blue = await qdrant.info(args.source)
        try:
            body = green_create_request(blue, args.size, args.distance, args.vector, blue_name=args.source)
        except LayoutError as exc:
            raise MigrateError(str(exc)) from None
        await qdrant.call("PUT", collection_path(args.target), body)
        indexes = index_requests(blue.get("payload_schema") or {})
        for index in indexes:
            await qdrant.call("PUT", collection_path(args.target, "index"), index, wait="true")
        green = await qdrant.info(args.target)
    print(f"created {args.target} from {args.source}'s layout")
    print(f"  {args.source}: {describe_layout(blue)}")
    print(f"  {args.target}: {describe_layout(green)}")
    schema = green.get("payload_schema") or {}
    listed = ", ".join(f"{field} ({index_type(index)})" for field, index in sorted(schema.items())) or "none"
    print(f"  payload indexes: {listed}")
    return EXIT_OK
