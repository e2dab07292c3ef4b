"""What every embedding backend is: texts in, one vector per text out, or an EmbedderError."""
from __future__ import annotations

import asyncio
from typing import Literal

TextKind = Literal["query", "document"]
Vector = list[float]


class EmbedderError(Exception):
    """An embedder failed: `kind` is timeout, connect, status, response, dimensions, model or closed."""

    def __init__(self, embedder: str, kind: str, detail: str):
        super().__init__(f"embedder `{embedder}` {detail}")
        self.embedder = embedder
        self.kind = kind
        self.detail = detail


class Backend:
    calls_in_flight = 1

    async def encode(self, texts: list[str]) -> list[Vector]:
        raise NotImplementedError

    def warm(self) -> asyncio.Future | None:
        return None

    async def close(self) -> None:
        return None
