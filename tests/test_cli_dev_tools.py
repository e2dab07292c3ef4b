"""`bluegreen-proxy upstream` and `demo`: the flags passed on to bluegreen_dev, and the missing extra."""
from __future__ import annotations

import sys
import urllib.request

from proxy.cli import build_parser, main
from proxy.cli.exit_codes import EXIT_USAGE
from proxy.cli.upstream import embedded_argv
from tests.support import ServerProcess, free_port


def test_upstream_flags_are_passed_on_as_given():
    args = build_parser().parse_args(["upstream", "--data", "/tmp/d"])
    assert embedded_argv(args) == ["--data", "/tmp/d", "--host", "127.0.0.1", "--port", "6334"]
    args = build_parser().parse_args(["upstream", "--data", "d", "--host", "0.0.0.0", "--port", "7000"])
    assert embedded_argv(args) == ["--data", "d", "--host", "0.0.0.0", "--port", "7000"]


def test_upstream_command_serves_qdrants_api(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "proxy.cli", "upstream", "--data", str(tmp_path / "data"), "--port", str(port)]
    with ServerProcess(command, url + "/", tmp_path / "upstream.log"):
        with urllib.request.urlopen(url + "/collections", timeout=5) as response:
            assert response.status == 200 and b'"collections"' in response.read()


def test_without_the_demo_extra_the_command_says_which_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bluegreen_dev.demo", None)  # what an install without the extra sees: ImportError
    assert main(["demo", "--quick"]) == EXIT_USAGE
    assert 'pip install "bluegreen-proxy[demo]"' in capsys.readouterr().err
