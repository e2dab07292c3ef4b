"""Child processes: stopping them the same way everywhere (the proxy's embedded upstream, the demo,
the tests' servers and the benchmark's children), and the embedded upstream the proxy starts itself."""
from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM (a clean shutdown), then SIGKILL if it has not exited within `timeout`; its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class EmbeddedUpstreamError(RuntimeError):
    """`upstream.url: embedded` could not start its child process."""


class EmbeddedUpstream:
    """`upstream.url: embedded`: the qdrant-edge upstream as a child process, stopped with the proxy."""

    def __init__(self, data_dir: str, port: int | None):
        self.data_dir = data_dir
        self.port = port or free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        if importlib.util.find_spec("qdrant_edge") is None:
            raise EmbeddedUpstreamError('upstream.url: embedded needs the demo extra: pip install "bluegreen-proxy[demo]"')
        try:
            Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedUpstreamError(f"upstream.data_dir {self.data_dir}: {exc.strerror or exc}") from None
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


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
