"""The admin commands in process through `main` (status, status --once, rollback, resume) and
proxy/cli/admin_client.py, against a real proxy's admin listener."""
from __future__ import annotations

import json
import uuid

import pytest

from proxy.cli import main
from proxy.cli.admin_client import AdminClient
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK
from tests.support import ADMIN_TOKEN, RunningProxy, free_port, route_yaml


@pytest.fixture(scope="module")
def proxy(embedded_upstream, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    running = RunningProxy(tmp_path_factory.mktemp("cli-admin"), embedded_upstream,
                           route_yaml("docs", f"docs_{tag}_v1", f"docs_{tag}_v2", 50), admin_options=f"token: {ADMIN_TOKEN}")
    with running:
        yield running


def test_status_prints_each_route_and_json_prints_the_document(proxy, capsys):
    assert main(["status", "--admin", proxy.admin_url]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("config generation ") and "last reload: " in out
    assert "docs: docs_" in out and "configured 50%  effective 50%  state active" in out
    assert main(["status", "--config", str(proxy.config_path), "--json"]) == EXIT_OK  # the address from the config
    assert json.loads(capsys.readouterr().out)["routes"]["docs"]["green_percent"] == 50


def test_rollback_needs_the_token_then_resume_lifts_it(proxy, capsys, monkeypatch):
    monkeypatch.delenv("BLUEGREEN_ADMIN_TOKEN", raising=False)
    assert main(["rollback", "docs", "--reason", "on-call", "--admin", proxy.admin_url, "--token", "nope"]) == EXIT_FAILED
    assert capsys.readouterr().err.startswith("rollback refused (401): ")
    monkeypatch.setenv("BLUEGREEN_ADMIN_TOKEN", ADMIN_TOKEN)
    assert main(["rollback", "docs", "--reason", "on-call", "--admin", proxy.admin_url]) == EXIT_OK
    assert capsys.readouterr().out == "docs: state rolled_back, effective green 0%\n"
    assert main(["status", "--admin", proxy.admin_url]) == EXIT_OK
    assert "state rolled_back  reason: " in capsys.readouterr().out
    assert main(["resume", "docs", "--admin", proxy.admin_url]) == EXIT_OK
    assert capsys.readouterr().out == "docs: state active, effective green 50%\n"
    assert main(["resume", "nope", "--admin", proxy.admin_url]) == EXIT_FAILED
    assert "resume refused (404)" in capsys.readouterr().err


def test_status_once_draws_one_frame(proxy, capsys):
    assert main(["status", "--once", "--admin", proxy.admin_url]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"bluegreen-proxy status  {proxy.admin_url}" in out and "docs" in out and "50%" in out


def test_an_unreachable_admin_listener_is_one_line_and_exit_1(capsys):
    nowhere = f"http://127.0.0.1:{free_port()}"
    for command in (["status"], ["rollback", "docs", "--reason", "x"], ["resume", "docs"]):
        assert main([*command, "--admin", nowhere]) == EXIT_FAILED
        err = capsys.readouterr().err
        assert err.startswith(f"bluegreen-proxy: cannot reach the admin listener at {nowhere}: ") and err.count("\n") == 1


def test_admin_client_answers_error_statuses_as_documents(proxy):
    status, document = AdminClient(proxy.admin_url, ADMIN_TOKEN).call("POST", "/admin/routes/unknown/rollback", {"reason": "x"})
    assert status == 404 and document["status"]["error"]
    assert b"bluegreen_" in AdminClient(proxy.admin_url).get("/metrics")
