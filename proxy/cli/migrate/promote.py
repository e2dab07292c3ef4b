"""`migrate promote`: point an alias at GREEN in one atomic `POST /collections/aliases` (delete + create).

Clients that address the alias switch at once. The previous target is printed, so the same command
with `--to` that collection is the rollback.
"""
from __future__ import annotations

import argparse

from proxy.cli.exit_codes import EXIT_OK
from proxy.cli.migrate.connection import MigrateError, Target


def add_parser(commands, parents) -> None:
    parser = commands.add_parser("promote", parents=parents, help="switch an alias to GREEN atomically")
    parser.add_argument("--alias", required=True, metavar="NAME")
    parser.add_argument("--to", dest="target", required=True, metavar="GREEN")
    parser.set_defaults(run=run)


def alias_actions(alias: str, collection: str, previous: str | None) -> list[dict]:
    create = {"create_alias": {"collection_name": collection, "alias_name": alias}}
    return [create] if previous is None else [{"delete_alias": {"alias_name": alias}}, create]


async def run(args: argparse.Namespace, target: Target) -> int:
    async with target.client() as qdrant:
        if not await qdrant.exists(args.target) or args.target in await qdrant.aliases():
            raise MigrateError(f"{args.target} is not a collection: an alias must point at a collection")
        previous = (await qdrant.aliases()).get(args.alias)
        if previous == args.target:
            print(f"alias {args.alias} already points at {args.target}: nothing to do")
            return EXIT_OK
        await qdrant.call("POST", "/collections/aliases", {"actions": alias_actions(args.alias, args.target, previous)})
        now = (await qdrant.aliases()).get(args.alias)
    if now != args.target:
        raise MigrateError(f"alias {args.alias} points at {now} after the switch, not {args.target}")
    if previous is None:
        print(f"alias {args.alias} created -> {args.target} (it did not exist before)")
    else:
        print(f"alias {args.alias}: {previous} -> {args.target}")
        print(f"previous target: {previous}; roll back with: bluegreen-proxy migrate promote --alias {args.alias} --to {previous}")
    return EXIT_OK
