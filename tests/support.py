"""Process and port helpers shared by the tests: real servers on loopback, always cleaned up."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_embedded_upstream(data_dir: Path, log_dir: Path, port: int | None = None) -> tuple[ServerProcess, str]:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        [sys.executable, "-m", "proxy.embedded", "--data", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        ready_url=url + "/",
        log_path=log_dir / f"upstream-{port}.log",
    )
    return server.start(), url
