"""Process and port helpers shared by the tests: real servers on loopback, always cleaned up."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from qdrant_client import QdrantClient

from proxy.process import stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except Exception as exc:  # noqa: BLE001 - any failure means "not up yet"
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last_error}")


class ServerProcess:
    """A child process serving HTTP on loopback; stopped (and reaped) on exit."""

    def __init__(self, args: list[str], ready_url: str, log_path: Path, env: dict | None = None):
        self.args = args
        self.ready_url = ready_url
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args, cwd=REPO_ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_http_ok(self.ready_url, timeout=timeout, process=self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.args} failed to start; log:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        returncode = stop_process(self.process, timeout)
        self._log.close()
        return returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_embedded_upstream(
    data_dir: Path, log_dir: Path, port: int | None = None, grpc_port: int | None = None,
) -> tuple[ServerProcess, str]:
    """The embedded upstream as a child process: (server, REST base URL). With `grpc_port`, it serves
    Qdrant's gRPC API there too (listening before the REST URL answers)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    grpc_args = [] if grpc_port is None else ["--grpc-port", str(grpc_port)]
    server = ServerProcess(
        [sys.executable, "-m", "bluegreen_dev.embedded", "--data", str(data_dir), "--host", "127.0.0.1", "--port", str(port), *grpc_args],
        ready_url=url + "/",
        log_path=log_dir / f"upstream-{port}.log",
    )
    return server.start(), url


def start_echo_upstream(log_dir: Path, *options: str) -> tuple[ServerProcess, str]:
    """The recording upstream (tests.echo_upstream) as a child process: (server, base URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        [sys.executable, "-m", "tests.echo_upstream", "--port", str(port), *options],
        ready_url=url + "/", log_path=log_dir / f"echo-{port}.log",
    )
    return server.start(), url


def write_atomically(path: Path, text: str) -> None:
    """Save the way editors do: write a temp file, then rename over the original."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02):
    """Poll until predicate() returns a truthy value; return it, or raise with the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s (last value: {value!r})")


class RunningProxy:
    """`bluegreen-proxy serve` as a child process with its config file in a directory of its own."""

    def __init__(
        self, config_dir: Path, upstream_url: str, routes_yaml: str, extra_yaml: str = "",
        upstream_options: str = "timeout: 10s", admin_options: str = "",
    ):
        self.config_dir = config_dir
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = config_dir / "bluegreen.yaml"
        self.data_port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.data_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.upstream_url = upstream_url
        self.extra_yaml = extra_yaml
        self.upstream_options = upstream_options
        self.admin_options = f", {admin_options}" if admin_options else ""
        self.write_routes(routes_yaml)
        self.server = ServerProcess(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(self.config_path)],
            ready_url=self.admin_url + "/healthz",
            log_path=config_dir / "proxy.log",
        )

    def config_text(self, routes_yaml: str) -> str:
        return (
            f"listen: {{host: 127.0.0.1, port: {self.data_port}}}\n"
            f"admin: {{host: 127.0.0.1, port: {self.admin_port}{self.admin_options}}}\n"
            f"upstream: {{url: '{self.upstream_url}', {self.upstream_options}}}\n"
            f"{self.extra_yaml}"
            f"routes:\n{routes_yaml}"
        )

    def write_routes(self, routes_yaml: str) -> None:
        write_atomically(self.config_path, self.config_text(routes_yaml))

    def admin_json(self, path: str = "/admin/routes") -> dict:
        import json

        with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
            return json.loads(response.read())

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as response:
            return response.read().decode()

    def start(self) -> "RunningProxy":
        self.server.start()
        return self

    def stop(self) -> int | None:
        return self.server.stop()

    def __enter__(self) -> "RunningProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0.0 when none)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{key}="{val}"' in series for key, val in labels.items()):
            total += float(value)
    return total


def qdrant_client(url: str, **options) -> QdrantClient:
    """The real qdrant-client over REST. Its version check runs in a background thread that can outlive a
    short test's servers and warn into the next test, so it is off here and tested on its own."""
    return QdrantClient(url=url, prefer_grpc=False, check_compatibility=False, **options)


def qdrant_grpc_client(url: str, grpc_port: int, **options) -> QdrantClient:
    """The real qdrant-client over gRPC (prefer_grpc=True): `grpc_port` on the host of `url` (REST)."""
    return QdrantClient(url=url, grpc_port=grpc_port, prefer_grpc=True, check_compatibility=False, **options)


ADMIN_TOKEN = "test-admin-token"


def route_yaml(logical: str, blue: str, green: str, percent: float, **extra) -> str:
    """One route of a config's `routes:` block; `extra` adds its other keys as written."""
    lines = [f"  {logical}:", f"    blue: {blue}", f"    green: {green}", f"    green_percent: {percent}"]
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"
