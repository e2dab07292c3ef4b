"""Where the migrate commands talk to and with which key: --upstream, --api-key and --config."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from proxy.cli.qdrant_rest import QdrantRest


class MigrateError(Exception):
    """A failure the command reports as one clear line and exit 1."""


@dataclass(frozen=True)
class Target:
    """The upstream from --upstream/--api-key and --config."""

    url: str
    api_key: str | None
    config: Any = None  # routing.config.Config when --config was given

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Target":
        config = None
        if args.config:
            from proxy.control.reload import read_config
            from routing.config import ConfigError

            try:
                config = read_config(args.config)[0]
            except ConfigError as exc:
                raise MigrateError(f"{args.config}: invalid\n{exc}") from None
        url = args.upstream or (config.upstream.url if config else None)
        if not url:
            raise MigrateError("no upstream: pass --upstream URL or --config PATH")
        if url == "embedded":
            raise MigrateError("the config's upstream is `embedded`: pass --upstream URL of the running upstream")
        api_key = args.api_key or os.environ.get("QDRANT_API_KEY") or (config.upstream.api_key if config else None)
        return cls(url.rstrip("/"), api_key or None, config)

    def client(self) -> QdrantRest:
        return QdrantRest(self.url, self.api_key)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", metavar="URL", help="Qdrant REST endpoint (wins over the config's upstream)")
    parser.add_argument("--config", metavar="PATH", help="proxy config: its upstream and key, embedders and routes")
    parser.add_argument("--api-key", help="Qdrant api key (default: $QDRANT_API_KEY, else the config's upstream.api_key)")


def positive_int(text: str) -> int:
    """An argparse type: argparse names the flag in its message."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value
