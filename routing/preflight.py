"""The parity gate green must pass before it gets reads: pure evaluation of what the upstream said.

The I/O side fetches, for blue and green, `GET /collections/{name}` (its `result`, or None on 404)
and `POST /collections/{name}/points/count` with `{"exact": true}` (`result.count`, or None when
the call failed), and hands them to `evaluate_preflight`, which also reads both collections' vector
sizes (`VectorSizes`: raw vectors are pinned by them on a route without `embed`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from routing.config import Preflight, VectorExpectation
from routing.documents import find_vectors, pinned_colour
from routing.layout import dense_sizes, is_unnamed, vectors_of
from routing.table import BLUE, COLOURS


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # blue_exists, green_exists, vectors (or vectors.NAME for named vectors), point_count
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class VectorSizes:
    """Each colour's dense vector sizes by vector name (UNNAMED: the unnamed vector), as preflight read
    them: on a route without `embed`, a raw vector whose length fits only one colour is pinned to it."""

    blue: Mapping[str, int]
    green: Mapping[str, int]

    def size(self, colour: str, name: str) -> int | None:
        """None: that colour's size for the name is unknown (a raw vector of any length fits it)."""
        return (self.blue if colour == BLUE else self.green).get(name)

    @property
    def differ(self) -> bool:
        """Whether some vector name has different sizes in blue and green (else nothing can be pinned)."""
        return any(self.green.get(name, size) != size for name, size in self.blue.items())

    def pin(self, operation: str, body: bytes) -> str | None:
        """The colour a request's raw vectors pin it to (see `pinned_colour`), or None."""
        found = find_vectors(operation, body, frozenset(), True)
        return self.pinned(found.raw) if found is not None else None

    def pinned(self, raw: list[tuple[str, int]]) -> str | None:
        """The colour raw vectors (vector name, length) pin a request to, or None (none, or both fit)."""
        return pinned_colour(raw, self.size, COLOURS) if raw else None


@dataclass(frozen=True, slots=True)
class PreflightResult:
    checks: tuple[Check, ...]
    vector_sizes: VectorSizes | None = None  # None: a collection's info could not be read

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.ok)

    @property
    def summary(self) -> str:
        """The failed checks as one line (`name: detail; ...`), or `ok`."""
        return "; ".join(f"{check.name}: {check.detail}" for check in self.failed) or "ok"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [check.to_dict() for check in self.checks]}


def evaluate_preflight(
    settings: Preflight,
    blue_info: dict[str, Any] | None,
    green_info: dict[str, Any] | None,
    blue_count: int | None,
    green_count: int | None,
) -> PreflightResult:
    checks = [
        Check("blue_exists", blue_info is not None, "blue collection found" if blue_info is not None else "blue collection not found"),
        Check("green_exists", green_info is not None, "green collection found" if green_info is not None else "green collection not found"),
    ]
    if green_info is not None and settings.expect is not None:
        checks.extend(_vector_checks(settings.expect, vectors_of(green_info)))
    checks.append(_count_check(settings.max_count_drift, blue_count, green_count))
    sizes = None
    if blue_info is not None and green_info is not None:
        sizes = VectorSizes(dense_sizes(vectors_of(blue_info)), dense_sizes(vectors_of(green_info)))
    return PreflightResult(tuple(checks), sizes)


def _vector_checks(expect: VectorExpectation | dict[str, VectorExpectation], vectors: Any) -> list[Check]:
    if isinstance(expect, VectorExpectation):
        if not is_unnamed(vectors):
            names = ", ".join(sorted(vectors)) if isinstance(vectors, dict) else "none"
            return [Check("vectors", False, f"expected one unnamed vector, green has named vectors: {names}")]
        return [_compare("vectors", expect, vectors)]
    if is_unnamed(vectors):
        return [Check(f"vectors.{name}", False, "green has one unnamed vector, not named ones") for name in expect]
    checks = []
    for name, expectation in expect.items():
        actual = vectors.get(name) if isinstance(vectors, dict) else None
        if not isinstance(actual, dict):
            checks.append(Check(f"vectors.{name}", False, f"green has no vector named {name!r}"))
        else:
            checks.append(_compare(f"vectors.{name}", expectation, actual))
    return checks


def _compare(name: str, expect: VectorExpectation, actual: dict[str, Any]) -> Check:
    problems = []
    if expect.size is not None and actual.get("size") != expect.size:
        problems.append(f"size {actual.get('size')}, expected {expect.size}")
    if expect.distance is not None and actual.get("distance") != expect.distance:
        problems.append(f"distance {actual.get('distance')}, expected {expect.distance}")
    if problems:
        return Check(name, False, "; ".join(problems))
    return Check(name, True, f"size {actual.get('size')}, distance {actual.get('distance')}")


def _count_check(max_drift: float, blue: int | None, green: int | None) -> Check:
    if blue is None or green is None:
        missing = " and ".join(colour for colour, count in (("blue", blue), ("green", green)) if count is None)
        return Check("point_count", False, f"no exact count for {missing}")
    if blue == 0:
        ok = green == 0
        return Check("point_count", ok, f"green {green}, blue 0" + ("" if ok else ": green must be empty too"))
    drift = abs(green - blue) / blue
    return Check(
        "point_count", drift <= max_drift,
        f"green {green}, blue {blue}: drift {drift:.2%} ({'within' if drift <= max_drift else 'over'} {max_drift:.2%})",
    )
