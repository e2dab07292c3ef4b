"""`bluegreen-proxy upstream`: the embedded qdrant-edge upstream (development and tests)."""
from __future__ import annotations

from proxy.cli.dev_tools import dev_tool
from proxy.cli.exit_codes import EXIT_USAGE

# (flag, argparse dest): passed on to bluegreen_dev.embedded as given; a new flag is one line here
# and one add_argument below.
FORWARDED_FLAGS = (("--data", "data"), ("--host", "host"), ("--port", "port"), ("--grpc-port", "grpc_port"))


def add_parser(commands) -> None:
    parser = commands.add_parser("upstream", help="run the embedded qdrant-edge upstream (development and tests)")
    parser.add_argument("--data", required=True, help="data directory (one shard per collection)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6334)
    parser.add_argument("--grpc-port", type=int, help="also serve Qdrant's gRPC API on this port (default: no gRPC)")
    parser.set_defaults(func=run)


def embedded_argv(args) -> list[str]:
    """The embedded upstream's command line from ours; flags left unset are not passed."""
    argv: list[str] = []
    for flag, dest in FORWARDED_FLAGS:
        value = getattr(args, dest)
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run(args) -> int:
    embedded = dev_tool("embedded")
    if embedded is None:
        return EXIT_USAGE
    return embedded.main(embedded_argv(args))
