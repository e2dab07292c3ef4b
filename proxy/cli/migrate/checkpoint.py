"""The backfill checkpoint: where the scroll of BLUE stands, written atomically after each acknowledged batch.

    {"version": 1, "source": "docs", "target": "docs_v2", "fingerprint": "<sha256 of the arguments>",
     "arguments": {...}, "next_offset": 4096 | "uuid" | null, "complete": false,
     "scanned": 4096, "written": 4096, "unchanged": 0, "skipped": 0, "batches": 16,
     "started_at": "...", "updated_at": "..."}

`next_offset` is the id the next scroll page starts at (Qdrant's `next_page_offset`); null with
`complete: false` means nothing was done yet. The fingerprint covers what decides the copy's content
(source, target, mode, embedder, text field, vector, stamps), not --batch or --rate, which may change
between runs.

Where it lives by default: `backfill-BLUE-to-GREEN.checkpoint.json` in the user's state directory
(`$XDG_STATE_HOME/bluegreen-proxy/backfill/`, else `~/.local/state/bluegreen-proxy/backfill/`), so a run
from a checkout leaves nothing in it; `--checkpoint PATH` chooses another file.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

VERSION = 1


def fingerprint(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()


def default_checkpoint(source: str, target: str) -> Path:
    state_home = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state_home):  # unset, or relative (which the XDG spec says to ignore)
        state_home = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "bluegreen-proxy" / "backfill" / f"backfill-{source}-to-{target}.checkpoint.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Checkpoint:
    source: str
    target: str
    fingerprint: str
    arguments: dict[str, Any]
    next_offset: int | str | None = None
    complete: bool = False
    scanned: int = 0  # points of BLUE read and settled (written or already identical in GREEN)
    written: int = 0
    unchanged: int = 0
    skipped: int = 0  # re-embed: points without text in the field
    batches: int = 0
    started_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    version: int = VERSION

    @classmethod
    def load(cls, path: Path) -> "Checkpoint | None":
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"checkpoint {path} is unreadable ({exc}): delete it to start over") from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"checkpoint {path} is not a version {VERSION} backfill checkpoint: delete it to start over")
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})

    def save(self, path: Path) -> None:
        """Write, fsync, rename over the old one, fsync the directory: a crash leaves the old or the new file."""
        self.updated_at = _now()
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        with open(temp, "w") as out:
            json.dump(asdict(self), out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
