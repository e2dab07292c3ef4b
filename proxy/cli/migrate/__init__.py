"""`bluegreen-proxy migrate SUBCOMMAND`: the migration runbook as commands.

create-green -> backfill -> validate -> (the proxy's rollout) -> promote -> decommission; plan first.
One module per subcommand; connection.py says which upstream, proxy/cli/qdrant_rest.py talks to it.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from proxy.cli.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED
from proxy.cli.migrate import backfill, create_green, decommission, plan, promote, validate
from proxy.cli.migrate.connection import MigrateError, Target, add_connection_flags
from proxy.cli.qdrant_rest import QdrantRestError
from proxy.cli.tool_logging import configure_tool_logging

SUBCOMMANDS = (create_green, backfill, validate, promote, decommission, plan)


def add_parser(commands) -> None:
    parser = commands.add_parser("migrate", help="the migration runbook: create-green, backfill, validate, promote, decommission, plan")
    connection = argparse.ArgumentParser(add_help=False)
    add_connection_flags(connection)
    subcommands = parser.add_subparsers(dest="migrate_command", required=True, metavar="SUBCOMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subcommands, [connection])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_tool_logging()
    try:
        target = Target.from_args(args)
        return asyncio.run(args.run(args, target))
    except (MigrateError, QdrantRestError) as exc:
        print(f"migrate {args.migrate_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"migrate {args.migrate_command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # files: the checkpoint, the archive
        print(f"migrate {args.migrate_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
