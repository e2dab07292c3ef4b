"""`bluegreen-proxy` command line: one module per command (`add_parser` and `run`), assembled here."""
from __future__ import annotations

import argparse
import sys

from proxy.cli import check, compare, demo, migrate, preflight, resume, rollback, serve, status, upstream
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK

COMMANDS = (serve, check, status, rollback, resume, preflight, compare, upstream, demo, migrate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluegreen-proxy", description="Blue/green traffic splitting proxy for Qdrant.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
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
