"""`bluegreen-proxy resume ROUTE`: lift a route's rollback."""
from __future__ import annotations

from proxy.cli.admin_client import add_admin_flags
from proxy.cli.route_action import run_route_action


def add_parser(commands) -> None:
    parser = commands.add_parser("resume", help="lift a route's rollback")
    parser.add_argument("route")
    add_admin_flags(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    return run_route_action(args, "resume", None)
