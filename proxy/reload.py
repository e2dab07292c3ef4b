"""Config hot reload: watch the directory, SIGHUP, and a slow poll; swap one snapshot when content changes.

The directory is watched rather than the file: editors save by rename and Kubernetes swaps a
`..data` symlink, so events may never name the file. Any event re-reads the file; only a change
of its content hash acts.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

import watchfiles

from proxy.metrics import Metrics
from proxy.state import ProxyState, ReloadOutcome, Snapshot
from routing.config import Config, ConfigError, parse_config
from routing.table import RouteTable

log = logging.getLogger("bluegreen.reload")
# watchfiles logs every batch of events at INFO; with a log file beside the config that feeds itself.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

SETTLE_SECONDS = 0.02
SETTLE_TRIES = 25

# Settings bound at start-up (sockets, the upstream pool); a change is reported, applied on restart.
RESTART_ONLY = (
    "listen", "admin.host", "admin.port", "upstream", "limits.max_connections", "limits.max_header_bytes",
    "limits.max_header_count", "limits.header_timeout", "limits.idle_timeout",
)


def read_config(path: str | Path) -> tuple[Config, str]:
    """Read and validate the file: (config, content hash). Raises ConfigError naming the problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return parse_config(data.decode("utf-8", errors="replace")), hashlib.sha256(data).hexdigest()


class ConfigReloader:
    def __init__(
        self, state: ProxyState, metrics: Metrics, on_applied: Callable[[Snapshot, Snapshot], None] | None = None,
        ignore: Callable[[str], bool] = lambda path: False,
    ):
        self.state = state
        self.metrics = metrics
        self.on_applied = on_applied
        self.ignore = ignore  # files of the proxy's own beside the config (the state file)
        self._lock = asyncio.Lock()
        self._failed_hash: str | None = None

    async def reload(self, trigger: str) -> bool:
        """Re-read the file; apply it if its content changed and it is valid. True if applied."""
        async with self._lock:  # the watch, the poll and SIGHUP may fire together
            data = self._read()
            if data is None or self._known(data):
                return False
            data = await self._settled(data)
            if data is None or self._known(data):
                return False
            return self._apply(data, trigger)

    def _read(self) -> bytes | None:
        try:
            return Path(self.state.config_path).read_bytes()
        except OSError as exc:
            # Mid-swap (rename, symlink flip) the file can be briefly absent: the next event retries.
            log.debug("config file unreadable: %s", exc)
            return None

    def _known(self, data: bytes) -> bool:
        """Already serving this content, or already rejected it."""
        content_hash = hashlib.sha256(data).hexdigest()
        return content_hash in (self.state.snapshot.content_hash, self._failed_hash)

    async def _settled(self, data: bytes) -> bytes | None:
        """The content once two reads SETTLE_SECONDS apart agree, so that a file being rewritten in
        place (truncated, then written) is never applied half-written."""
        for _ in range(SETTLE_TRIES):
            await asyncio.sleep(SETTLE_SECONDS)
            again = self._read()
            if again == data:
                return data
            data = again
        return data

    def _apply(self, data: bytes, trigger: str) -> bool:
        content_hash = hashlib.sha256(data).hexdigest()
        current = self.state.snapshot
        try:
            config = parse_config(data.decode("utf-8", errors="replace"))
        except ConfigError as exc:
            self._failed_hash = content_hash
            self._record("failure", str(exc))
            log.error("config reload (%s) rejected, keeping generation %d:\n%s", trigger, current.generation, exc)
            return False
        self._failed_hash = None
        for setting in _restart_only_changes(current.config, config):
            log.warning("config: `%s` changed; it applies on restart", setting)
        snapshot = Snapshot(config, RouteTable(config), current.generation + 1, content_hash)
        self.state.snapshot = snapshot
        self._record("success", None)
        self.metrics.config_generation.set(snapshot.generation)
        log.info("config generation %d applied (%s): %s", snapshot.generation, trigger, _split_summary(snapshot))
        if self.on_applied is not None:
            self.on_applied(current, snapshot)
        return True

    def _record(self, result: str, error: str | None) -> None:
        now = time.time()
        self.state.last_reload = ReloadOutcome(result, now, error)
        self.metrics.reloads.labels(result).inc()
        self.metrics.last_reload_ok.set(1 if result == "success" else 0)
        self.metrics.last_reload_time.set(now)

    async def watch(self, stop: asyncio.Event) -> None:
        """Directory events (debounced to well under the 1 s target) plus a slow poll as a backstop."""
        directory = Path(self.state.config_path).resolve().parent
        poll = asyncio.create_task(self._poll(stop))
        try:
            async for _changes in watchfiles.awatch(
                directory, stop_event=stop, debounce=150, step=30, recursive=False, ignore_permission_denied=True,
                watch_filter=lambda change, path: not self.ignore(path),
            ):
                await self.reload("file event")
        finally:
            poll.cancel()

    async def _poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            interval = self.state.snapshot.config.reload.poll_interval
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                await self.reload("poll")


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    changed = []
    for setting in RESTART_ONLY:
        a, b = old, new
        for part in setting.split("."):
            a, b = getattr(a, part), getattr(b, part)
        if a != b:
            changed.append(setting)
    return changed


def _split_summary(snapshot: Snapshot) -> str:
    routes = snapshot.config.routes
    return ", ".join(f"{name}={route.green_percent:g}% green" for name, route in routes.items()) or "no routes"
