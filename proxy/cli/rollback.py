"""`bluegreen-proxy rollback ROUTE --reason TEXT`: send a route's reads back to blue now."""
from __future__ import annotations

from proxy.cli.admin_client import add_admin_flags
from proxy.cli.route_action import run_route_action


def add_parser(commands) -> None:
    parser = commands.add_parser("rollback", help="send a route's reads back to blue now")
    parser.add_argument("route")
    parser.add_argument("--reason", required=True)
    add_admin_flags(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    return run_route_action(args, "rollback", {"reason": args.reason})
