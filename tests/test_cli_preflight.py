"""`bluegreen-proxy preflight` in process through `main`, against the embedded upstream."""
from __future__ import annotations

import uuid

import pytest
from qdrant_client import models

from proxy.cli import main
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tests.support import free_port, qdrant_client


@pytest.fixture(scope="module")
def config(embedded_upstream, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    blue, green, missing = f"pf_{tag}_blue", f"pf_{tag}_green", f"pf_{tag}_missing"
    client = qdrant_client(embedded_upstream)
    for name in (blue, green):
        client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
        client.upsert(name, [models.PointStruct(id=i, vector=[1.0, 0.0, 0.0, float(i)]) for i in range(3)], wait=True)
    client.close()
    path = tmp_path_factory.mktemp("preflight") / "bluegreen.yaml"
    path.write_text(f"upstream: {{url: '{embedded_upstream}'}}\nroutes:\n"
                    f"  good: {{blue: {blue}, green: {green}, preflight: {{expect: {{size: 4, distance: Cosine}}}}}}\n"
                    f"  bad: {{blue: {blue}, green: {missing}}}\n")
    return str(path), blue, green


def test_each_route_passes_or_fails_with_its_checks(config, capsys):
    path, blue, green = config
    assert main(["preflight", "--config", path, "good"]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"good: blue {blue}, green {green}: PASS"
    assert "  [ok] vectors: size 4, distance Cosine" in out and "  [ok] point_count: green 3, blue 3: drift 0.00% (within 1.00%)" in out
    assert main(["preflight", "--config", path]) == EXIT_FAILED  # `bad` fails
    out = capsys.readouterr().out
    assert "bad: blue" in out and "FAIL (no preflight settings: defaults)" in out and "[FAIL] green_exists" in out


def test_usage_errors_exit_2(config, tmp_path, capsys):
    path, _, _ = config
    assert main(["preflight", "--config", path, "nope"]) == EXIT_USAGE
    assert "no such route(s): nope" in capsys.readouterr().err
    embedded = tmp_path / "embedded.yaml"
    embedded.write_text(f"upstream: {{url: embedded, data_dir: '{tmp_path}'}}\n")
    assert main(["preflight", "--config", str(embedded)]) == EXIT_USAGE
    assert "pass --upstream URL" in capsys.readouterr().err


def test_an_unreachable_upstream_is_one_line_and_exit_1(config, capsys):
    path, _, _ = config
    port = free_port()
    assert main(["preflight", "--config", path, "--upstream", f"http://127.0.0.1:{port}", "good"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"preflight: upstream unreachable: 127.0.0.1:{port}: ") and err.count("\n") == 1
