"""The config file the commands read (--config): validated, or one message on stderr saying why not."""
from __future__ import annotations

import sys

from routing.config import Config, ConfigError


def load_config(path: str) -> Config | None:
    """The validated config, or None after printing why it is invalid."""
    from proxy.control.reload import read_config

    try:
        return read_config(path)[0]
    except ConfigError as exc:
        print(f"{path}: invalid\n{exc}", file=sys.stderr)
        return None


def config_and_upstream(args) -> tuple[Config | None, str | None]:
    """(config, the upstream URL its control-plane calls go to: --upstream, else upstream.url), or
    (None, None) after saying why there is none."""
    config = load_config(args.config)
    if config is None:
        return None, None
    upstream_url = args.upstream or config.upstream.url
    if upstream_url == "embedded":
        print("upstream is `embedded`: pass --upstream URL of the running upstream", file=sys.stderr)
        return None, None
    return config, upstream_url
