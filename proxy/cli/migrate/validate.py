"""`migrate validate`: is GREEN a faithful copy of BLUE? Every check in a table; exit 1 on any failure.

- the proxy's preflight checks (both exist, exact point counts within --max-count-drift as a share of
  BLUE's count, and with --config the `preflight.expect` of the route BLUE -> GREEN);
- the same vector names (dense and sparse) as BLUE, with each one's size and distance shown;
- every payload index of BLUE present in GREEN with the same type;
- a random sample of BLUE's ids present in GREEN with identical payloads (--ignore-field for stamps);
- with --queries, the overlap check of `bluegreen-proxy compare` (same file format and scores) on the
  two collections: mean overlap@k >= --min-overlap.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK
from proxy.cli.compare import UsageError, read_queries
from proxy.cli.migrate.connection import MigrateError, Target
from proxy.cli.migrate.green_layout import index_type
from proxy.cli.migrate.point_compare import payload_differences
from proxy.cli.qdrant_rest import QdrantRest, UpstreamError, collection_path
from routing.config import Preflight
from routing.layout import is_unnamed, vector_names, vector_params, vectors_of
from routing.overlap import overlap_at_k, rank_biased_overlap, ranked_ids
from routing.preflight import evaluate_preflight

RETRIEVE_CHUNK = 256
DEFAULT_K = 10


@dataclass(frozen=True)
class ValidationCheck:
    """A row of validate's table (the preflight's parity checks are among them)."""

    name: str
    ok: bool
    detail: str


def add_parser(commands, parents) -> None:
    parser = commands.add_parser("validate", parents=parents, help="check GREEN against BLUE: counts, layout, sampled payloads")
    parser.add_argument("--from", dest="source", required=True, metavar="BLUE")
    parser.add_argument("--to", dest="target", required=True, metavar="GREEN")
    parser.add_argument("--max-count-drift", type=float, default=0.0,
                        help="allowed |green - blue| / blue point counts, 0..1 (default 0: exact)")
    parser.add_argument("--sample", type=int, default=1000, help="random ids of BLUE to look up in GREEN (default 1000)")
    parser.add_argument("--ignore-field", action="append", default=[], metavar="FIELD",
                        help="payload field left out of the comparison (e.g. a --stamp of the backfill); repeatable")
    parser.add_argument("--queries", metavar="FILE", help="JSON lines, each a points/query body run on both collections")
    parser.add_argument("--min-overlap", type=float, help="with --queries: the least mean overlap of the top ids, 0..1")
    parser.set_defaults(run=run)


def _route_expectation(target: Target, source: str, green: str):
    if target.config is None:
        return None
    for route in target.config.routes.values():
        if route.blue == source and route.green == green and route.preflight is not None:
            return route.preflight.expect
    return None


async def _preflight_checks(qdrant: QdrantRest, args, target: Target) -> tuple[list[ValidationCheck], dict | None, dict | None]:
    async def info(name: str) -> dict | None:
        try:
            return await qdrant.info(name)
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise

    async def count(name: str) -> int | None:
        try:
            return await qdrant.count(name)
        except UpstreamError:
            return None

    blue_info, green_info = await info(args.source), await info(args.target)
    settings = Preflight(max_count_drift=args.max_count_drift, expect=_route_expectation(target, args.source, args.target))
    result = evaluate_preflight(settings, blue_info, green_info, await count(args.source), await count(args.target))
    return [ValidationCheck(c.name, c.ok, c.detail) for c in result.checks], blue_info, green_info


def _vector_check(blue_info: dict, green_info: dict) -> ValidationCheck:
    blue, green = vectors_of(blue_info), vectors_of(green_info)
    blue_names, green_names = vector_names(blue), vector_names(green)
    blue_sparse = sorted(((blue_info["config"]["params"]).get("sparse_vectors") or {}))
    green_sparse = sorted(((green_info["config"]["params"]).get("sparse_vectors") or {}))
    shown = ", ".join(
        f"{name or 'vector'} {vector_params(blue, name).get('size')}/{vector_params(blue, name).get('distance')}"
        f" -> {vector_params(green, name).get('size')}/{vector_params(green, name).get('distance')}"
        for name in blue_names if name in green_names)
    if blue_names != green_names or is_unnamed(blue) != is_unnamed(green) or blue_sparse != green_sparse:
        names = lambda dense, sparse: ", ".join([n or "(unnamed)" for n in dense] + [f"sparse {n}" for n in sparse]) or "none"
        return ValidationCheck("vector_config", False, f"blue has {names(blue_names, blue_sparse)}; green has {names(green_names, green_sparse)}")
    return ValidationCheck("vector_config", True, shown + "".join(f", sparse {n}" for n in green_sparse))


def _index_check(blue_info: dict, green_info: dict) -> ValidationCheck:
    blue, green = blue_info.get("payload_schema") or {}, green_info.get("payload_schema") or {}
    missing = [f"{field} ({index_type(index)})" for field, index in sorted(blue.items())
               if field not in green or index_type(green[field]) != index_type(index)]
    if missing:
        return ValidationCheck("payload_indexes", False, f"missing or of another type in green: {', '.join(missing)}")
    listed = ", ".join(f"{field} ({index_type(index)})" for field, index in sorted(blue.items()))
    return ValidationCheck("payload_indexes", True, listed or "blue has none")


async def _sample_check(qdrant: QdrantRest, args) -> ValidationCheck:
    if args.sample <= 0:
        return ValidationCheck("sample", True, "skipped (--sample 0)")
    found = await qdrant.call("POST", collection_path(args.source, "points/query"),
                              {"query": {"sample": "random"}, "limit": args.sample, "with_payload": True})
    blue_points = found.get("points") or []
    ignore = frozenset(args.ignore_field)
    missing, differing = [], []
    for start in range(0, len(blue_points), RETRIEVE_CHUNK):
        chunk = blue_points[start:start + RETRIEVE_CHUNK]
        records = await qdrant.call("POST", collection_path(args.target, "points"),
                                    {"ids": [p["id"] for p in chunk], "with_payload": True, "with_vector": False})
        green = {record["id"]: record for record in records or []}
        for point in chunk:
            record = green.get(point["id"])
            if record is None:
                missing.append(point["id"])
            else:
                fields = payload_differences(point.get("payload"), record.get("payload"), ignore)
                if fields:
                    differing.append(f"{point['id']} ({', '.join(fields)})")
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing in green (e.g. {', '.join(map(str, missing[:5]))})")
    if differing:
        problems.append(f"{len(differing)} with other payloads (e.g. {'; '.join(differing[:5])})")
    if problems:
        return ValidationCheck("sample", False, f"of {len(blue_points)} random ids: " + "; ".join(problems))
    return ValidationCheck("sample", True, f"{len(blue_points)} random ids present in green with identical payloads")


async def _overlap_check(qdrant: QdrantRest, args) -> ValidationCheck:
    """The scores of `bluegreen-proxy compare` (routing/overlap.py) over the two collections."""
    try:
        queries = read_queries(args.queries)
    except UsageError as exc:
        raise MigrateError(str(exc)) from None
    overlaps, rbos = [], []
    for line, query in queries:
        k = int(query.get("limit") or DEFAULT_K)
        body = {**query, "limit": k, "with_payload": False, "with_vector": False}
        answers = []
        for name in (args.source, args.target):
            try:
                result = await qdrant.call("POST", collection_path(name, "points/query"), body)
            except UpstreamError as exc:
                return ValidationCheck("query_overlap", False, f"{args.queries}:{line} failed on {name}: {exc.status} {exc.message}")
            answers.append(ranked_ids("query", result)[0])
        if (score := overlap_at_k(answers[0], answers[1], k)) is not None:  # None: empty on both
            overlaps.append(score)
            rbos.append(rank_biased_overlap(answers[0], answers[1], k))
    if not overlaps:
        return ValidationCheck("query_overlap", False, f"no query of {args.queries} found anything on either collection")
    mean = sum(overlaps) / len(overlaps)
    ok = mean >= args.min_overlap
    return ValidationCheck("query_overlap", ok, f"mean overlap@k {mean:.3f} (RBO {sum(rbos) / len(rbos):.3f}) over {len(overlaps)} "
                                      f"queries, lowest {min(overlaps):.2f}; {'>=' if ok else '<'} {args.min_overlap:g}")


def print_table(checks: list[ValidationCheck]) -> None:
    width = max(len(check.name) for check in checks)
    print(f"{'check':{width}}  result  detail")
    for check in checks:
        print(f"{check.name:{width}}  {'ok' if check.ok else 'FAIL':6}  {check.detail}")


async def run(args: argparse.Namespace, target: Target) -> int:
    if not 0 <= args.max_count_drift <= 1:
        raise MigrateError("--max-count-drift: a share of blue's point count, 0..1 (0.01 = 1 %)")
    if (args.queries is None) != (args.min_overlap is None):
        raise MigrateError("--queries and --min-overlap go together")
    async with target.client() as qdrant:
        checks, blue_info, green_info = await _preflight_checks(qdrant, args, target)
        if blue_info is not None and green_info is not None:
            checks += [_vector_check(blue_info, green_info), _index_check(blue_info, green_info),
                       await _sample_check(qdrant, args)]
            if args.queries:
                checks.append(await _overlap_check(qdrant, args))
    print(f"validate {args.source} -> {args.target}")
    print_table(checks)
    failed = [check.name for check in checks if not check.ok]
    print(f"FAILED: {', '.join(failed)}" if failed else "all checks passed")
    return EXIT_FAILED if failed else EXIT_OK
