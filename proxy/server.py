"""Runs the proxy: data listener, admin listener, config watcher and (optionally) the embedded upstream."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib.util
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from proxy.admin import build_admin_app
from proxy.app import ProxyApp
from proxy.embedders import EmbedderSet
from proxy.inference import TextInference
from proxy.metrics import Metrics
from proxy.process import stop_process
from proxy.protocol import limited_protocol
from proxy.reload import ConfigReloader, read_config
from proxy.live import LiveConfig, Snapshot
from proxy.rollout_store import default_state_file
from proxy.safety import SafetyController
from proxy.upstream import UpstreamClient
from routing.config import Config, ConfigError, Limits

log = logging.getLogger("bluegreen.server")


@dataclass
class Address:
    host: str
    port: int


class _Server(uvicorn.Server):
    """Signals are handled once for both listeners (uvicorn would let the last one win)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class EmbeddedUpstreamError(RuntimeError):
    """`upstream.url: embedded` could not start its child process."""


class EmbeddedUpstream:
    """`upstream.url: embedded`: the qdrant-edge upstream as a child process, stopped with the proxy."""

    def __init__(self, data_dir: str, port: int | None):
        self.data_dir = data_dir
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        if importlib.util.find_spec("qdrant_edge") is None:
            raise EmbeddedUpstreamError('upstream.url: embedded needs the demo extra: pip install "bluegreen-proxy[demo]"')
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bluegreen_dev.embedded", "--data", self.data_dir, "--host", "127.0.0.1", "--port", str(self.port)]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedUpstreamError(f"embedded upstream exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedUpstreamError(f"embedded upstream did not answer on {self.url} within {timeout:g}s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _uvicorn_config(app, address: Address, limits: Limits) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=address.host,
        port=address.port,
        http=limited_protocol(limits),
        ws="none",  # not Qdrant's API: an upgrade is refused in the envelope (proxy.protocol)
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,  # the upstream's own headers pass through unchanged
        date_header=False,
        proxy_headers=False,  # forwarded-for handling is for the upstream to see, not ours to consume
        timeout_keep_alive=limits.idle_timeout,
        timeout_graceful_shutdown=10,
    )


def _allow_open_files(connections: int) -> None:
    """Raise the soft file-descriptor limit toward the hard one, so limits.max_connections client
    connections plus the upstream pool fit; warn when even the hard limit is below that."""
    wanted = connections + 256  # listeners, config watch, logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open-file limit %d is below limits.max_connections + upstream.max_connections + 256 = %d", target, wanted)


def _keep_large_blocks_returnable() -> None:
    """glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so
    after a few large upstream answers the next ones are carved from the heap and their space stays
    with the process when freed (measured: +30 MiB RSS kept after 24 large answers; with a fixed
    threshold, +1 MiB). Fixing it at glibc's default (128 KiB) keeps large blocks in mmap, returned on
    free. Not glibc: nothing to do."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


_M_MMAP_THRESHOLD = -3  # glibc malloc.h


def _freeze_start_up_objects(*servers: uvicorn.Server) -> None:
    """Modules, the app and the first config live as long as the process; left in the collected
    heap, every full collection walks them all and stalls the event loop (26 ms, measured under
    reload churn). Load uvicorn's protocol modules first, so they are frozen too."""
    for server in servers:
        server.config.load()
    gc.collect()
    gc.freeze()


async def _start_embedders(config: Config, metrics: Metrics) -> EmbedderSet:
    """The configured embedders, local models loaded before the first request (a model that cannot
    load stops the start, naming its embedder)."""
    embedders = EmbedderSet(metrics)
    for name, warming in embedders.apply(config.embedders).items():
        try:
            await warming
        except Exception as exc:  # noqa: BLE001 - reported as the config's problem, naming the embedder
            await embedders.close()
            raise ConfigError(f"embedders.{name}: the model {config.embedders[name].model} did not load: {exc}") from None
    return embedders


async def serve(config_path: str, listen: Address | None = None, admin: Address | None = None) -> int:
    config, content_hash = read_config(config_path)
    listen = listen or Address(config.listen.host, config.listen.port)
    admin = admin or Address(config.admin.host, config.admin.port)

    embedded = None
    upstream_url = config.upstream.url
    if config.upstream.is_embedded:
        embedded = EmbeddedUpstream(config.upstream.data_dir, config.upstream.embedded_port)
        await asyncio.to_thread(embedded.start)
        upstream_url = embedded.url
        log.info("embedded upstream (development only) on %s, data in %s (Ctrl-C stops it with the proxy)",
                 upstream_url, os.path.abspath(config.upstream.data_dir))

    try:
        return await _serve(config, content_hash, config_path, upstream_url, listen, admin)
    finally:
        if embedded is not None:
            embedded.stop()


async def _serve(config: Config, content_hash: str, config_path: str, upstream_url: str, listen: Address, admin: Address) -> int:
    # Absolute but not resolved: a Kubernetes ConfigMap's path goes through symlinks that are swapped.
    live = LiveConfig.initial(config, content_hash, os.path.abspath(config_path))
    metrics = Metrics()
    metrics.config_generation.set(1)
    metrics.last_reload_ok.set(1)
    metrics.last_reload_time.set(time.time())
    embedders = await _start_embedders(config, metrics)
    upstream = UpstreamClient(upstream_url, config.upstream)
    await upstream.start()
    state_file = Path(config.state_file) if config.state_file else default_state_file(config_path)
    log.info("rollout state file: %s (bound at start-up)", state_file)
    safety = SafetyController(live, metrics, upstream.fetch_json, state_file)

    def on_applied(old: Snapshot, new: Snapshot) -> Snapshot:
        embedders.apply(new.config.embedders)
        return safety.on_config_applied(old, new)

    reloader = ConfigReloader(live, metrics, on_applied=on_applied, ignore=safety.state_file.owns)

    _keep_large_blocks_returnable()
    _allow_open_files(config.limits.max_connections + config.upstream.max_connections)
    data_app = ProxyApp(live, upstream, metrics, observer=safety, inference=TextInference(embedders, metrics))
    data_server = _Server(_uvicorn_config(data_app, listen, config.limits))
    admin_server = _Server(_uvicorn_config(build_admin_app(live, metrics, safety), admin, config.limits))
    _freeze_start_up_objects(data_server, admin_server)
    stop = asyncio.Event()

    def shut_down() -> None:
        stop.set()
        data_server.should_exit = True
        admin_server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shut_down)
    loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")

    watcher = asyncio.create_task(reloader.watch(stop))
    safety_clock = asyncio.create_task(safety.run(stop))
    log.info(
        "bluegreen-proxy: data http://%s:%d -> %s, admin http://%s:%d, config %s (generation 1)",
        listen.host, listen.port, upstream_url, admin.host, admin.port, config_path,
    )
    try:
        await asyncio.gather(data_server.serve(), admin_server.serve())
    finally:
        shut_down()
        for task in (watcher, safety_clock):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await safety.flush()
        await data_app.shadow.close()
        await upstream.close()
        await embedders.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    # A listener that could not bind exits without starting: report it as a failed start.
    return 0 if data_server.started and admin_server.started else 1
