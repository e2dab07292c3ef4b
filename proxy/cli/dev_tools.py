"""The development tools (bluegreen_dev) behind `upstream` and `demo`, kept out of the production install."""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

DEV_EXTRA_HINT = 'the development tools need the demo extra: pip install "bluegreen-proxy[demo]"'


def dev_tool(name: str) -> ModuleType | None:
    """A module of bluegreen_dev, or None after saying which extra brings its dependencies."""
    try:
        return importlib.import_module(f"bluegreen_dev.{name}")
    except ImportError as exc:
        print(f"bluegreen-proxy: {exc}; {DEV_EXTRA_HINT}", file=sys.stderr)
        return None
