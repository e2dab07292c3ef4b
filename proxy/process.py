"""Stopping child processes the same way everywhere: the proxy's embedded upstream, the demo,
the tests' servers and the benchmark's children."""
from __future__ import annotations

import subprocess


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
