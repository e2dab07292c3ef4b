"""The migrate commands in process through `main`, against the embedded upstream: one short runbook
(the subprocess tests in test_migrate.py cover each command's cases, kills and faults)."""
from __future__ import annotations

import uuid

from qdrant_client import models

from proxy.cli import main
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK
from tests.support import free_port, qdrant_client


def test_plan_create_backfill_validate_promote(embedded_upstream, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    tag = uuid.uuid4().hex[:8]
    blue, green, alias = f"mig_{tag}", f"mig_{tag}_v2", f"mig_{tag}_live"
    client = qdrant_client(embedded_upstream)
    client.create_collection(blue, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    client.upsert(blue, [models.PointStruct(id=i, vector=[float(i), 1.0, 0.0, 0.5], payload={"n": i}) for i in range(1, 51)], wait=True)
    upstream = ["--upstream", embedded_upstream]

    assert main(["migrate", "plan", *upstream, "--from", blue, "--rate", "10"]) == EXIT_OK
    assert f"plan for {blue}: 50 points" in capsys.readouterr().out
    assert main(["migrate", "create-green", *upstream, "--from", blue, "--to", green]) == EXIT_OK
    assert f"created {green} from {blue}'s layout" in capsys.readouterr().out
    assert main(["migrate", "backfill", *upstream, "--from", blue, "--to", green, "--batch", "20"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'state' / 'bluegreen-proxy' / 'backfill'}" in out and "backfill complete: 50 points" in out
    assert main(["migrate", "validate", *upstream, "--from", blue, "--to", green]) == EXIT_OK
    assert "all checks passed" in capsys.readouterr().out
    assert main(["migrate", "promote", *upstream, "--alias", alias, "--to", green]) == EXIT_OK
    assert f"alias {alias} created -> {green}" in capsys.readouterr().out
    assert client.count(alias, exact=True).count == 50
    client.close()


def test_an_unreachable_upstream_is_one_line(capsys):
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert main(["migrate", "promote", "--upstream", nowhere, "--alias", "a", "--to", "b"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"migrate promote: cannot reach the upstream at {nowhere}: ") and err.count("\n") == 1
