"""Wiring: the data listener, the admin listener, the config watcher, the rollout controller and (when
configured) the embedded upstream, started and stopped together."""
from __future__ import annotations

# First, before anything imports grpc (qdrant-client does): grpc core's I/O mode for the gRPC face.
import proxy.dataplane.grpc_io  # noqa: F401  isort: skip

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

import uvicorn

from proxy.control.admin import build_admin_app
from proxy.dataplane.app import ProxyApp
from proxy.embedding.embedders import EmbedderSet
from proxy.dataplane.inference import TextInference
from proxy.metrics import Metrics
from proxy.host import allow_open_files, freeze_start_up_objects, keep_large_blocks_returnable
from proxy.process import EmbeddedUpstream
from proxy.dataplane.protocol import announce_grpc_port, limited_protocol
from proxy.control.reload import ConfigReloader, read_config
from proxy.dataplane.live import LiveConfig
from proxy.control.rollout_store import open_state_store, read_at_start
from proxy.control.rollout_controller import RolloutController
from proxy.dataplane.upstream import UpstreamClient
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


ADMIN_GRACE_SECONDS = 5.0  # the admin listener's answers are quick; it closes after the data listener
CUT_OFF_ANSWER_SECONDS = 1.0  # for the requests cut off at the end of the grace time to write their 503


def _uvicorn_config(app, address: Address, limits: Limits, grace: float) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=address.host,
        port=address.port,
        http=limited_protocol(limits),
        ws="none",  # not Qdrant's API: an upgrade is refused in the envelope (proxy.dataplane.protocol)
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,  # the upstream's own headers pass through unchanged
        date_header=False,
        proxy_headers=False,  # forwarded-for handling is for the upstream to see, not ours to consume
        timeout_keep_alive=limits.idle_timeout,
        timeout_graceful_shutdown=grace,  # the data listener's is set again when the signal comes
    )


def _freeze_start_up_objects(*servers: uvicorn.Server) -> None:
    """Load uvicorn's protocol modules first, so they are frozen with the rest of start-up."""
    for server in servers:
        server.config.load()
    freeze_start_up_objects()


async def _answer_cut_off_requests(server: uvicorn.Server, app: ProxyApp, grace: float) -> None:
    """uvicorn cancels the requests its grace time left running and returns without waiting: let them
    write their 503 (ProxyApp) before the upstream pool closes."""
    cancelled = list(server.server_state.tasks)
    if cancelled:
        await asyncio.wait(cancelled, timeout=CUT_OFF_ANSWER_SECONDS)
    if app.cut_off:
        log.warning("shutdown: %d request(s) still running after shutdown.grace_period %gs answered 503", app.cut_off, grace)


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


async def serve(
    config_path: str, listen: Address | None = None, admin: Address | None = None, import_state: str | None = None,
) -> int:
    config, content_hash = read_config(config_path)
    listen = listen or Address(config.listen.host, config.listen.port)
    admin = admin or Address(config.admin.host, config.admin.port)

    embedded = None
    upstream_url = config.upstream.url
    grpc_target = None if config.upstream.is_embedded else config.upstream.grpc_target
    if config.upstream.is_embedded:
        embedded = EmbeddedUpstream(config.upstream.data_dir, config.upstream.embedded_port)
        await asyncio.to_thread(embedded.start)
        upstream_url, grpc_target = embedded.url, embedded.grpc_target
        log.info("embedded upstream (development only) on %s, data in %s (Ctrl-C stops it with the proxy)",
                 upstream_url, os.path.abspath(config.upstream.data_dir))

    try:
        return await _serve(config, content_hash, config_path, upstream_url, grpc_target, listen, admin, import_state)
    finally:
        if embedded is not None:
            embedded.stop()


# Long, 8 parameters: the wiring itself, start to shutdown in order, each step a call to its owner;
# the parameters are what `serve` was given, passed on as they came.
async def _serve(
    config: Config, content_hash: str, config_path: str, upstream_url: str, grpc_target: str, listen: Address,
    admin: Address, import_state: str | None,
) -> int:
    # Absolute but not resolved: a Kubernetes ConfigMap's path goes through symlinks that are swapped.
    live = LiveConfig.initial(config, content_hash, os.path.abspath(config_path))
    metrics = Metrics()
    metrics.count_from_zero(config.routes, config.embedders)
    metrics.config_generation.set(1)
    metrics.last_reload_ok.set(1)
    metrics.last_reload_time.set(time.time())
    embedders = await _start_embedders(config, metrics)
    upstream = UpstreamClient(upstream_url, config.upstream)
    await upstream.start()
    store = await open_state_store(config, config_path, upstream.fetch_json, metrics, import_state)
    log.info("rollout state: %s (bound at start-up)", store.describe())
    safety = RolloutController(live, metrics, upstream.fetch_json, store, await read_at_start(store))

    reloader = ConfigReloader(live, metrics, safety, embedders, ignore=store.owns)

    keep_large_blocks_returnable()
    allow_open_files(config.limits.max_connections + config.upstream.max_connections)
    inference = TextInference(embedders, metrics)  # text in, for REST and gRPC alike
    data_app = ProxyApp(live, upstream, metrics, observer=safety, inference=inference)
    data_server = _Server(_uvicorn_config(data_app, listen, config.limits, config.shutdown_grace_period))
    shutting_down = asyncio.Event()  # /readyz answers 503 from the signal on
    admin_app = build_admin_app(live, metrics, safety, shutting_down)
    admin_server = _Server(_uvicorn_config(admin_app, admin, config.limits, ADMIN_GRACE_SECONDS))
    _freeze_start_up_objects(data_server, admin_server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def close_data_listener() -> None:
        data_server.should_exit = True

    def shut_down() -> None:
        """SIGTERM/SIGINT: not ready at once; the data listener closes after shutdown.drain_delay and the
        requests in progress get shutdown.grace_period (as the config says now); the admin listener, which
        the probes read, closes last."""
        if shutting_down.is_set():
            return
        shutting_down.set()
        settings = live.snapshot.config
        grace = data_server.config.timeout_graceful_shutdown = settings.shutdown_grace_period
        drain = settings.shutdown.drain_delay or 0.0
        log.info("shutting down: /readyz answers 503; the data listener closes in %gs, requests in progress get %gs", drain, grace)
        loop.call_later(drain, close_data_listener)

    async def serve_data() -> None:
        try:
            await data_server.serve()
            await _answer_cut_off_requests(data_server, data_app, live.snapshot.config.shutdown_grace_period)
        finally:
            admin_server.should_exit = True

    async def serve_admin() -> None:
        try:
            await admin_server.serve()
        finally:
            shut_down()  # the admin listener failed: the data side goes too

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shut_down)
    loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")

    grpc_face = None
    if config.grpc is not None:  # Qdrant's gRPC API, on this loop and this live snapshot
        from proxy.dataplane.grpc_face import GrpcFace  # grpc and its schema load only when configured

        grpc_face = GrpcFace(live, metrics, safety, config.upstream, grpc_target, config.grpc, inference, shadow=data_app.shadow)

    watcher = asyncio.create_task(reloader.watch(stop))
    safety_clock = asyncio.create_task(safety.run(stop))
    log.info(
        "bluegreen-proxy: data http://%s:%d -> %s, admin http://%s:%d, config %s (generation 1)",
        listen.host, listen.port, upstream_url, admin.host, admin.port, config_path,
    )
    try:
        if grpc_face is not None:
            try:
                await grpc_face.start()
            except RuntimeError as exc:  # grpc could not bind the port: a failed start, as for REST
                log.error("grpc: cannot listen on %s:%d: %s", config.grpc.host, config.grpc.port, exc)
                return 1
            log.info("bluegreen-proxy: gRPC %s:%d -> %s", config.grpc.host, grpc_face.port, grpc_target)
            for server in (data_server, admin_server):
                announce_grpc_port(server.config.http_protocol_class, grpc_face.port)
        await asyncio.gather(serve_data(), serve_admin())
    finally:
        shutting_down.set()
        stop.set()
        data_server.should_exit = admin_server.should_exit = True
        for task in (watcher, safety_clock):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if grpc_face is not None:
            await grpc_face.stop(live.snapshot.config.shutdown_grace_period)
        await safety.flush()
        await data_app.shadow.close()
        await upstream.close()
        await embedders.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    # A listener that could not bind exits without starting: report it as a failed start.
    return 0 if data_server.started and admin_server.started else 1
