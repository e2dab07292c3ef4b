"""`bluegreen-proxy serve`: run the proxy."""
from __future__ import annotations

import argparse
import logging
import sys

from proxy.cli.exit_codes import EXIT_FAILED, EXIT_USAGE
from routing.config import ConfigError


def add_parser(commands) -> None:
    parser = commands.add_parser("serve", help="run the proxy")
    parser.add_argument("--config", required=True, help="YAML config file (watched for changes)")
    parser.add_argument("--listen", type=address, help="data address HOST:PORT (overrides listen)")
    parser.add_argument("--admin", type=address, help="admin address HOST:PORT (overrides admin)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--import-state", metavar="FILE", help="with state.store qdrant: import this state file on first start (the collection empty)")
    parser.set_defaults(func=run)


def address(text: str):
    from proxy.server import Address

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return Address(host or "127.0.0.1", int(port))


def run(args) -> int:
    import uvloop

    from proxy.process import EmbeddedUpstreamError
    from proxy.server import serve

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return uvloop.run(serve(args.config, args.listen, args.admin, args.import_state))
    except ConfigError as exc:
        print(f"bluegreen-proxy: invalid config {args.config}:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except EmbeddedUpstreamError as exc:
        print(f"bluegreen-proxy: {exc}", file=sys.stderr)
        return EXIT_FAILED
