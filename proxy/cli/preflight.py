"""`bluegreen-proxy preflight`: the proxy's parity checks, once, for every route (or the named ones); exit 1 if any fails."""
from __future__ import annotations

import asyncio
import sys

from proxy.cli.config_file import config_and_upstream
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def add_parser(commands) -> None:
    parser = commands.add_parser("preflight", help="run the parity checks against the upstream once")
    parser.add_argument("--config", required=True)
    parser.add_argument("--upstream", help="upstream URL (default: upstream.url of the config)")
    parser.add_argument("route", nargs="*", help="only these routes (default: all)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from proxy.control.preflight import run_preflight
    from proxy.dataplane.upstream import UpstreamClient, UpstreamFailure

    config, upstream_url = config_and_upstream(args)
    if config is None:
        return EXIT_USAGE
    routes = {name: route for name, route in config.routes.items() if not args.route or name in args.route}
    unknown = set(args.route or ()) - set(config.routes)
    if unknown:
        print(f"no such route(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return EXIT_USAGE

    async def check_all() -> bool:
        client = UpstreamClient(upstream_url, config.upstream)
        passed = True
        try:
            for name, route in routes.items():
                result = await run_preflight(client.fetch_json, route)
                passed &= result.ok
                settings = "" if route.preflight else " (no preflight settings: defaults)"
                print(f"{name}: blue {route.blue}, green {route.green}: {'PASS' if result.ok else 'FAIL'}{settings}")
                for check in result.checks:
                    print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        finally:
            await client.close()
        return passed

    try:
        return EXIT_OK if asyncio.run(check_all()) else EXIT_FAILED
    except UpstreamFailure as exc:
        print(f"preflight: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
