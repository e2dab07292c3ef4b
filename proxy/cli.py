"""`bluegreen-proxy` command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request

from routing.config import ADMIN_DEFAULT_PORT, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _address(text: str):
    from proxy.server import Address

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return Address(host or "127.0.0.1", int(port))


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_serve(args) -> int:
    import uvloop

    from proxy.server import EmbeddedUpstreamError, serve

    _configure_logging(args.log_level)
    try:
        return uvloop.run(serve(args.config, args.listen, args.admin))
    except ConfigError as exc:
        print(f"bluegreen-proxy: invalid config {args.config}:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except EmbeddedUpstreamError as exc:
        print(f"bluegreen-proxy: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _load_config(path: str):
    """The validated config, or None after printing why it is invalid."""
    from proxy.reload import read_config

    try:
        return read_config(path)[0]
    except ConfigError as exc:
        print(f"{path}: invalid\n{exc}", file=sys.stderr)
        return None


def cmd_check(args) -> int:
    from routing.table import RouteTable

    config = _load_config(args.config)
    if config is None:
        return EXIT_USAGE
    print(f"{args.config}: valid")
    print(f"listen {config.listen.host}:{config.listen.port}  admin {config.admin.host}:{config.admin.port}  upstream {config.upstream.url}")
    print(_clients_line(config))
    table = RouteTable(config)
    if not table.routes:
        print("no routes: every request passes through unchanged")
        return EXIT_OK
    print(f"{'route':24} {'blue':24} {'green':24} {'green%':>7}  {'writes':6} {'fallback':8} {'safety':32} key")
    for name, route in table.routes.items():
        s = route.settings
        safety = ",".join(part for part in ("preflight", "guard", "rollout", "failover", "shadow") if getattr(s, part)) or "-"
        print(f"{name:24} {s.blue:24} {s.green:24} {s.green_percent:>7g}  {s.writes:6} {s.fallback:8} {safety:32} {','.join(s.key)}")
    _print_embedding(config)
    return EXIT_OK


def _print_embedding(config) -> None:
    """Which model embeds text for each colour of each route with `embed`."""
    from routing.config import url_without_credentials

    for name, embedder in config.embedders.items():
        where = "in process" if embedder.type == "local" else url_without_credentials(embedder.url)
        size = f"{embedder.dimensions} dims" if embedder.dimensions else "dims from its first answer"
        print(f"embedder {name}: {embedder.type} {embedder.model} ({where}, {size})")
    for name, route in config.routes.items():
        if route.embed is not None:
            print(f"route {name} embeds text with: " + ", ".join(f"{where} {embedder}" for where, embedder in route.embed.names()))


def _admin_url(args) -> str:
    if args.admin:
        return args.admin.rstrip("/")
    if getattr(args, "config", None):
        from proxy.reload import read_config

        config, _ = read_config(args.config)
        return f"http://{config.admin.host}:{config.admin.port}"
    return f"http://127.0.0.1:{ADMIN_DEFAULT_PORT}"


def _admin_call(args, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    url = _admin_url(args) + path
    headers = {"content-type": "application/json"}
    token = args.token or os.environ.get("BLUEGREEN_ADMIN_TOKEN")
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"status": {"error": exc.reason}}


def _print_routes(document: dict) -> None:
    reload = document.get("last_reload", {})
    print(f"config generation {document.get('generation')}, last reload: {reload.get('result')}"
          + (f" ({reload.get('error')})" if reload.get("error") else ""))
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


def cmd_status(args) -> int:
    if args.watch or args.once:
        from proxy.status_view import run

        try:
            admin_url = _admin_url(args)
        except ConfigError as exc:
            print(f"bluegreen-proxy: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return run(admin_url, once=args.once)
    try:
        status, document = _admin_call(args, "GET", "/admin/routes")
    except (OSError, ConfigError) as exc:
        print(f"bluegreen-proxy: cannot reach the admin listener at {_safe_admin_url(args)}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        print(f"admin answered {status}: {document}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _print_routes(document)
    return EXIT_OK


def _clients_line(config) -> str:
    """What `clients` checks, without a secret; a warning when a reachable data port checks nothing."""
    clients = config.clients
    if clients is None:
        line = "clients: not authenticated by the proxy (their own credentials pass through; nothing added)"
        if config.listen.host not in ("127.0.0.1", "localhost", "::1"):
            line += f"\nWARNING: listen.host {config.listen.host} reaches beyond this machine: add a `clients` block"
        return line
    jwt = "jwt HS256" if clients.jwt else "no jwt"
    return f"clients: {len(clients.api_keys)} api key(s), {jwt}, anonymous {clients.anonymous}"


def _safe_admin_url(args) -> str:
    try:
        return _admin_url(args)
    except ConfigError:
        return "(admin address from an invalid config)"


def _route_command(args, action: str, body: dict | None) -> int:
    try:
        status, document = _admin_call(args, "POST", f"/admin/routes/{args.route}/{action}", body)
    except (OSError, ConfigError) as exc:
        print(f"bluegreen-proxy: cannot reach the admin listener at {_safe_admin_url(args)}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if status != 200:
        error = document.get("status", {}).get("error", document)
        verdict = "applied but not persisted" if document.get("persisted") is False else "refused"
        print(f"{action} {verdict} ({status}): {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.route}: state {document.get('state')}, effective green {document.get('effective_green_percent'):g}%")
    return EXIT_OK


def cmd_rollback(args) -> int:
    return _route_command(args, "rollback", {"reason": args.reason})


def cmd_resume(args) -> int:
    return _route_command(args, "resume", None)


def _config_and_upstream(args):
    """(config, the upstream URL its control-plane calls go to: --upstream, else upstream.url), or
    (None, None) after saying why there is none."""
    config = _load_config(args.config)
    if config is None:
        return None, None
    upstream_url = args.upstream or config.upstream.url
    if upstream_url == "embedded":
        print("upstream is `embedded`: pass --upstream URL of the running upstream", file=sys.stderr)
        return None, None
    return config, upstream_url


def cmd_preflight(args) -> int:
    """The proxy's parity checks, once, for every route (or the named ones): exit 1 if any fails."""
    import asyncio

    from proxy.preflight import run_preflight
    from proxy.upstream import UpstreamClient, UpstreamFailure

    config, upstream_url = _config_and_upstream(args)
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


def cmd_compare(args) -> int:
    """Both colours' answers to a file of queries, scored (proxy/compare.py)."""
    from proxy.compare import UsageError, run

    config, upstream_url = _config_and_upstream(args)
    if config is None:
        return EXIT_USAGE
    try:
        return run(config, args.route, args.queries, args.k, args.min_overlap, args.json, upstream_url)
    except UsageError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return EXIT_USAGE


DEV_EXTRA_HINT = 'the development tools need the demo extra: pip install "bluegreen-proxy[demo]"'


def _dev_tool(name: str):
    """A module of bluegreen_dev, or None after saying which extra brings its dependencies."""
    import importlib

    try:
        return importlib.import_module(f"bluegreen_dev.{name}")
    except ImportError as exc:
        print(f"bluegreen-proxy: {exc}; {DEV_EXTRA_HINT}", file=sys.stderr)
        return None


def cmd_upstream(args) -> int:
    embedded = _dev_tool("embedded")
    if embedded is None:
        return EXIT_USAGE
    return embedded.main(["--data", args.data, "--host", args.host, "--port", str(args.port)])


def cmd_demo(args) -> int:
    demo = _dev_tool("demo")
    if demo is None:
        return EXIT_USAGE
    return demo.run(quick=args.quick, data_dir=args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluegreen-proxy", description="Blue/green traffic splitting proxy for Qdrant.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, help="YAML config file (watched for changes)")
    serve.add_argument("--listen", type=_address, help="data address HOST:PORT (overrides listen)")
    serve.add_argument("--admin", type=_address, help="admin address HOST:PORT (overrides admin)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    check = commands.add_parser("check", help="validate a config file and print the route table")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check)

    def admin_flags(sub):
        sub.add_argument("--admin", help="admin URL (default: from --config, else http://127.0.0.1:9901)")
        sub.add_argument("--config", help="config file whose admin address to use")
        sub.add_argument("--token", help="admin token (default: $BLUEGREEN_ADMIN_TOKEN)")

    status = commands.add_parser("status", help="print what the running proxy's /admin/routes says")
    admin_flags(status)
    view = status.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="print the raw JSON document")
    view.add_argument("--watch", action="store_true", help="a live view, redrawn every second: shares, state, step, p95 and errors per colour")
    view.add_argument("--once", action="store_true", help="one frame of the --watch view (figures over one second), for scripts")
    status.set_defaults(func=cmd_status)

    rollback = commands.add_parser("rollback", help="send a route's reads back to blue now")
    rollback.add_argument("route")
    rollback.add_argument("--reason", required=True)
    admin_flags(rollback)
    rollback.set_defaults(func=cmd_rollback)

    resume = commands.add_parser("resume", help="lift a route's rollback")
    resume.add_argument("route")
    admin_flags(resume)
    resume.set_defaults(func=cmd_resume)

    preflight = commands.add_parser("preflight", help="run the parity checks against the upstream once")
    preflight.add_argument("--config", required=True)
    preflight.add_argument("--upstream", help="upstream URL (default: upstream.url of the config)")
    preflight.add_argument("route", nargs="*", help="only these routes (default: all)")
    preflight.set_defaults(func=cmd_preflight)

    compare = commands.add_parser("compare", help="run a file of queries on both colours and score their agreement")
    compare.add_argument("--config", required=True)
    compare.add_argument("route")
    compare.add_argument("--queries", required=True, help="JSON lines, one Query API body each")
    compare.add_argument("--k", type=int, default=10, help="compare the top k ids (default 10)")
    compare.add_argument("--min-overlap", type=float, help="exit 1 when the mean overlap@k is below this")
    compare.add_argument("--json", action="store_true", help="print the results as JSON")
    compare.add_argument("--upstream", help="upstream URL (default: upstream.url of the config)")
    compare.set_defaults(func=cmd_compare)

    upstream = commands.add_parser("upstream", help="run the embedded qdrant-edge upstream (development and tests)")
    upstream.add_argument("--data", required=True, help="data directory (one shard per collection)")
    upstream.add_argument("--host", default="127.0.0.1")
    upstream.add_argument("--port", type=int, default=6334)
    upstream.set_defaults(func=cmd_upstream)

    demo = commands.add_parser("demo", help="a self-contained model migration (clients send text) on the embedded upstream")
    demo.add_argument("--quick", action="store_true", help="the same story in under 30 s")
    demo.add_argument("--data-dir", default=".bluegreen-data/demo",
                      help="where the run's files go (default .bluegreen-data/demo, emptied at the start of each run)")
    demo.set_defaults(func=cmd_demo)

    from proxy.migrate import add_parser as add_migrate_parser

    add_migrate_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
