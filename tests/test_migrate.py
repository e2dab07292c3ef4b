"""`bluegreen-proxy migrate ...` as a subprocess against the embedded upstream (and the fault proxy)."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import uuid

import pytest
from qdrant_client import QdrantClient, models

from proxy.cli.migrate.checkpoint import Checkpoint
from proxy.cli.migrate.green_layout import green_create_request
from proxy.cli.migrate.point_compare import same_vector
from tests.faults import clear_faults, set_fault, start_fault_proxy
from tests.support import REPO_ROOT, qdrant_client, wait_until

DIM = 8
POINTS = 3000
UUID_POINTS = 40  # scrolled after the integer ids: the checkpoint offset is then a UUID string


def migrate(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy.cli", "migrate", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def client(embedded_upstream):
    qdrant = qdrant_client(embedded_upstream, timeout=60)
    yield qdrant
    qdrant.close()


@pytest.fixture
def names():
    suffix = uuid.uuid4().hex[:8]
    return f"blue_{suffix}", f"green_{suffix}"


def make_blue(client: QdrantClient, name: str, points: int = POINTS, dim: int = DIM) -> list:
    """HNSW m=24, int8 scalar quantization, a keyword (tenant) and an integer payload index."""
    client.create_collection(
        name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        hnsw_config=models.HnswConfigDiff(m=24, ef_construct=64),
        quantization_config=models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=0.99, always_ram=True)),
    )
    client.create_payload_index(name, "lang", models.KeywordIndexParams(type="keyword", is_tenant=True), wait=True)
    client.create_payload_index(name, "n", models.PayloadSchemaType.INTEGER, wait=True)
    rng = random.Random(7)
    ids = list(range(1, points + 1 - UUID_POINTS)) + [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(UUID_POINTS)]
    rng.shuffle(ids)
    for start in range(0, len(ids), 500):
        client.upsert(name, [
            models.PointStruct(id=i, vector=[rng.uniform(-1, 1) for _ in range(dim)], payload={
                "lang": rng.choice(["en", "de", "fr"]), "n": start + k, "text": f"sentence number {start + k}",
                "meta": {"tags": [rng.choice("abc")], "score": rng.random()}})
            for k, i in enumerate(ids[start:start + 500])
        ], wait=True)
    return ids


def retrieve_all(client: QdrantClient, name: str, ids: list) -> dict:
    return {p.id: p for p in client.retrieve(name, ids, with_payload=True, with_vectors=True)}


def versions(client: QdrantClient, name: str) -> dict:
    """Each point's version (the update that last wrote it), as the query API reports it."""
    points = client.query_points(name, query=[1.0] * DIM, limit=POINTS + 10, with_payload=False).points
    return {p.id: p.version for p in points}


def summary(output: str) -> dict:
    """The numbers of the `backfill complete: ...` line."""
    line = next(line for line in output.splitlines() if line.startswith("backfill complete"))
    words = line.replace(",", "").replace("(", "").split()
    return {"scanned": int(words[2]), "written": int(words[words.index("written") - 1]),
            "identical": int(words[words.index("already") - 1])}


# ---------------------------------------------------------------- create-green


def test_create_green_copies_layout_and_payload_indexes(embedded_upstream, client, names):
    blue, green = names
    client.create_collection(blue, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                             hnsw_config=models.HnswConfigDiff(m=24),
                             quantization_config=models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type="int8")),
                             optimizers_config=models.OptimizersConfigDiff(indexing_threshold=5000))
    client.create_payload_index(blue, "lang", models.PayloadSchemaType.KEYWORD, wait=True)
    client.create_payload_index(blue, "tenant", models.KeywordIndexParams(type="keyword", is_tenant=True), wait=True)

    done = migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--size", "16", "--distance", "dot")
    assert done.returncode == 0, done.stderr
    info = client.get_collection(green)
    assert info.config.hnsw_config.m == 24
    assert info.config.quantization_config.scalar.type == models.ScalarType.INT8
    assert info.config.optimizer_config.indexing_threshold == 5000
    assert (info.config.params.vectors.size, info.config.params.vectors.distance) == (16, models.Distance.DOT)
    assert info.payload_schema["lang"].data_type == models.PayloadSchemaType.KEYWORD
    assert info.payload_schema["tenant"].params.is_tenant is True
    assert "payload indexes: lang (keyword), tenant (keyword)" in done.stdout
    assert "hnsw m=24" in done.stdout and "scalar int8" in done.stdout

    again = migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green)
    assert again.returncode == 1 and f"{green} already exists" in again.stderr
    accepted = migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--if-not-exists")
    assert accepted.returncode == 0 and "left unchanged" in accepted.stdout


def test_create_green_named_and_sparse_vectors(embedded_upstream, client, names):
    blue, green = names
    client.create_collection(blue, vectors_config={
        "dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE, on_disk=True,
                                     hnsw_config=models.HnswConfigDiff(m=32)),
        "title": models.VectorParams(size=4, distance=models.Distance.EUCLID),
    }, sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)})
    unclear = migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--size", "16")
    assert unclear.returncode == 1 and "say which with --vector NAME" in unclear.stderr
    assert not client.collection_exists(green)

    done = migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--size", "16", "--vector", "dense")
    assert done.returncode == 0, done.stderr
    vectors = client.get_collection(green).config.params.vectors
    assert (vectors["dense"].size, vectors["dense"].on_disk, vectors["dense"].hnsw_config.m) == (16, True, 32)
    assert (vectors["title"].size, vectors["title"].distance) == (4, models.Distance.EUCLID)
    assert client.get_collection(green).config.params.sparse_vectors["bm25"].modifier == models.Modifier.IDF


def test_green_create_request_from_a_real_qdrant_info_document():
    """Keys of Qdrant's info that the create request names differently, and None values left out."""
    info = {"config": {
        "params": {"vectors": {"size": 384, "distance": "Cosine", "on_disk": None}, "shard_number": 3,
                   "sharding_method": None, "replication_factor": 2, "write_consistency_factor": 1, "on_disk_payload": True},
        "hnsw_config": {"m": 24, "ef_construct": 100, "full_scan_threshold": 10000, "on_disk": False},
        "optimizer_config": {"deleted_threshold": 0.2, "max_optimization_threads": None, "indexing_threshold": 20000},
        "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        "quantization_config": {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}},
        "strict_mode_config": {"enabled": False},
    }}
    body = green_create_request(info, size=1024)
    assert body["vectors"] == {"size": 1024, "distance": "Cosine"}
    assert (body["shard_number"], body["replication_factor"]) == (3, 2) and "sharding_method" not in body
    assert body["optimizers_config"] == {"deleted_threshold": 0.2, "indexing_threshold": 20000}
    assert body["quantization_config"]["scalar"]["type"] == "int8" and body["strict_mode_config"] == {"enabled": False}
    models.CreateCollection.model_validate(body)  # what Qdrant's own schema accepts


def test_progress_plain_lines_rate_and_eta():
    import io

    from proxy.cli.migrate.progress import Progress

    now = [100.0]
    out = io.StringIO()
    progress = Progress("blue -> green", total=1000, done=200, stream=out, clock=lambda: now[0])
    now[0] += 2.0
    progress.advance(100)  # resumed at 200: this run's rate is 100 points in 2 s
    now[0] += 1.0
    progress.advance(50)  # within 2 s of the last line: no new line
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "blue -> green: 300/1000 points (30.0%), 50 points/s, ETA 14s"
    assert lines[1] == "blue -> green: 350/1000 points (35.0%), 50 points/s, ETA 13s"
    assert len(lines) == 2


def test_vector_comparison_tolerates_float32_noise_only():
    assert same_vector([0.1, 0.2], [0.1 + 1e-9, 0.2])
    assert not same_vector([0.1, 0.2], [0.1, 0.21])
    assert same_vector({"d": [1.0], "s": {"indices": [1], "values": [0.5]}}, {"d": [1.0], "s": {"indices": [1], "values": [0.5]}})
    assert not same_vector({"d": [1.0]}, {"d": [1.0], "e": [1.0]})


# ---------------------------------------------------------------- backfill


def assert_exact_copy(client: QdrantClient, blue: str, green: str, ids: list, stamps: dict) -> None:
    assert client.count(green, exact=True).count == client.count(blue, exact=True).count == len(ids)
    blue_points, green_points = retrieve_all(client, blue, ids), retrieve_all(client, green, ids)
    assert blue_points.keys() == green_points.keys()
    for point_id, point in blue_points.items():
        assert green_points[point_id].payload == {**point.payload, **stamps}, point_id
        assert same_vector(green_points[point_id].vector, point.vector), point_id


def test_backfill_killed_mid_run_resumes_from_its_checkpoint_to_an_exact_copy(embedded_upstream, client, names, tmp_path):
    blue, green = names
    ids = make_blue(client, blue)
    assert migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green).returncode == 0
    checkpoint = tmp_path / "backfill.json"
    args = ["backfill", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--batch", "100",
            "--checkpoint", str(checkpoint), "--stamp", "embedding_version=v2", "--stamp", "source=blue"]
    slow = subprocess.Popen([sys.executable, "-m", "proxy.cli", "migrate", *args, "--rate", "500"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: checkpoint.exists() and json.loads(checkpoint.read_text())["scanned"] >= 500, timeout=60)
        slow.send_signal(signal.SIGKILL)
        slow.wait(timeout=10)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    _, progress_lines = slow.communicate()
    assert "points/s, ETA" in progress_lines  # plain progress lines: stderr is not a terminal
    at_kill = Checkpoint.load(checkpoint)
    assert not at_kill.complete and 500 <= at_kill.scanned < POINTS and at_kill.scanned % 100 == 0
    in_green = client.count(green, exact=True).count
    assert at_kill.scanned <= in_green <= at_kill.scanned + 100  # acknowledged batches, plus at most the one in flight

    resumed = migrate(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after {at_kill.scanned} points" in resumed.stdout
    counts = summary(resumed.stdout)
    assert counts["scanned"] == POINTS - at_kill.scanned
    assert counts["written"] + counts["identical"] == counts["scanned"] and counts["identical"] <= 100
    assert_exact_copy(client, blue, green, ids, {"embedding_version": "v2", "source": "blue"})

    # Idempotent: on a complete copy nothing is written, with the checkpoint or without it.
    before = versions(client, green)
    again = migrate(*args)
    assert again.returncode == 0 and "already complete" in again.stdout
    checkpoint.unlink()
    rescan = migrate(*args)
    assert rescan.returncode == 0, rescan.stderr
    assert summary(rescan.stdout) == {"scanned": POINTS, "written": 0, "identical": POINTS}
    assert versions(client, green) == before

    # The same checkpoint with other arguments is refused rather than mixed.
    other = migrate(*args[:-2], "--stamp", "source=elsewhere")
    assert other.returncode == 1 and "differs in: stamps" in other.stderr


def test_backfill_retries_then_stops_with_the_checkpoint_intact(embedded_upstream, client, names, tmp_path):
    blue, green = names
    ids = make_blue(client, blue, points=600)
    assert migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green).returncode == 0
    faults, fault_url = start_fault_proxy(embedded_upstream, tmp_path)
    checkpoint = tmp_path / "backfill.json"
    args = ["backfill", "--upstream", fault_url, "--from", blue, "--to", green, "--batch", "50",
            "--checkpoint", str(checkpoint), "--retries", "2"]
    try:
        # 100 points/s: 6 s for the 600, ample time to set the fault after the first 100 under load
        running = subprocess.Popen([sys.executable, "-m", "proxy.cli", "migrate", *args, "--rate", "100"], cwd=REPO_ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: checkpoint.exists() and json.loads(checkpoint.read_text())["scanned"] >= 100, timeout=60)
            set_fault(fault_url, green, status=503, operations=["upsert"])
            _, stderr = running.communicate(timeout=60)
        finally:
            if running.poll() is None:
                running.kill()
                running.wait()
        assert running.returncode == 1
        assert "failed after 3 attempts: 503 injected fault" in stderr
        stopped = Checkpoint.load(checkpoint)
        assert f"The checkpoint {checkpoint} is intact: {stopped.scanned} of 600 points done" in stderr
        assert "Run the same command to resume" in stderr
        assert 100 <= stopped.scanned < 600 and not stopped.complete

        # A transient fault is absorbed by the retries; the run completes the copy.
        set_fault(fault_url, green, status=503, ratio=0.3, operations=["upsert"])
        finished = migrate(*args[:-1], "10")
        assert finished.returncode == 0, finished.stderr
        assert_exact_copy(client, blue, green, ids, {})
    finally:
        clear_faults(fault_url)
        faults.stop()


def test_backfill_refuses_what_cannot_work(embedded_upstream, client, names, tmp_path):
    blue, green = names
    make_blue(client, blue, points=100)
    client.create_collection(green, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    base = ["backfill", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--checkpoint", str(tmp_path / "c.json")]
    wrong_dim = migrate(*base)
    assert wrong_dim.returncode == 1 and "was refused: 400 Wrong input: Vector dimension error" in wrong_dim.stderr
    assert "Run the same command to resume" in wrong_dim.stderr
    no_config = migrate(*base, "--embedder", "small", "--text-field", "text")
    assert no_config.returncode == 1 and "re-embed needs --config PATH --embedder NAME --text-field FIELD" in no_config.stderr
    bad_stamp = migrate(*base, "--stamp", "novalue")
    assert bad_stamp.returncode == 1 and "expected FIELD=VALUE" in bad_stamp.stderr
    missing = migrate("backfill", "--upstream", embedded_upstream, "--from", "no_such_blue", "--to", green,
                      "--checkpoint", str(tmp_path / "d.json"))
    assert missing.returncode == 1 and "doesn't exist" in missing.stderr and "Traceback" not in missing.stderr


def test_backfill_progress_bar_on_a_terminal(embedded_upstream, client, names, tmp_path):
    import pty

    blue, green = names
    make_blue(client, blue, points=300)
    assert migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green).returncode == 0
    primary, secondary = pty.openpty()
    command = [sys.executable, "-m", "proxy.cli", "migrate", "backfill", "--upstream", embedded_upstream, "--from", blue,
               "--to", green, "--batch", "50", "--checkpoint", str(tmp_path / "c.json")]
    running = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=secondary,
                               env={**os.environ, "COLUMNS": "120"})
    os.close(secondary)
    screen = b""
    try:
        while True:  # read while it runs: a full terminal buffer would block it
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        assert running.wait(timeout=60) == 0
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
        os.close(primary)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))  # colours and cursor moves
    assert "300/300 points" in text and "━" in text and "ETA" in text  # rich's bar, not the plain lines
    assert "points/s, ETA" not in text


# ---------------------------------------------------------------- validate, promote, decommission, plan


@pytest.fixture
def copied(embedded_upstream, client, names, tmp_path):
    """A blue of 600 points and its complete copy in green."""
    blue, green = names
    ids = make_blue(client, blue, points=600)
    assert migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green).returncode == 0
    done = migrate("backfill", "--upstream", embedded_upstream, "--from", blue, "--to", green,
                   "--checkpoint", str(tmp_path / "copy.json"), "--stamp", "embedding_version=v2")
    assert done.returncode == 0, done.stderr
    return blue, green, ids


def check_rows(output: str) -> dict:
    rows = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in ("ok", "FAIL"):
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def test_validate_passes_then_fails_with_points_deleted_from_green(embedded_upstream, client, copied, tmp_path):
    blue, green, ids = copied
    queries = tmp_path / "queries.jsonl"
    rng = random.Random(3)
    queries.write_text("".join(json.dumps({"query": [rng.uniform(-1, 1) for _ in range(DIM)], "limit": 10}) + "\n"
                               for _ in range(5)))
    base = ["validate", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--sample", "1000"]
    stamped = migrate(*base)  # the backfill's stamp makes every payload differ unless it is ignored
    assert stamped.returncode == 1 and check_rows(stamped.stdout)["sample"][0] == "FAIL"
    assert "(embedding_version)" in check_rows(stamped.stdout)["sample"][1]

    passed = migrate(*base, "--ignore-field", "embedding_version", "--queries", str(queries), "--min-overlap", "0.6")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    rows = check_rows(passed.stdout)
    assert set(rows) == {"blue_exists", "green_exists", "point_count", "vector_config", "payload_indexes", "sample", "query_overlap"}
    assert all(result == "ok" for result, _ in rows.values())
    assert "600 random ids present in green" in rows["sample"][1]  # a sample larger than the collection is all of it
    assert "lang (keyword), n (integer)" in rows["payload_indexes"][1]
    assert "all checks passed" in passed.stdout

    removed = [i for i in ids if isinstance(i, int)][:7]
    client.delete(green, models.PointIdsList(points=removed), wait=True)
    client.delete_payload_index(green, "n", wait=True)
    failed = migrate(*base, "--ignore-field", "embedding_version")
    assert failed.returncode == 1
    rows = check_rows(failed.stdout)
    assert rows["point_count"][0] == "FAIL" and "green 593, blue 600" in rows["point_count"][1]
    assert rows["sample"][0] == "FAIL" and "7 missing in green" in rows["sample"][1]
    assert rows["payload_indexes"][0] == "FAIL" and "n (integer)" in rows["payload_indexes"][1]
    assert "FAILED: point_count, payload_indexes, sample" in failed.stdout
    drift = migrate(*base, "--ignore-field", "embedding_version", "--max-count-drift", "0.02", "--sample", "0")
    assert check_rows(drift.stdout)["point_count"][0] == "ok"

    # With --config, the route from blue to green brings its preflight expectation.
    config = tmp_path / "bluegreen.yaml"
    config.write_text(f"upstream: {{url: '{embedded_upstream}'}}\nroutes:\n  docs: {{blue: {blue}, green: {green}, "
                      "preflight: {expect: {size: 1024, distance: Cosine}}}\n")
    expected = migrate("validate", "--config", str(config), "--from", blue, "--to", green, "--sample", "0",
                       "--max-count-drift", "0.02")
    assert expected.returncode == 1 and check_rows(expected.stdout)["vectors"] == ("FAIL", f"size {DIM}, expected 1024")


def test_promote_and_promote_back(embedded_upstream, client, copied):
    blue, green, _ = copied
    alias = f"{blue}_live"
    created = migrate("promote", "--upstream", embedded_upstream, "--alias", alias, "--to", blue)
    assert created.returncode == 0 and f"alias {alias} created -> {blue}" in created.stdout
    promoted = migrate("promote", "--upstream", embedded_upstream, "--alias", alias, "--to", green)
    assert promoted.returncode == 0, promoted.stderr
    assert f"alias {alias}: {blue} -> {green}" in promoted.stdout and f"previous target: {blue}" in promoted.stdout
    assert f"migrate promote --alias {alias} --to {blue}" in promoted.stdout
    assert client.get_collection(alias).config.params.vectors.size == DIM
    assert client.query_points(alias, query=[1.0] * DIM, limit=1, with_payload=True).points[0].payload["embedding_version"] == "v2"

    back = migrate("promote", "--upstream", embedded_upstream, "--alias", alias, "--to", blue)
    assert back.returncode == 0 and f"alias {alias}: {green} -> {blue}" in back.stdout
    assert "embedding_version" not in client.query_points(alias, query=[1.0] * DIM, limit=1, with_payload=True).points[0].payload
    same = migrate("promote", "--upstream", embedded_upstream, "--alias", alias, "--to", blue)
    assert same.returncode == 0 and "already points at" in same.stdout
    not_a_collection = migrate("promote", "--upstream", embedded_upstream, "--alias", f"{alias}2", "--to", alias)
    assert not_a_collection.returncode == 1 and "must point at a collection" in not_a_collection.stderr


def test_decommission_refused_then_archives_metadata_and_snapshot_before_deleting(embedded_upstream, client, copied, tmp_path):
    blue, green, _ = copied
    alias = f"{blue}_live"
    archive = tmp_path / "archive"
    assert migrate("promote", "--upstream", embedded_upstream, "--alias", alias, "--to", blue).returncode == 0
    by_alias = migrate("decommission", blue, "--upstream", embedded_upstream, "--archive", str(archive), "--yes")
    assert by_alias.returncode == 1 and f"alias {alias} points at it" in by_alias.stderr
    through_alias = migrate("decommission", alias, "--upstream", embedded_upstream, "--archive", str(archive), "--yes")
    assert through_alias.returncode == 1 and f"{alias} is an alias (of {blue}), not a collection" in through_alias.stderr
    assert migrate("promote", "--upstream", embedded_upstream, "--alias", alias, "--to", green).returncode == 0

    config = tmp_path / "bluegreen.yaml"
    config.write_text(f"upstream: {{url: 'http://127.0.0.1:1'}}\nroutes:\n  docs: {{blue: {blue}, green: {green}, green_percent: 100}}\n")
    by_route = migrate("decommission", blue, "--config", str(config), "--upstream", embedded_upstream,
                       "--archive", str(archive), "--yes")
    assert by_route.returncode == 1 and "route docs has it as blue" in by_route.stderr

    dry = migrate("decommission", blue, "--upstream", embedded_upstream, "--archive", str(archive))
    assert dry.returncode == 1 and "would decommission" in dry.stdout and "pass --yes" in dry.stdout
    assert client.collection_exists(blue) and not archive.exists()

    done = migrate("decommission", blue, "--upstream", embedded_upstream, "--archive", str(archive), "--yes")
    assert done.returncode == 0, done.stderr
    assert not client.collection_exists(blue)
    [metadata_file] = archive.glob("*.metadata.json")
    metadata = json.loads(metadata_file.read_text())
    assert metadata["name"] == blue and metadata["points_count"] == 600 and metadata["aliases"] == []
    assert metadata["config"]["hnsw_config"]["m"] == 24 and set(metadata["payload_schema"]) == {"lang", "n"}
    snapshot = archive / metadata["snapshot"]["file"]
    assert snapshot.is_file() and snapshot.stat().st_size == metadata["snapshot"]["size"]
    assert str(archive.resolve()) in done.stdout and str(snapshot) in done.stdout
    # The archive restores: the snapshot holds the collection.
    restored = f"{blue}_restored"
    assert client.recover_snapshot(restored, f"file://{snapshot}", wait=True)
    assert client.count(restored, exact=True).count == 600
    assert client.get_collection(restored).config.hnsw_config.m == 24


def test_plan_sizes_and_backfill_time(embedded_upstream, client, names):
    blue, _ = names
    make_blue(client, blue, points=400)
    done = migrate("plan", "--upstream", embedded_upstream, "--from", blue, "--size", "1024", "--quantization", "binary", "--rate", "100")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"plan for {blue}: 400 points, hnsw m=24" in out
    assert "payload index lang (keyword): 400 points" in out
    assert "8 dims, raw 12.5 KiB, quantized (int8) 3.1 KiB" in out  # 400 x 8 x 4 bytes; int8: 1 byte a dimension
    assert "1024 dims, raw 1.6 MiB, quantized (binary) 50.0 KiB" in out  # 400 x 1024 x 4; 1 bit a dimension
    assert "400 points at 100 points/s (given): ~4s" in out
    measured = migrate("plan", "--upstream", embedded_upstream, "--from", blue)
    assert measured.returncode == 0 and "measured scroll rate" in measured.stdout


# ---------------------------------------------------------------- re-embed


def test_reembed_backfill_into_a_collection_of_another_dimension(embedded_upstream, client, names, tmp_path):
    """BLUE holds 8-dim vectors; GREEN gets WordLlama's 256-dim embedding of each point's text."""
    import asyncio

    from proxy.embedding.embedders import build_embedders
    from routing.config import parse_config

    blue, green = names
    ids = make_blue(client, blue, points=300)
    client.upsert(blue, [models.PointStruct(id=999_999, vector=[0.5] * DIM, payload={"lang": "en"})], wait=True)  # no text
    assert migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--size", "256").returncode == 0
    config = tmp_path / "bluegreen.yaml"
    config.write_text(f"upstream: {{url: '{embedded_upstream}'}}\nembedders:\n  small: {{type: local, model: wordllama-256}}\n")
    args = ["backfill", "--config", str(config), "--from", blue, "--to", green, "--embedder", "small",
            "--text-field", "text", "--batch", "64", "--checkpoint", str(tmp_path / "c.json"), "--stamp", "embedding_version=wordllama-256"]
    done = migrate(*args)
    assert done.returncode == 0, done.stderr
    assert "re-embedding text with small" in done.stdout and "1 without text in text (not copied)" in done.stdout
    assert summary(done.stdout) == {"scanned": 301, "written": 300, "identical": 0}
    assert client.count(green, exact=True).count == 300
    assert client.get_collection(green).config.params.vectors.size == 256

    sample = retrieve_all(client, green, ids[:20])
    blue_points = retrieve_all(client, blue, ids[:20])
    texts = [blue_points[i].payload["text"] for i in ids[:20]]

    async def embed() -> list:
        embedder = build_embedders(parse_config("embedders:\n  small: {type: local, model: wordllama-256}\n").embedders)["small"]
        try:
            return await embedder.embed(texts, "document")
        finally:
            await embedder.close()

    expected = asyncio.run(embed())
    for point_id, vector in zip(ids[:20], expected):
        assert len(sample[point_id].vector) == 256 and same_vector(sample[point_id].vector, list(vector), tolerance=1e-4)
        assert sample[point_id].payload == {**blue_points[point_id].payload, "embedding_version": "wordllama-256"}
    # The text's own embedding finds its point first: these are real model vectors, not copies.
    found = client.query_points(green, query=list(expected[3]), limit=1).points
    assert found[0].id == ids[3]

    (tmp_path / "c.json").unlink()
    again = migrate(*args)  # nothing re-embedded or written on a complete copy
    assert again.returncode == 0 and summary(again.stdout) == {"scanned": 301, "written": 0, "identical": 300}
    wrong = migrate("backfill", "--config", str(config), "--from", blue, "--to", blue, "--embedder", "small",
                    "--text-field", "text", "--checkpoint", str(tmp_path / "w.json"))
    assert wrong.returncode == 1 and f"gives 256-dim vectors; {blue} expects {DIM}" in wrong.stderr


def test_backfill_ctrl_c_leaves_the_checkpoint_to_resume_from(embedded_upstream, client, names, tmp_path):
    blue, green = names
    ids = make_blue(client, blue, points=600)
    assert migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green).returncode == 0
    checkpoint = tmp_path / "backfill.json"
    args = ["backfill", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--batch", "50", "--checkpoint", str(checkpoint)]
    running = subprocess.Popen([sys.executable, "-m", "proxy.cli", "migrate", *args, "--rate", "200"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: checkpoint.exists() and json.loads(checkpoint.read_text())["scanned"] >= 100, timeout=60)
        running.send_signal(signal.SIGINT)
        _, stderr = running.communicate(timeout=30)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 130
    stopped = Checkpoint.load(checkpoint)
    assert f"backfill interrupted: the checkpoint {checkpoint} is intact: {stopped.scanned} of 600 points done" in stderr
    assert "Traceback" not in stderr and 100 <= stopped.scanned < 600
    resumed = migrate(*args)
    assert resumed.returncode == 0 and f"resuming after {stopped.scanned} points" in resumed.stdout
    assert_exact_copy(client, blue, green, ids, {})


def test_connection_flags_upstream_wins_and_the_key_is_sent(tmp_path, monkeypatch):
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    import argparse
    import asyncio

    from proxy.cli.migrate.connection import MigrateError, Target
    from tests.support import ServerProcess, free_port

    config = tmp_path / "bluegreen.yaml"
    config.write_text("upstream: {url: 'http://127.0.0.1:1', api_key: from-config}\n")
    flags = lambda **kw: argparse.Namespace(**{"upstream": None, "config": None, "api_key": None, **kw})
    port = free_port()
    echo_url = f"http://127.0.0.1:{port}"
    from_config = Target.from_args(flags(config=str(config)))
    assert (from_config.url, from_config.api_key) == ("http://127.0.0.1:1", "from-config")
    target = Target.from_args(flags(config=str(config), upstream=echo_url + "/"))
    assert (target.url, target.api_key) == (echo_url, "from-config")
    assert Target.from_args(flags(config=str(config), api_key="from-flag")).api_key == "from-flag"
    with pytest.raises(MigrateError, match="pass --upstream URL or --config PATH"):
        Target.from_args(flags())
    (tmp_path / "embedded.yaml").write_text(f"upstream: {{url: embedded, data_dir: {tmp_path}}}\n")
    with pytest.raises(MigrateError, match="`embedded`: pass --upstream URL"):
        Target.from_args(flags(config=str(tmp_path / "embedded.yaml")))

    with ServerProcess([sys.executable, "-m", "tests.echo_upstream", "--port", str(port)], echo_url + "/", tmp_path / "echo.log"):
        async def call() -> dict:
            async with target.client() as qdrant:
                return await qdrant.call("GET", "/collections/my%20coll")

        echoed = asyncio.run(call())
    headers = dict((name.lower(), value) for name, value in echoed["headers"])
    assert headers["api-key"] == "from-config" and echoed["raw_path"] == "/collections/my%20coll"


def test_reembed_with_an_unreachable_embedding_service_stops_after_its_retries(embedded_upstream, client, names, tmp_path):
    blue, green = names
    make_blue(client, blue, points=100)
    assert migrate("create-green", "--upstream", embedded_upstream, "--from", blue, "--to", green, "--size", "64").returncode == 0
    config = tmp_path / "bluegreen.yaml"
    config.write_text(f"upstream: {{url: '{embedded_upstream}'}}\nembedders:\n"
                      "  svc: {type: openai, url: 'http://127.0.0.1:1/v1', model: m, dimensions: 64, timeout: 2s}\n")
    stopped = migrate("backfill", "--config", str(config), "--from", blue, "--to", green, "--embedder", "svc",
                      "--text-field", "text", "--retries", "1", "--checkpoint", str(tmp_path / "c.json"))
    assert stopped.returncode == 1
    assert "embedding 100 texts with svc failed after 2 attempts: embedder `svc`" in stopped.stderr
    assert "Run the same command to resume" in stopped.stderr and "Traceback" not in stopped.stderr
    assert client.count(green, exact=True).count == 0
