"""What the proxy serves now: one immutable snapshot (config, route table, effective split), swapped whole.

A request reads `live.snapshot` once, at its start, and finishes on it. A reload swaps in a new
snapshot; the rollout controller swaps in a copy with new effective thresholds (a rollback, a staged
step). Neither ever mutates a snapshot that a request may hold.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Mapping

from routing.clients import ClientPolicy
from routing.config import Config
from routing.preflight import VectorSizes
from routing.table import CompiledRoute, RouteTable


@dataclass(frozen=True)
class Snapshot:
    config: Config
    table: RouteTable
    generation: int
    content_hash: str
    # Effective green threshold per route (buckets out of 10,000), published by the rollout controller.
    # A plain dict for the hot path's lookup; never mutated once published.
    thresholds: Mapping[str, int]
    clients: ClientPolicy | None = field(init=False, repr=False)  # compiled from config.clients
    # Blue's and green's vector sizes where preflight found them different (routes without `embed`
    # pin raw vectors by them), published by the rollout controller like the thresholds.
    vector_sizes: Mapping[str, VectorSizes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clients", ClientPolicy.compile(self.config.clients))

    @classmethod
    def of(cls, config: Config, generation: int, content_hash: str) -> "Snapshot":
        """A snapshot of a config as written: every route at its configured share."""
        table = RouteTable(config)
        thresholds = {name: route.configured_threshold for name, route in table.routes.items()}
        return cls(config, table, generation, content_hash, thresholds)

    def threshold(self, route: CompiledRoute) -> int:
        """The route's effective threshold, from this snapshot (the one the route came from)."""
        return self.thresholds.get(route.name, route.configured_threshold)

    def with_thresholds(self, thresholds: Mapping[str, int]) -> "Snapshot":
        """The same snapshot with another effective split (nothing recompiled)."""
        published = copy.copy(self)
        object.__setattr__(published, "thresholds", dict(thresholds))
        return published

    def with_vector_sizes(self, vector_sizes: Mapping[str, VectorSizes]) -> "Snapshot":
        published = copy.copy(self)
        object.__setattr__(published, "vector_sizes", dict(vector_sizes))
        return published


@dataclass
class ReloadOutcome:
    result: str  # "success" or "failure"
    at: float
    error: str | None = None


@dataclass
class LiveConfig:
    snapshot: Snapshot
    config_path: str  # as given: through a Kubernetes `..data` symlink, never resolved
    last_reload: ReloadOutcome = field(default_factory=lambda: ReloadOutcome("success", time.time()))

    @classmethod
    def initial(cls, config: Config, content_hash: str, config_path: str) -> "LiveConfig":
        return cls(snapshot=Snapshot.of(config, 1, content_hash), config_path=config_path)
