"""`bluegreen-proxy` command line: one module per command (`add_parser` and `run`), assembled here."""
from __future__ import annotations

import argparse
import importlib
import sys

from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK

# Module names under proxy.cli, in the order `--help` lists them.
COMMANDS = ("serve", "check", "status", "rollback", "resume", "preflight", "compare", "upstream", "demo", "migrate")


def build_parser(commands: tuple[str, ...] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluegreen-proxy", description="Blue/green traffic splitting proxy for Qdrant.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"proxy.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # A named command imports its own module only: `serve` starts without the tools' HTTP client, rich
    # and the migrate commands. Anything else (help, a typo) gets the whole parser and its messages.
    commands = (argv[0],) if argv and argv[0] in COMMANDS else COMMANDS
    args = build_parser(commands).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
