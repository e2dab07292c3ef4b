"""proxy/cli/check.py and serve.py's argument and config handling, in process through `main`."""
from __future__ import annotations

import pytest

from proxy.cli import main
from proxy.cli.exit_codes import EXIT_OK, EXIT_USAGE


def write(tmp_path, text: str):
    path = tmp_path / "bluegreen.yaml"
    path.write_text(text)
    return str(path)


def test_check_prints_listeners_clients_routes_and_embedders(tmp_path, capsys):
    config = write(tmp_path, (
        "listen: {host: 127.0.0.1, port: 7000}\n"
        "upstream: {url: 'http://127.0.0.1:6333'}\n"
        "clients: {api_keys: [{key: k-secret-1, access: r, collections: [docs]}]}\n"
        "embedders:\n  small: {type: local, model: wordllama-256}\n"
        "  svc: {type: openai, url: 'http://user:pw@embed.local/v1', model: m, dimensions: 64}\n"
        "routes:\n  docs: {blue: docs_v1, green: docs_v2, green_percent: 25, writes: both,"
        " embed: {blue: small, green: svc}, failover: true}\n"
    ))
    assert main(["check", "--config", config]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{config}: valid"
    assert out[1].startswith("listen 127.0.0.1:7000  admin 127.0.0.1:9901  upstream http://127.0.0.1:6333")
    assert out[2] == "clients: 1 api key(s), no jwt, anonymous none"
    row = next(line.split() for line in out if line.startswith("docs "))
    assert row[:5] == ["docs", "docs_v1", "docs_v2", "25", "both"] and row[6] == "failover"
    assert "embedder small: local wordllama-256 (in process, 256 dims)" in out
    assert any(line.startswith("embedder svc: openai m (") and "pw" not in line for line in out)
    assert "route docs embeds text with: blue small, green svc" in out
    assert "secret" not in "\n".join(out)


def test_check_warns_when_a_reachable_data_port_checks_no_clients(tmp_path, capsys):
    config = write(tmp_path, "listen: {host: 0.0.0.0}\nupstream: {url: 'http://127.0.0.1:6333'}\n")
    assert main(["check", "--config", config]) == EXIT_OK
    out = capsys.readouterr().out
    assert "WARNING: listen.host 0.0.0.0 reaches beyond this machine: add a `clients` block" in out
    assert "no routes: every request passes through unchanged" in out


def test_check_shows_the_grpc_listener_and_warns_when_it_is_reachable_without_clients(tmp_path, capsys):
    config = write(tmp_path, (
        "listen: {host: 127.0.0.1, port: 7000}\ngrpc: {host: 0.0.0.0, port: 7001}\n"
        "upstream: {url: 'http://qdrant:6336', grpc_url: 'qdrant:6334'}\n"
    ))
    assert main(["check", "--config", config]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[1].endswith("upstream http://qdrant:6336  grpc 0.0.0.0:7001 -> qdrant:6334")
    assert "WARNING: grpc.host 0.0.0.0 reaches beyond this machine: add a `clients` block" in out
    assert "WARNING: listen.host" not in out


def test_an_invalid_config_names_the_field_and_exits_2(tmp_path, capsys):
    config = write(tmp_path, "routes:\n  docs: {blue: a, green: b, green_percent: 120}\n")
    assert main(["check", "--config", config]) == EXIT_USAGE
    assert "routes.docs.green_percent: must be <= 100" in capsys.readouterr().err
    assert main(["serve", "--config", config]) == EXIT_USAGE
    assert "routes.docs.green_percent: must be <= 100" in capsys.readouterr().err


def test_serve_addresses_must_be_host_and_port(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--config", "x.yaml", "--listen", "nowhere"])
    assert exit_.value.code == EXIT_USAGE
    assert "argument --listen: expected HOST:PORT, got 'nowhere'" in capsys.readouterr().err
