"""The proxy's live state: the current immutable config snapshot and each route's effective split.

Requests read `state.snapshot` and `state.thresholds` once, at their start, and finish on what they
read: a reload or a rollback swaps whole objects and never mutates one that a request may hold.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from routing.clients import ClientPolicy
from routing.config import Config
from routing.table import RouteTable


@dataclass(frozen=True)
class Snapshot:
    config: Config
    table: RouteTable
    generation: int
    content_hash: str
    clients: ClientPolicy | None = field(init=False, repr=False)  # compiled from config.clients

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", ClientPolicy.compile(self.config.clients))


@dataclass
class ReloadOutcome:
    result: str  # "success" or "failure"
    at: float
    error: str | None = None


@dataclass
class ProxyState:
    snapshot: Snapshot
    config_path: str
    # Effective green threshold per route (buckets out of 10,000); the safety controller owns it.
    thresholds: dict[str, int] = field(default_factory=dict)
    last_reload: ReloadOutcome = field(default_factory=lambda: ReloadOutcome("success", time.time()))

    @classmethod
    def initial(cls, config: Config, content_hash: str, config_path: str) -> "ProxyState":
        snapshot = Snapshot(config, RouteTable(config), 1, content_hash)
        return cls(
            snapshot=snapshot,
            config_path=config_path,
            thresholds={name: route.configured_threshold for name, route in snapshot.table.routes.items()},
        )
