"""`bluegreen-proxy demo [--quick] [--data-dir DIR]`: a self-contained model migration on the embedded upstream."""
from __future__ import annotations

from proxy.cli.dev_tools import dev_tool
from proxy.cli.exit_codes import EXIT_USAGE


def add_parser(commands) -> None:
    parser = commands.add_parser("demo", help="a self-contained model migration (clients send text) on the embedded upstream")
    parser.add_argument("--quick", action="store_true", help="the same story in under 30 s")
    parser.add_argument("--data-dir", default=".bluegreen-data/demo",
                        help="where the run's files go (default .bluegreen-data/demo, emptied at the start of each run)")
    parser.set_defaults(func=run)


def run(args) -> int:
    demo = dev_tool("demo")
    if demo is None:
        return EXIT_USAGE
    return demo.run(quick=args.quick, data_dir=args.data_dir)
