"""`bluegreen-proxy status [--json | --watch | --once]`: what the running proxy's /admin/routes says."""
from __future__ import annotations

import json
import sys

from proxy.cli.admin_client import AdminClient, add_admin_flags, admin_client, admin_url, safe_admin_url
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from routing.config import ConfigError

VIEW_TIMEOUT = 5.0  # the live view samples every second: a hung proxy shows as unreachable soon


def add_parser(commands) -> None:
    parser = commands.add_parser("status", help="print what the running proxy's /admin/routes says")
    add_admin_flags(parser)
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="print the raw JSON document")
    view.add_argument("--watch", action="store_true", help="a live view, redrawn every second: shares, state, step, p95 and errors per colour")
    view.add_argument("--once", action="store_true", help="one frame of the --watch view (figures over one second), for scripts")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.watch or args.once:
        from proxy.cli import status_view

        try:
            url = admin_url(args)
        except ConfigError as exc:
            print(f"bluegreen-proxy: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return status_view.run(AdminClient(url, timeout=VIEW_TIMEOUT), once=args.once)  # reads need no token
    try:
        status, document = admin_client(args).call("GET", "/admin/routes")
    except (OSError, ConfigError) as exc:
        print(f"bluegreen-proxy: cannot reach the admin listener at {safe_admin_url(args)}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        print(f"admin answered {status}: {document}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_routes(document)
    return EXIT_OK


def print_routes(document: dict) -> None:
    reload = document.get("last_reload", {})
    print(f"config generation {document.get('generation')}, last reload: {reload.get('result')}"
          + (f" ({reload.get('error')})" if reload.get("error") else ""))
    store = document.get("state_store")
    if store:
        print(f"state store: {store_line(store)}")
    for name, route in document.get("routes", {}).items():
        line = (f"{name}: {route['blue']} -> {route['green']}  configured {route['green_percent']:g}%  "
                f"effective {route['effective_green_percent']:g}%  state {route.get('state', 'active')}")
        if route.get("reason"):
            line += f"  reason: {route['reason']}" + (f" ({route['detail']})" if route.get("detail") else "")
        step = route.get("step")
        if step:
            walk = " -> ".join(f"{percent:g}%" for percent in step["walk"])
            line += f"\n  staged rollout {walk}: step {step['index'] + 1}/{len(step['walk'])} ({step['percent']:g}%)"
            if step.get("next_in_s") is not None:
                line += f", next step in {step['next_in_s']:.0f}s if healthy"
        print(line)


def store_line(store: dict) -> str:
    """`qdrant collection bluegreen_state, last sync 0.4s ago` (and the error while it fails)."""
    where = f"file {store['path']}" if store.get("store") == "file" else f"qdrant collection {store.get('collection')}"
    age = store.get("last_sync_age_s")
    line = f"{where}, last sync " + ("never" if age is None else f"{age:.1f}s ago")
    return line + (f", NOT writable: {store['error']}" if store.get("error") else "")
