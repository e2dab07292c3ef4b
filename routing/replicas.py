"""How replicas sharing one state file combine a route's rollout records. Pure.

The file keeps one record per route and config fingerprint (`green_percent`, `salt`, `rollout`):
replicas briefly on different configs (a ConfigMap reaches pods at different times) never write
over each other, and a config change starts a fresh record, which is how it lifts a rollback.

A record is `RouteRollout.to_dict()` plus `version`, a counter that every write raises above both
the stored record's and the writer's own. A replica keeps, per record, the `base`: the record its
rollout was last derived from (read or written). When it saves, the stored record is either its base
(nobody wrote since: its own record replaces it) or newer (another replica wrote: the two are
merged), and the merge never lets what it had not seen be undone:

- a rollback stands until a replica that saw it resumes it (the resume lifts that rollback, not a
  newer one it never saw) or the config changes; of two rollbacks, the stored one (first cause) stays;
- a staged walk never goes back: the further step wins.

`hold_started` is the replica's own evidence (each judges its own traffic): it is saved for
restarts but is not a decision, so a change of it alone is never written over another's record.
"""
from __future__ import annotations

DECISIONS = ("fingerprint", "step_index", "step_started", "rolled_back")


def version(record: dict | None) -> int:
    value = record.get("version") if record else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def decisions(record: dict | None) -> tuple | None:
    """What replicas agree on: the config it is for, the step, the rollback."""
    return None if record is None else tuple(record.get(key) for key in DECISIONS)


def merge(stored: dict | None, local: dict, base: dict | None) -> dict:
    """The record that should be stored when a replica whose rollout is `local`, derived from `base`,
    saves over `stored`; all three for one route and fingerprint. Returned without `version`."""
    if stored is None or (base is not None and version(stored) <= version(base)):
        return _content(local)  # nobody wrote since this replica last saw the record
    base_latch = base.get("rolled_back") if base else None
    latch = merge_rollback(stored.get("rolled_back"), local.get("rolled_back"), base_latch)
    further = local if _progress(local) > _progress(stored) else stored
    merged = {**_content(further), "rolled_back": latch}
    if local.get("rolled_back") is None and base_latch is not None and latch is None:
        merged["hold_started"] = local.get("hold_started")  # our resume restarted the hold
    return merged


def merge_rollback(stored: dict | None, local: dict | None, base: dict | None) -> dict | None:
    """Three-way merge of the rollback latch (None: not rolled back)."""
    if local == base:
        return stored  # this replica decided nothing
    if local is not None:
        return stored if stored is not None else local  # its rollback; an existing one keeps its cause
    return None if stored in (None, base) else stored  # its resume lifts only the rollback it saw


def _progress(record: dict) -> tuple:
    index, started = record.get("step_index"), record.get("step_started")
    return (index if isinstance(index, int) else -1, started if isinstance(started, (int, float)) else 0.0)


def _content(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "version"}
