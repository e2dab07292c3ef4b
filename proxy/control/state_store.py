"""Where the rollout records live, as the rollout controller sees it: one interface, two stores.

A record is one route's rollout for one config fingerprint (`routing.replicas` says what is in it and
how two are merged). A store reads them all and saves some of them by that merge rule, so a save
never undoes what another replica decided; it says where it is for messages and `/readyz`. The file
store is `proxy.control.rollout_store.FileStateStore`, the Qdrant one
`proxy.control.qdrant_state_store.QdrantStateStore`; `proxy.control.rollout_store.open_state_store`
picks one by config.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

Slot = tuple[str, str]  # (route, config fingerprint): one record each
KEEP_FINGERPRINTS = 4  # per route: the records of its latest configs (older replicas' configs included)


class StateStoreError(Exception):
    """The store could not be read or written now; the message says which store and why."""


class StateStore(ABC):
    kind: str  # "file" or "qdrant": the `store` label of the state-store metrics

    @abstractmethod
    def describe(self) -> str:
        """Where the records are, for messages: `state file /x`, `Qdrant collection bluegreen_state`."""

    def details(self) -> dict:
        """Where the records are, for `/readyz` and `/admin/routes`."""
        return {"store": self.kind}

    def owns(self, path: str) -> bool:
        """Whether a changed file beside the config is the store's own (not a config change)."""
        return False

    @abstractmethod
    async def read(self) -> dict[Slot, dict]:
        """Every record. Raises StateStoreError when the store cannot be read."""

    @abstractmethod
    async def save(self, local: dict[Slot, dict], bases: dict[Slot, dict | None]) -> dict[Slot, dict]:
        """Merge each `local` record (derived from `bases[slot]`) into the store; the records as
        stored afterwards. Raises StateStoreError when they cannot be written."""

    @abstractmethod
    async def probe(self) -> str | None:
        """Why a save could not succeed now, or None."""

    async def close(self) -> None:
        return None
