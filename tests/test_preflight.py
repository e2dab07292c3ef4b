"""The parity gate: green exists, its vectors match what is expected, its point count matches blue's."""
from __future__ import annotations

import json

from routing.config import Preflight
from routing.preflight import evaluate_preflight


def info(vectors: dict, points: int = 1000) -> dict:
    """The `result` of Qdrant's GET /collections/{name}, trimmed to what the gate reads plus some noise."""
    return {
        "status": "green",
        "optimizer_status": "ok",
        "points_count": points,
        "segments_count": 2,
        "config": {"params": {"vectors": vectors, "shard_number": 1, "on_disk_payload": True}, "hnsw_config": {"m": 16}},
        "payload_schema": {},
    }


UNNAMED_384 = {"size": 384, "distance": "Cosine", "on_disk": False}
UNNAMED_1024 = {"size": 1024, "distance": "Cosine"}
NAMED = {"dense": {"size": 1024, "distance": "Cosine"}, "title": {"size": 384, "distance": "Dot"}}


def settings(**fields) -> Preflight:
    return Preflight.model_validate(fields)


def by_name(result) -> dict:
    return {check.name: check for check in result.checks}


def test_matching_green_passes():
    result = evaluate_preflight(
        settings(expect={"size": 1024, "distance": "Cosine"}), info(UNNAMED_384), info(UNNAMED_1024), 1000, 1005
    )
    assert result.ok, result.summary
    assert [check.name for check in result.checks] == ["blue_exists", "green_exists", "vectors", "point_count"]
    assert result.summary == "ok"
    assert by_name(result)["point_count"].detail == "green 1005, blue 1000: drift 0.50% (within 1.00%)"
    json.dumps(result.to_dict())  # printable as-is by /readyz


def test_missing_green_fails_and_skips_the_vector_check():
    result = evaluate_preflight(settings(expect={"size": 1024}), info(UNNAMED_384), None, 1000, None)
    assert not result.ok
    checks = by_name(result)
    assert not checks["green_exists"].ok and checks["green_exists"].detail == "green collection not found"
    assert "vectors" not in checks
    assert checks["point_count"].detail == "no exact count for green"
    assert result.summary.startswith("green_exists: green collection not found")


def test_missing_blue_fails():
    result = evaluate_preflight(settings(), None, info(UNNAMED_1024), None, 1000)
    assert not result.ok
    assert [check.name for check in result.failed] == ["blue_exists", "point_count"]


def test_size_mismatch():
    result = evaluate_preflight(settings(expect={"size": 1024}), info(UNNAMED_384), info(UNNAMED_384), 1000, 1000)
    assert not result.ok
    assert by_name(result)["vectors"].detail == "size 384, expected 1024"


def test_distance_mismatch():
    green = info({"size": 1024, "distance": "Dot"})
    result = evaluate_preflight(settings(expect={"size": 1024, "distance": "Cosine"}), info(UNNAMED_384), green, 10, 10)
    assert [check.name for check in result.failed] == ["vectors"]
    assert by_name(result)["vectors"].detail == "distance Dot, expected Cosine"


def test_size_only_expectation_ignores_distance():
    green = info({"size": 1024, "distance": "Euclid"})
    assert evaluate_preflight(settings(expect={"size": 1024}), info(UNNAMED_384), green, 10, 10).ok


def test_no_expectation_checks_no_vectors():
    result = evaluate_preflight(settings(), info(UNNAMED_384), info(NAMED), 10, 10)
    assert result.ok
    assert "vectors" not in by_name(result)


def test_named_vectors_match_per_name():
    expect = {"dense": {"size": 1024, "distance": "Cosine"}, "title": {"distance": "Dot"}}
    result = evaluate_preflight(settings(expect=expect), info(UNNAMED_384), info(NAMED), 10, 10)
    assert result.ok, result.summary
    assert [check.name for check in result.checks if check.name.startswith("vectors")] == ["vectors.dense", "vectors.title"]


def test_named_vector_mismatch_and_missing_name():
    expect = {"dense": {"size": 768}, "sparse_text": {"size": 10}}
    result = evaluate_preflight(settings(expect=expect), info(UNNAMED_384), info(NAMED), 10, 10)
    checks = by_name(result)
    assert checks["vectors.dense"].detail == "size 1024, expected 768"
    assert checks["vectors.sparse_text"].detail == "green has no vector named 'sparse_text'"
    assert [check.name for check in result.failed] == ["vectors.dense", "vectors.sparse_text"]


def test_unnamed_expectation_against_named_vectors_and_back():
    result = evaluate_preflight(settings(expect={"size": 1024}), info(UNNAMED_384), info(NAMED), 10, 10)
    assert by_name(result)["vectors"].detail == "expected one unnamed vector, green has named vectors: dense, title"
    result = evaluate_preflight(settings(expect={"dense": {"size": 1024}}), info(UNNAMED_384), info(UNNAMED_1024), 10, 10)
    assert by_name(result)["vectors.dense"].detail == "green has one unnamed vector, not named ones"
    assert not result.ok


def test_count_drift_over_the_limit():
    result = evaluate_preflight(settings(max_count_drift=0.01), info(UNNAMED_384), info(UNNAMED_1024), 1000, 980)
    assert not result.ok
    assert by_name(result)["point_count"].detail == "green 980, blue 1000: drift 2.00% (over 1.00%)"
    assert evaluate_preflight(settings(max_count_drift=0.02), info(UNNAMED_384), info(UNNAMED_1024), 1000, 980).ok


def test_empty_blue_requires_empty_green():
    assert evaluate_preflight(settings(), info(UNNAMED_384, 0), info(UNNAMED_1024, 0), 0, 0).ok
    result = evaluate_preflight(settings(max_count_drift=10), info(UNNAMED_384, 0), info(UNNAMED_1024), 0, 5)
    assert by_name(result)["point_count"].detail == "green 5, blue 0: green must be empty too"
    assert not result.ok


def test_emptied_green_fails():
    result = evaluate_preflight(settings(), info(UNNAMED_384), info(UNNAMED_1024, 0), 1000, 0)
    assert [check.name for check in result.failed] == ["point_count"]
