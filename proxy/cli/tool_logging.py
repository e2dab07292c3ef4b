"""Logging for the commands that load embedders (migrate, compare): libraries' warnings, one line each.

Configured before an embedder is loaded because WordLlama calls `logging.basicConfig(level=INFO)` when
imported, which would log every request httpx makes (`INFO:httpx:HTTP Request: ...`) over the
progress output; with the root logger configured first, that call does nothing.
"""
from __future__ import annotations

import logging


def configure_tool_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
