"""proxy.process in-process: stopping children, and the embedded upstream child the proxy starts."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from proxy.process import EmbeddedUpstream, EmbeddedUpstreamError, stop_process


def test_stop_process_terminates_a_child_that_exits_on_sigterm():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    assert stop_process(child, timeout=10) == -signal.SIGTERM
    assert time.monotonic() - started < 5


def test_stop_process_kills_a_child_that_ignores_sigterm():
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert stop_process(child, timeout=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 5
    child.stdout.close()


def test_stop_process_of_an_exited_child_returns_its_code():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    child.wait()
    assert stop_process(child) == 3


def test_embedded_upstream_serves_qdrant_rest_until_stopped(tmp_path):
    upstream = EmbeddedUpstream(str(tmp_path / "data"), None)
    upstream.start()
    try:
        with urllib.request.urlopen(upstream.url + "/collections", timeout=5) as response:
            assert response.status == 200
        assert (tmp_path / "data").is_dir()
    finally:
        upstream.stop()
    assert upstream.process.returncode is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(upstream.url + "/", timeout=2)


def test_embedded_upstream_that_cannot_bind_its_port_is_reported(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        upstream = EmbeddedUpstream(str(tmp_path / "data"), taken.getsockname()[1])
        with pytest.raises(EmbeddedUpstreamError, match="embedded upstream exited with"):
            upstream.start(timeout=60)


def test_embedded_upstream_data_dir_that_is_a_file_is_reported(tmp_path):
    not_a_directory = tmp_path / "data"
    not_a_directory.write_text("")
    with pytest.raises(EmbeddedUpstreamError, match=f"upstream.data_dir {not_a_directory}: File exists"):
        EmbeddedUpstream(str(not_a_directory), None).start()
