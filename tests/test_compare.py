"""`bluegreen-proxy compare`: a file of queries against both colours of a route, on crafted data
(blue's top 10 for QUERY are ids 0..9, green's 0..6, 10, 11, 12: see test_shadow.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from qdrant_client import models

from tests.openai_embeddings import vector_for
from tests.support import REPO_ROOT, qdrant_client
from tests.test_shadow import EXPECTED_RBO, QUERY, SENTENCES, crafted, embedding_services  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def setup(embedded_upstream, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    logical, blue, green = f"cmp_{tag}", f"cmp_{tag}_blue", f"cmp_{tag}_green"
    crafted(embedded_upstream, blue, green)
    directory = tmp_path_factory.mktemp("compare")
    config = directory / "bluegreen.yaml"
    config.write_text(
        f"upstream: {{url: '{embedded_upstream}', api_key: '${{NO_SUCH_KEY:-}}'}}\n"
        f"routes:\n  {logical}: {{blue: {blue}, green: {green}, green_percent: 5}}\n"
    )
    queries = directory / "queries.jsonl"
    queries.write_text("\n".join([
        json.dumps({"query": QUERY}),  # no limit: sent with limit k
        json.dumps({"query": QUERY, "limit": 3}),  # 0, 1, 2 on both
        "# a comment, then a blank line",
        "",
        json.dumps({"query": QUERY, "filter": {"must": [{"key": "nope", "match": {"value": 1}}]}}),  # nothing on both
    ]) + "\n")
    return logical, blue, green, config, queries, directory


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "compare", *args], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )


def test_table_per_query_and_means(setup):
    logical, blue, green, config, queries, _ = setup
    done = compare("--config", str(config), logical, "--queries", str(queries))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"route {logical}: blue {blue}, green {green}, top 10, 3 queries"
    assert lines[1].split() == ["line", "overlap@10", "rbo", "only", "in", "blue", "only", "in", "green"]
    assert lines[2].split() == ["1", "0.700", f"{EXPECTED_RBO:.3f}", "7,", "8,", "9", "10,", "11,", "12"]
    assert lines[3].split() == ["2", "1.000", "1.000", "-", "-"]
    assert lines[4].split() == ["5", "-", "-", "-", "-"]
    assert lines[5].split()[:3] == ["mean", "0.850", f"{(EXPECTED_RBO + 1) / 2:.3f}"]
    assert "(2 compared, 0 failed, 1 empty on both)" in lines[5]


def test_json_output(setup):
    logical, blue, green, config, queries, _ = setup
    done = compare("--config", str(config), logical, "--queries", str(queries), "--json", "--k", "5")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["route"], document["blue"], document["green"], document["k"]) == (logical, blue, green, 5)
    first = document["results"][0]
    assert first["blue_ids"] == [0, 1, 2, 3, 4] and first["green_ids"] == [0, 1, 2, 3, 4]
    assert first["overlap"] == 1.0 and first["only_blue"] == first["only_green"] == []
    assert [r["overlap"] for r in document["results"]] == [1.0, 1.0, None]
    assert document["mean_overlap"] == 1.0 and document["compared"] == 2 and document["passed"] is True


def test_min_overlap_decides_the_exit_status(setup):
    logical, _, _, config, queries, _ = setup
    below = compare("--config", str(config), logical, "--queries", str(queries), "--min-overlap", "0.9")
    assert below.returncode == 1
    assert "FAIL: mean overlap@10 0.850 < --min-overlap 0.9" in below.stdout
    above = compare("--config", str(config), logical, "--queries", str(queries), "--min-overlap", "0.85")
    assert above.returncode == 0, above.stdout


def test_a_query_one_colour_cannot_answer_fails_the_run(setup):
    logical, _, green, config, _, directory = setup
    queries = directory / "bad.jsonl"
    queries.write_text(json.dumps({"query": QUERY}) + "\n" + json.dumps({"query": [1.0, 0.0]}) + "\n")
    done = compare("--config", str(config), logical, "--queries", str(queries))
    assert done.returncode == 1
    assert "    2  error: blue" in done.stdout and "answered 400" in done.stdout and "dimension" in done.stdout
    assert "FAIL: 1 queries could not be compared" in done.stdout


@pytest.mark.parametrize("content, message", [
    ("not json\n", "bad.jsonl:1: not JSON"),
    ("[1, 2]\n", "a query is a JSON object"),
    ('{"text": "how do I reset my password"}\n', "needs the route's embedders"),
    ("\n", "no queries"),
])
def test_usage_errors_exit_2(setup, content, message):
    logical, _, _, config, _, directory = setup
    queries = directory / "bad.jsonl"
    queries.write_text(content)
    done = compare("--config", str(config), logical, "--queries", str(queries))
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_unknown_route_and_missing_file_exit_2(setup):
    logical, _, _, config, queries, directory = setup
    unknown = compare("--config", str(config), "nope", "--queries", str(queries))
    assert unknown.returncode == 2 and "no route named `nope`" in unknown.stderr
    missing = compare("--config", str(config), logical, "--queries", str(directory / "missing.jsonl"))
    assert missing.returncode == 2 and "missing.jsonl" in missing.stderr


def test_text_queries_on_an_embed_route_use_each_colours_own_model(embedded_upstream, embedding_services, tmp_path):
    tag = uuid.uuid4().hex[:8]
    logical, blue, green = f"cmpt_{tag}", f"cmpt_{tag}_blue", f"cmpt_{tag}_green"
    direct = qdrant_client(embedded_upstream, timeout=30)
    for name, dimensions in ((blue, 16), (green, 24)):
        direct.create_collection(name, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE))
        direct.upsert(name, [models.PointStruct(id=i, vector=vector_for(text, dimensions)) for i, text in enumerate(SENTENCES)], wait=True)
    direct.close()
    config = tmp_path / "embed.yaml"
    config.write_text(
        f"upstream: {{url: '{embedded_upstream}'}}\n"
        "embedders:\n"
        f"  blue_model: {{type: openai, url: '{embedding_services['blue']}/v1', model: m16, dimensions: 16}}\n"
        f"  green_model: {{type: openai, url: '{embedding_services['green']}/v1', model: m24, dimensions: 24}}\n"
        f"routes:\n  {logical}: {{blue: {blue}, green: {green}, embed: {{blue: blue_model, green: green_model}}}}\n"
    )
    queries = tmp_path / "texts.jsonl"
    queries.write_text("".join(json.dumps({"text": text, "limit": 1}) + "\n" for text in SENTENCES[:4]))
    done = compare("--config", str(config), logical, "--queries", str(queries), "--json", "--min-overlap", "0.99")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    # Each sentence is its own top hit on both colours: each colour got its own model's embedding.
    assert [(r["blue_ids"], r["green_ids"]) for r in document["results"]] == [([i], [i]) for i in range(4)]
    assert document["mean_overlap"] == 1.0


# ---------------------------------------------------------------- in process


def test_in_process_the_same_table_and_exit_status(setup, capsys):
    from proxy.cli import main

    logical, blue, green, config, queries, _ = setup
    assert main(["compare", "--config", str(config), logical, "--queries", str(queries), "--min-overlap", "0.9"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"route {logical}: blue {blue}, green {green}, top 10, 3 queries"
    assert out[-1] == "FAIL: mean overlap@10 0.850 < --min-overlap 0.9"


def test_compare_with_options_writes_to_the_given_stream(setup):
    import io

    from proxy.cli.compare import CompareOptions, UsageError, compare
    from proxy.control.reload import read_config
    from tests.support import free_port

    logical, _, _, config_path, queries, _ = setup
    config = read_config(str(config_path))[0]
    out = io.StringIO()
    options = CompareOptions(logical, str(queries), 3, None, True, config.upstream.url)
    assert compare(config, options, out) == 0
    assert json.loads(out.getvalue())["results"][0]["blue_ids"] == [0, 1, 2]

    nowhere = f"http://127.0.0.1:{free_port()}"
    out = io.StringIO()
    assert compare(config, CompareOptions(logical, str(queries), 3, None, False, nowhere), out) == 1
    assert f"error: blue ({logical}_blue): no answer: " in out.getvalue()
    assert "FAIL: 3 queries could not be compared" in out.getvalue()
    with pytest.raises(UsageError, match="--k: must be >= 1"):
        compare(config, CompareOptions(logical, str(queries), 0, None, False, nowhere), out)
