"""Config hot reload: watch the directory, SIGHUP, and a slow poll; swap one snapshot when content changes.

The directory that holds the config path *as given* is watched, and every event re-reads the path:
editors save by rename, and Kubernetes mounts a ConfigMap as `dir/bluegreen.yaml -> ..data/bluegreen.yaml`
with `..data -> ..<timestamp>`, swapped by renaming a new `..data` symlink over the old one (the old
timestamped directory is then deleted). Resolving the path at start-up would pin the first
timestamped directory; events may never name the file. Only a change of the content's hash acts.
File I/O, YAML parsing and env expansion run in a worker thread: a large or hostile file never
stalls requests.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

import watchfiles

from proxy.control.rollout_controller import RolloutController
from proxy.dataplane.live import LiveConfig, ReloadOutcome, Snapshot
from proxy.embedding.embedders import EmbedderSet
from proxy.metrics import Metrics
from routing.config import MAX_CONFIG_BYTES, Config, ConfigError, parse_config

log = logging.getLogger("bluegreen.reload")
# watchfiles logs every batch of events at INFO; with a log file beside the config that feeds itself.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

SETTLE_SECONDS = 0.02
SETTLE_TRIES = 25
WATCH_RETRY_SECONDS = 1.0

# Settings bound at start-up (sockets, the upstream pool, the state file); a change is reported,
# applied on restart.
RESTART_ONLY = (
    "listen", "admin.host", "admin.port", "upstream", "state_file", "state.store", "state.path", "state.collection",
    "limits.max_connections",
    "limits.max_header_bytes", "limits.max_header_count", "limits.header_timeout", "limits.idle_timeout",
    "limits.body_timeout",
)

# Returns the snapshot to publish (with the effective split), given the current one and the new config's.


def read_config_bytes(path: str | Path) -> bytes:
    """The file's bytes, up to one past the size limit (the parse refuses it). Raises OSError."""
    with open(path, "rb") as handle:
        return handle.read(MAX_CONFIG_BYTES + 1)


def parse_config_bytes(data: bytes) -> Config:
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config: the file is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    return parse_config(data.decode("utf-8", errors="replace"))


def read_config(path: str | Path) -> tuple[Config, str]:
    """Read and validate the file: (config, content hash). Raises ConfigError naming the problem."""
    try:
        data = read_config_bytes(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return parse_config_bytes(data), hashlib.sha256(data).hexdigest()


class ConfigReloader:
    def __init__(
        self, live: LiveConfig, metrics: Metrics, controller: RolloutController, embedders: EmbedderSet | None = None,
        ignore: Callable[[str], bool] = lambda path: False,
    ):
        self.live = live
        self.metrics = metrics
        self.controller = controller  # publishes each applied config (the one writer of live.snapshot)
        self.embedders = embedders
        self.ignore = ignore  # files of the proxy's own beside the config (the state file)
        self._lock = asyncio.Lock()
        self._failed_hash: str | None = None
        self._unreadable: str | None = None  # the read error last reported
        self._requested = False
        self._requested_task: asyncio.Task | None = None  # referenced: the loop keeps only a weak one

    def request(self, trigger: str) -> None:
        """Reload soon (SIGHUP): however many requests arrive, at most one waits behind a running reload."""
        if self._requested:
            return
        self._requested = True
        self._requested_task = asyncio.get_running_loop().create_task(self.reload(trigger, requested=True))

    async def reload(self, trigger: str, requested: bool = False) -> bool:
        """Re-read the file; apply it if its content changed and it is valid. True if applied.
        Never raises: a reload that fails unexpectedly is logged and counted, and the next one runs."""
        async with self._lock:  # the watch, the poll and SIGHUP may fire together
            if requested:
                self._requested = False
            try:
                return await self._reload(trigger)
            except Exception as exc:  # noqa: BLE001 - a bug in one reload must not end reloading
                log.exception("config reload (%s) failed unexpectedly; still serving generation %d",
                              trigger, self.live.snapshot.generation)
                self._record("failure", f"internal error: {exc!r}")
                return False

    async def _reload(self, trigger: str) -> bool:
        data, error = await self._read()
        if error is None and self._known(data):
            return False
        data, error = await self._settled(data, error)
        if error is not None:
            self._report_unreadable(error, trigger)
            return False
        if self._known(data):
            return False
        return await self._apply(data, trigger)

    async def _read(self) -> tuple[bytes | None, str | None]:
        try:
            return await asyncio.to_thread(read_config_bytes, self.live.config_path), None
        except OSError as exc:
            return None, f"cannot read config file {self.live.config_path}: {exc.strerror or exc}"

    def _known(self, data: bytes) -> bool:
        """Already serving this content, or already rejected it."""
        content_hash = hashlib.sha256(data).hexdigest()
        if content_hash == self.live.snapshot.content_hash:
            if self.live.last_reload.result != "success":
                self._back_in_step()
            return True
        return content_hash == self._failed_hash

    async def _settled(self, data: bytes | None, error: str | None) -> tuple[bytes | None, str | None]:
        """The outcome once two reads SETTLE_SECONDS apart agree, so that a file being rewritten in
        place (truncated, then written) is never applied half-written, nor a swap's instant reported."""
        for _ in range(SETTLE_TRIES):
            await asyncio.sleep(SETTLE_SECONDS)
            again = await self._read()
            if again == (data, error):
                break
            data, error = again
        return data, error

    def _report_unreadable(self, error: str, trigger: str) -> None:
        if error == self._unreadable:
            return  # reported once until it changes
        self._unreadable = error
        self._failed_hash = None
        log.warning("config reload (%s): %s; still serving generation %d", trigger, error, self.live.snapshot.generation)
        self._record("failure", error)

    def _back_in_step(self) -> None:
        """The file says again what is being served (after an unreadable or rejected one)."""
        self._unreadable = self._failed_hash = None
        log.info("config file matches the served generation %d again", self.live.snapshot.generation)
        self.live.last_reload = ReloadOutcome("success", time.time())
        self.metrics.last_reload_ok.set(1)

    async def _apply(self, data: bytes, trigger: str) -> bool:
        content_hash = hashlib.sha256(data).hexdigest()
        self._unreadable = None
        try:
            config = await asyncio.to_thread(parse_config_bytes, data)
        except ConfigError as exc:
            self._failed_hash = content_hash
            self._record("failure", str(exc))
            log.error("config reload (%s) rejected, keeping generation %d:\n%s", trigger, self.live.snapshot.generation, exc)
            return False
        self._failed_hash = None
        current = self.live.snapshot  # read after the parse: the rollout controller may have published meanwhile
        for setting in _restart_only_changes(current.config, config):
            log.warning("config: `%s` changed; it applies on restart", setting)
        self.metrics.count_from_zero(config.routes, config.embedders)
        if self.embedders is not None:
            self.embedders.apply(config.embedders)
        snapshot = self.controller.apply_config(Snapshot.of(config, current.generation + 1, content_hash))
        self._record("success", None)
        self.metrics.config_generation.set(snapshot.generation)
        log.info("config generation %d applied (%s): %s", snapshot.generation, trigger, _split_summary(snapshot))
        return True

    def _record(self, result: str, error: str | None) -> None:
        now = time.time()
        self.live.last_reload = ReloadOutcome(result, now, error)
        self.metrics.reloads.labels(result).inc()
        self.metrics.last_reload_ok.set(1 if result == "success" else 0)
        self.metrics.last_reload_time.set(now)

    async def watch(self, stop: asyncio.Event) -> None:
        """Directory events (debounced to well under the 1 s target) plus a slow poll as a backstop."""
        directory = Path(self.live.config_path).parent  # not resolved: see the module's docstring
        poll = asyncio.create_task(self._poll(stop))
        try:
            while not stop.is_set():
                try:
                    async for _changes in watchfiles.awatch(
                        directory, stop_event=stop, debounce=150, step=30, recursive=False, ignore_permission_denied=True,
                        watch_filter=lambda change, path: not self.ignore(path),
                    ):
                        await self.reload("file event")
                except Exception:  # noqa: BLE001 - e.g. the directory vanished: the poll carries on meanwhile
                    log.exception("watching %s failed; watching again in %gs", directory, WATCH_RETRY_SECONDS)
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=WATCH_RETRY_SECONDS)
                    except asyncio.TimeoutError:
                        pass
        finally:
            poll.cancel()

    async def _poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            interval = self.live.snapshot.config.reload.poll_interval
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
