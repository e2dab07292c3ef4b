"""How the migrate commands fail and where they leave their files (issue 23, item 11): one clear line
and a non-zero exit with the upstream down, flags refused by name, quiet logging, the checkpoint in a
data directory rather than the current one."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid

import pytest
from qdrant_client import models

from proxy.cli.migrate.progress import Progress
from tests.support import REPO_ROOT, free_port, qdrant_client

DIM = 4


def migrate(*args: str, env: dict | None = None, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy.cli", "migrate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def down_upstream() -> str:
    """The URL of a port nothing listens on (bound once, then released)."""
    return f"http://127.0.0.1:{free_port()}"


SUBCOMMANDS = {
    "plan": ["--from", "docs"],
    "create-green": ["--from", "docs", "--to", "docs_v2"],
    "backfill": ["--from", "docs", "--to", "docs_v2"],
    "validate": ["--from", "docs", "--to", "docs_v2"],
    "promote": ["--alias", "docs_live", "--to", "docs_v2"],
    "decommission": ["docs", "--archive", "ARCHIVE", "--yes"],
}


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_with_the_upstream_down_fails_in_one_line(subcommand, down_upstream, tmp_path):
    flags = [str(tmp_path / "archive") if flag == "ARCHIVE" else flag for flag in SUBCOMMANDS[subcommand]]
    done = migrate(subcommand, "--upstream", down_upstream, *flags, env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert done.stderr.startswith(f"migrate {subcommand}: cannot reach the upstream at {down_upstream}"), done.stderr


@pytest.mark.parametrize("flag, value", [("--size", "-5"), ("--size", "0"), ("--rate", "-1")])
def test_plan_refuses_a_size_or_rate_that_is_not_positive_naming_the_flag(flag, value, down_upstream):
    done = migrate("plan", "--upstream", down_upstream, "--from", "docs", flag, value)
    assert done.returncode == 2
    assert f"argument {flag}: must be " in done.stderr and "Traceback" not in done.stderr


def test_create_green_refuses_a_size_that_is_not_positive(down_upstream):
    done = migrate("create-green", "--upstream", down_upstream, "--from", "docs", "--to", "docs_v2", "--size", "-5")
    assert done.returncode == 2 and "argument --size: must be >= 1" in done.stderr


def test_piped_progress_prints_its_final_line_once():
    now = [0.0]
    out = io.StringIO()
    progress = Progress("blue -> green", total=300, stream=out, clock=lambda: now[0])
    now[0] = 3.0
    progress.advance(100)  # 2 s since the last line: printed
    now[0] = 6.0
    progress.advance(200)  # the last batch, also 2 s after: printed, and it is the final figure
    now[0] = 6.5
    progress.close()  # nothing new to say
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["blue -> green: 100/300 points (33.3%)", "blue -> green: 300/300 points (100.0%)"]


def test_close_prints_the_final_figure_when_the_last_batch_did_not():
    now = [0.0]
    out = io.StringIO()
    progress = Progress("blue -> green", total=300, stream=out, clock=lambda: now[0])
    now[0] = 3.0
    progress.advance(100)
    now[0] = 3.5
    progress.advance(200)  # within 2 s of the last line: held back
    progress.close()
    assert [line.split(",")[0] for line in out.getvalue().splitlines()] == [
        "blue -> green: 100/300 points (33.3%)", "blue -> green: 300/300 points (100.0%)"]


@pytest.fixture
def collections(embedded_upstream):
    """A blue of 30 points and an empty green of its layout."""
    client = qdrant_client(embedded_upstream)
    suffix = uuid.uuid4().hex[:8]
    blue, green = f"blue_{suffix}", f"green_{suffix}"
    for name in (blue, green):
        client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    client.upsert(blue, [models.PointStruct(id=i, vector=[float(i)] * DIM, payload={"text": f"sentence {i}"})
                         for i in range(1, 31)], wait=True)
    yield client, blue, green
    client.close()


def test_backfill_checkpoint_defaults_to_a_data_directory_not_the_current_one(embedded_upstream, collections, tmp_path):
    client, blue, green = collections
    workdir, state = tmp_path / "work", tmp_path / "state"
    workdir.mkdir()
    args = ["backfill", "--upstream", embedded_upstream, "--from", blue, "--to", green]
    done = migrate(*args, env={"XDG_STATE_HOME": str(state), "PYTHONPATH": str(REPO_ROOT)}, cwd=workdir)
    assert done.returncode == 0, done.stderr
    expected = state / "bluegreen-proxy" / "backfill" / f"backfill-{blue}-to-{green}.checkpoint.json"
    assert expected.is_file() and list(workdir.iterdir()) == []
    assert f"checkpoint {expected}" in done.stdout  # says where it is
    assert client.count(green, exact=True).count == 30

    # Blue grows; the same command finds the finished checkpoint and says so, with what changed.
    client.upsert(blue, [models.PointStruct(id=99, vector=[1.0] * DIM, payload={})], wait=True)
    again = migrate(*args, env={"XDG_STATE_HOME": str(state), "PYTHONPATH": str(REPO_ROOT)}, cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert f"already complete per the checkpoint {expected}" in again.stdout
    assert f"{blue} now has 31 points, 30 when it finished" in again.stdout
    assert "delete it or pass another --checkpoint" in again.stdout
    assert client.count(green, exact=True).count == 30  # nothing done, and it said so


def test_reembed_does_not_flood_the_output_with_library_logging(embedded_upstream, collections, tmp_path):
    client, blue, green = collections
    client.delete_collection(green)
    client.create_collection(green, vectors_config=models.VectorParams(size=256, distance=models.Distance.COSINE))
    config = tmp_path / "bluegreen.yaml"
    config.write_text(f"upstream: {{url: '{embedded_upstream}'}}\nembedders:\n  small: {{type: local, model: wordllama-256}}\n")
    done = migrate("backfill", "--config", str(config), "--from", blue, "--to", green, "--embedder", "small",
                   "--text-field", "text", "--batch", "10", "--checkpoint", str(tmp_path / "c.json"))
    assert done.returncode == 0, done.stderr
    assert "INFO" not in done.stderr and "httpx" not in done.stderr, done.stderr
    assert client.count(green, exact=True).count == 30
