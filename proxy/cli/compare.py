"""`bluegreen-proxy compare`: run a file of queries against both physical collections of a route and
score how far their answers agree (overlap@k, RBO), query by query and on average.

The validation step of a migration, and what an operator runs when a complaint about result quality
comes in. Each line of the file is one JSON body for `POST /collections/{name}/points/query` (the
Query API); blank lines and lines starting with `#` are skipped. A body without `limit` is sent with
`limit: k`. Logical collection names inside a body (`lookup_from`) are rewritten per colour as the
proxy would. The calls are the proxy's own, to the upstream directly, with `upstream.api_key`.

On a route with `embed`, a line may hold `"text"` instead of `"query"` (with any other Query API
field, `using` naming the vector): each colour then gets the text embedded by its own model, as a
query, by the embedders of the config.

Exit status: 0; 1 when the mean overlap@k is below `--min-overlap`, or a query could not be
compared (an error on either colour, the upstream unreachable); 2 for a usage error (unknown route,
unreadable file, a line that is not a JSON object, text on a route without `embed`).
"""
from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Hashable, TextIO

from proxy.cli.config_file import config_and_upstream
from proxy.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from proxy.cli.qdrant_rest import QdrantRest, UnreadableAnswer, UpstreamError, UpstreamUnreachable
from routing.config import Config, Route
from routing.overlap import UnreadableResult, overlap_at_k, rank_biased_overlap, ranked_ids
from routing.rewrite import rewrite_body_collections
from routing.table import BLUE, GREEN, RouteTable, quote_segment


def add_parser(commands) -> None:
    parser = commands.add_parser("compare", help="run a file of queries on both colours and score their agreement")
    parser.add_argument("--config", required=True)
    parser.add_argument("route")
    parser.add_argument("--queries", required=True, help="JSON lines, one Query API body each")
    parser.add_argument("--k", type=int, default=10, help="compare the top k ids (default 10)")
    parser.add_argument("--min-overlap", type=float, help="exit 1 when the mean overlap@k is below this")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--upstream", help="upstream URL (default: upstream.url of the config)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Both colours' answers to a file of queries, scored."""
    from proxy.cli.tool_logging import configure_tool_logging

    configure_tool_logging()
    config, upstream_url = config_and_upstream(args)
    if config is None:
        return EXIT_USAGE
    options = CompareOptions(args.route, args.queries, args.k, args.min_overlap, args.json, upstream_url)
    try:
        return compare(config, options)
    except UsageError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return EXIT_USAGE


@dataclass(frozen=True)
class CompareOptions:
    """What to compare and how to report it: the command's flags, with the upstream resolved."""

    route: str
    queries_path: str
    k: int
    min_overlap: float | None
    as_json: bool
    upstream_url: str


class UsageError(ValueError):
    """The command cannot run as asked: the message says why."""


@dataclass
class QueryComparison:
    line: int
    overlap: float | None = None  # None: both colours returned nothing, or an error
    rbo: float | None = None
    only_blue: list[Hashable] = field(default_factory=list)
    only_green: list[Hashable] = field(default_factory=list)
    blue_ids: list[Hashable] = field(default_factory=list)
    green_ids: list[Hashable] = field(default_factory=list)
    error: str | None = None


def read_queries(path: str) -> list[tuple[int, dict]]:
    """(line number, body) of every query in a JSON-lines file."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except OSError as exc:
        raise UsageError(f"--queries {path}: {exc.strerror or exc}") from None
    queries = []
    for number, text in enumerate(lines, start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise UsageError(f"{path}:{number}: a query is a JSON object (a Query API body)")
        queries.append((number, body))
    if not queries:
        raise UsageError(f"{path}: no queries")
    return queries


def _is_text(body: dict) -> bool:
    return "text" in body and "query" not in body


class EmbeddingFailed(RuntimeError):
    """A colour's embedder could not embed the file's texts."""


async def embed_texts(config: Config, route: Route, queries: list[tuple[int, dict]]) -> dict[tuple[int, str], list[float]]:
    """(line, colour) -> that colour's query embedding of the line's text, for every text line."""
    from proxy.embedding.embedders import EmbedderError, build_embedder  # the embed extra, only when needed
    from routing.documents import UNNAMED

    plan: dict[str, list[tuple[int, str, str]]] = {}  # embedder name -> (line, colour, text)
    for line, body in queries:
        if not _is_text(body):
            continue
        vector = body.get("using") or UNNAMED
        for colour in (BLUE, GREEN):
            name = route.embed.embedder_for(colour, vector)
            if name is None:
                raise UsageError(f"line {line}: the route has no {colour} embedder for vector `{vector or '(unnamed)'}`")
            plan.setdefault(name, []).append((line, colour, str(body["text"])))

    vectors = {}
    for name, wanted in plan.items():
        embedder = build_embedder(name, config.embedders[name])
        try:
            embedded = await embedder.embed([text for _, _, text in wanted], "query")
        except EmbedderError as exc:
            raise EmbeddingFailed(f"embedder `{name}`: {exc}") from None
        finally:
            await embedder.close()
        vectors.update({(line, colour): vector for (line, colour, _), vector in zip(wanted, embedded)})
    return vectors


async def compare_route(config: Config, route_name: str, queries: list[tuple[int, dict]], k: int,
                        upstream_url: str) -> list[QueryComparison]:
    route = config.routes[route_name]
    table = RouteTable(config)
    embeddings = await embed_texts(config, route, queries)
    results = []
    async with QdrantRest(upstream_url, config.upstream.api_key, config.upstream.timeout) as qdrant:
        for line, body in queries:
            sized = body if "limit" in body else {**body, "limit": k}
            results.append(await _compare_one(qdrant, table, route, line, sized, k, embeddings))
    return results


# 7 parameters: one query's comparison needs the client, the route, its line and the shared embeddings.
async def _compare_one(qdrant: QdrantRest, table: RouteTable, route: Route, line: int, body: dict, k: int,
                       embeddings: dict[tuple[int, str], list[float]]) -> QueryComparison:
    answers: dict[str, list[Hashable]] = {}
    for colour, collection in ((BLUE, route.blue), (GREEN, route.green)):
        if _is_text(body):  # this colour's own model's embedding of the text
            sent = {key: value for key, value in body.items() if key != "text"}
            sent["query"] = embeddings[(line, colour)]
        else:
            sent = body
        raw = json.dumps(sent, separators=(",", ":")).encode()
        raw = rewrite_body_collections(
            raw, lambda name, colour=colour: (r.collection(colour) if (r := table.routes.get(name)) else None)
        ) or raw
        try:
            result = await qdrant.call("POST", f"/collections/{quote_segment(collection)}/points/query", content=raw)
            answers[colour] = ranked_ids("query", result)[0]
        except UpstreamUnreachable as exc:
            return QueryComparison(line, error=f"{colour} ({collection}): no answer: {exc.cause}")
        except UpstreamError as exc:
            return QueryComparison(line, error=f"{colour} ({collection}) answered {exc.status}: {exc.message}")
        except UnreadableAnswer as exc:
            return QueryComparison(line, error=f"{colour} ({collection}): not a search result: {exc.detail}")
        except UnreadableResult as exc:
            return QueryComparison(line, error=f"{colour} ({collection}): not a search result: {exc}")
    blue, green = answers[BLUE][:k], answers[GREEN][:k]
    return QueryComparison(
        line,
        overlap=overlap_at_k(blue, green, k),
        rbo=rank_biased_overlap(blue, green, k),
        only_blue=[point for point in blue if point not in set(green)],
        only_green=[point for point in green if point not in set(blue)],
        blue_ids=blue,
        green_ids=green,
    )


def summary(results: list[QueryComparison]) -> dict:
    scored = [result for result in results if result.overlap is not None]
    return {
        "queries": len(results),
        "compared": len(scored),
        "failed": sum(result.error is not None for result in results),
        "mean_overlap": sum(r.overlap for r in scored) / len(scored) if scored else None,
        "mean_rbo": sum(r.rbo for r in scored) / len(scored) if scored else None,
    }


def print_table(route_name: str, route: Route, k: int, results: list[QueryComparison], totals: dict, out: TextIO) -> None:
    print(f"route {route_name}: blue {route.blue}, green {route.green}, top {k}, {len(results)} queries", file=out)
    print(f"{'line':>5}  {f'overlap@{k}':>10}  {'rbo':>6}  {'only in blue':30}  only in green", file=out)
    for result in results:
        if result.error:
            print(f"{result.line:>5}  error: {result.error}", file=out)
            continue
        print(
            f"{result.line:>5}  {_score(result.overlap):>10}  {_score(result.rbo):>6}  "
            f"{_ids(result.only_blue):30}  {_ids(result.only_green)}",
            file=out,
        )
    print(
        f"{'mean':>5}  {_score(totals['mean_overlap']):>10}  {_score(totals['mean_rbo']):>6}  "
        f"({totals['compared']} compared, {totals['failed']} failed, "
        f"{totals['queries'] - totals['compared'] - totals['failed']} empty on both)",
        file=out,
    )


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ids(ids: list) -> str:
    return ", ".join(str(point) for point in ids) or "-"


def compare(config: Config, options: CompareOptions, out: TextIO | None = None) -> int:
    """Compare, print the table (or JSON) to `out` (default: stdout at the call) and return the exit
    status; UsageError for what the caller must fix."""
    out = out or sys.stdout
    route_name, k, min_overlap = options.route, options.k, options.min_overlap
    if route_name not in config.routes:
        raise UsageError(f"no route named `{route_name}` (routes: {', '.join(config.routes) or 'none'})")
    if k < 1:
        raise UsageError("--k: must be >= 1")
    route = config.routes[route_name]
    queries = read_queries(options.queries_path)
    if route.embed is None:
        for line, body in queries:
            if _is_text(body):
                raise UsageError(f"{options.queries_path}:{line}: a text query needs the route's embedders (a route with `embed`)")
    try:
        results = asyncio.run(compare_route(config, route_name, queries, k, options.upstream_url))
    except EmbeddingFailed as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return EXIT_FAILED
    totals = summary(results)
    mean = totals["mean_overlap"]
    below = min_overlap is not None and (mean is None or mean < min_overlap)
    passed = not below and not totals["failed"]
    if options.as_json:
        document = {
            "route": route_name, "blue": route.blue, "green": route.green, "k": k,
            "results": [asdict(result) for result in results], **totals,
            "min_overlap": min_overlap, "passed": passed,
        }
        print(json.dumps(document, indent=2), file=out)
    else:
        print_table(route_name, route, k, results, totals, out)
        if below:
            print(f"FAIL: mean overlap@{k} {_score(mean)} < --min-overlap {min_overlap:g}", file=out)
        elif totals["failed"]:
            print(f"FAIL: {totals['failed']} queries could not be compared", file=out)
    return EXIT_OK if passed else EXIT_FAILED
