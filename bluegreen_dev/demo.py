"""`bluegreen-proxy demo`: a whole model migration on this machine, with clients unchanged throughout.

Blue `articles_wordllama` holds a small text corpus embedded with the local WordLlama (256 dims),
written through the proxy as text. Clients keep sending text queries (paraphrases of the corpus sentences,
so each has one right answer and the two models can differ), over REST and from one gRPC client
(qdrant-client, prefer_grpc=True), from the first step to the last while
the runbook runs as an operator would type it: `migrate plan`, `create-green` (MiniLM, 384
dims), `backfill` re-embedding the `text` field, `validate`, `compare` and a live shadow comparison,
a staged rollout 10 -> 50 -> 100 % walked by the proxy's guard, a fault in green (its points
deleted by a cleanup job aimed at the wrong collection) that the guard rolls back by itself, the
repair and `resume`, `promote` of the alias batch jobs read, and `decommission` with its snapshot.

Everything runs as child processes (the embedded upstream, the proxy) or as the CLI's own entry
point; runtime files go to a data directory (default `.bluegreen-data/demo`, ignored by git).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client import grpc as qgrpc

from proxy.process import stop_process
from routing.table import bucket, threshold_for

LOGICAL, BLUE, GREEN, ALIAS = "articles", "articles_wordllama", "articles_minilm", "articles_live"
EMBEDDERS = {  # name in the config -> (local model, dimensions)
    "wordllama": ("wordllama-256", 256),
    "minilm": ("all-MiniLM-L6-v2", 384),
}
OLD, NEW = "wordllama", "minilm"  # blue's model today, green's: the migration's point
# What a client writes in `Document.model`: not looked up, the colour decides.
CLIENT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
USERS = 2_000
UPSERT_BATCH = 100
DEFAULT_DATA_DIR = Path(".bluegreen-data") / "demo"
MARKER = ".bluegreen-demo"  # a data directory holding this file is the demo's own, safe to clear
TOKEN_VARIABLE = "BLUEGREEN_ADMIN_TOKEN"
GUARD_WINDOW = 2.0  # seconds; the demo's guard judges every 0.5 s on the last 2 s


@dataclass
class Story:
    sentences: int
    phase_seconds: float  # traffic per step of the story that is only watched
    hold: float  # the staged rollout's hold per step
    backfill_rate: int  # points/s, so the backfill's progress lines show
    compare_queries: int
    rate: float = 150.0  # the clients' queries per second, paced: the machine keeps CPU for the runbook
    workers: int = 8  # REST workers
    grpc_workers: int = 2  # queries the one gRPC client has in flight at most, each at a REST worker's pace


QUICK = Story(sentences=150, phase_seconds=0.8, hold=1.0, backfill_rate=300, compare_queries=40)
FULL = Story(sentences=400, phase_seconds=3.0, hold=3.0, backfill_rate=150, compare_queries=100)

# The corpus: sentences built from three slots, so every sentence has its own set of words; each
# slot has a paraphrase, so every sentence has a query that means it without repeating it.
_WHO = (("The night nurse", "a nurse on the night shift"), ("A retired pilot", "a former airline captain"),
        ("Our new intern", "the recently hired trainee"), ("The village baker", "the local bread maker"),
        ("A marine biologist", "an ocean scientist"), ("The football coach", "the soccer trainer"),
        ("My grandmother", "my granny"), ("The museum guide", "the person who gives the museum tours"),
        ("A freelance translator", "a self-employed interpreter"), ("The city mayor", "the town's elected leader"))
_DID = (("repaired an old bicycle", "fixed a vintage bike"), ("baked sourdough bread", "made a loaf of sourdough"),
        ("photographed migrating whales", "took pictures of whales on their migration"),
        ("planted tomatoes and basil", "grew tomatoes and herbs in the garden"),
        ("painted a mural of the harbour", "made a big wall painting of the port"),
        ("studied ancient star charts", "examined old maps of the sky"),
        ("wrote a letter to the council", "sent a written complaint to the local authorities"),
        ("trained for a marathon", "prepared for a long-distance race"),
        ("tuned a vintage piano", "adjusted the strings of an antique piano"),
        ("fixed a leaking roof", "repaired a roof that let the rain in"),
        ("read a novel about volcanoes", "finished a book about eruptions"),
        ("cooked a spicy lentil soup", "made a hot and peppery lentil stew"))
_WHEN = (("before sunrise", "early in the morning before dawn"), ("during the storm", "while the storm raged"),
         ("on Sunday afternoon", "at the weekend after lunch"), ("after the long meeting", "once the lengthy meeting was over"),
         ("in the middle of winter", "in the coldest part of the year"))


def corpus(count: int) -> list[tuple[str, str]]:
    """(sentence, paraphrase) pairs; the point id of a sentence is its index."""
    combos = list(itertools.product(_WHO, _DID, _WHEN))
    random.Random(15).shuffle(combos)
    if count > len(combos):
        raise ValueError(f"the corpus has at most {len(combos)} sentences")
    return [(f"{who[0]} {did[0]} {when[0]}.", f"{who[1]} {did[1]} {when[1]}".capitalize())
            for who, did, when in combos[:count]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[2:5]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _prepare_data_dir(path: Path) -> Path:
    """The demo's own directory, emptied; refuses a non-empty directory it did not make."""
    path = path.resolve()
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise RuntimeError(f"{path} is not empty and not a demo's data directory: pass another --data-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("written by `bluegreen-proxy demo`; deleted by its next run\n")
    return path


@dataclass
class Ports:
    upstream: int
    upstream_grpc: int
    data: int
    grpc: int
    admin: int

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.data}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


def _config(ports: Ports, state_file: Path, route: str) -> str:
    embedders = "".join(f"  {name}: {{type: local, model: {model}}}\n" for name, (model, _) in EMBEDDERS.items())
    return (
        f"listen: {{host: 127.0.0.1, port: {ports.data}}}\n"
        f"grpc: {{host: 127.0.0.1, port: {ports.grpc}}}\n"
        f"admin: {{host: 127.0.0.1, port: {ports.admin}, token: '${{{TOKEN_VARIABLE}}}'}}\n"
        f"upstream: {{url: '{ports.upstream_url}', grpc_url: '127.0.0.1:{ports.upstream_grpc}'}}\n"
        f"state_file: '{state_file}'\n"
        "embedders:\n" + embedders +
        "routes:\n"
        f"  {LOGICAL}:\n" + "".join(f"    {line}\n" for line in route.strip().splitlines())
    )


# The route as the story edits it; clients never change.
ROUTE_BEFORE = f"""
blue: {BLUE}
green: {GREEN}
green_percent: 0
writes: blue
embed: {{blue: {OLD}, green: {NEW}}}
"""
ROUTE_DUAL_WRITES = ROUTE_BEFORE.replace("writes: blue", "writes: both")
ROUTE_DARK_LAUNCH = ROUTE_DUAL_WRITES + "shadow: {sample: 0.5, k: 10}\n"
# Judged every 0.5 s on 2 s windows (the defaults are minutes). A MiniLM query the proxy has not
# embedded before costs milliseconds where WordLlama takes microseconds, so green may be up to 10x
# slower than blue without breaking a staged step's hold.
GUARD = (f"guard: {{interval: 500ms, window: {GUARD_WINDOW:g}s, min_requests: 8, empty_for: 1s, error_for: 1s, "
         "max_latency_ratio: 10}\n")


def _route_rollout(hold: float) -> str:
    return (ROUTE_DARK_LAUNCH.replace("green_percent: 0", "green_percent: 10") + GUARD
            + f"rollout: {{steps: [10, 50, 100], hold: {int(hold * 1000)}ms}}\n")


# After promote: the new collection is the route's blue; the old one an idle green (0 %, no writes),
# which decommission accepts.
ROUTE_AFTER = f"""
blue: {GREEN}
green: {BLUE}
green_percent: 0
writes: blue
embed: {{blue: {NEW}, green: {OLD}}}
"""


# --- clients -------------------------------------------------------------------------------------

@dataclass
class Answer:
    colour: str
    ids: list[int]


class RestClients:
    """Text queries over REST, the JSON qdrant-client sends for `query_points(query=models.Document(...))`.
    A client kind is anything with `name` and `query(text, user) -> Answer`."""

    name = "REST"
    who = "REST clients"

    def __init__(self, proxy_url: str) -> None:
        self.url = f"{proxy_url}/collections/{LOGICAL}/points/query"
        self.session = aiohttp.ClientSession()

    async def query(self, text: str, user: str) -> Answer:
        body = {"query": {"nearest": {"text": text, "model": CLIENT_MODEL}}, "limit": 5}
        async with self.session.post(self.url, json=body, headers={"x-user-id": user}) as response:
            document = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {document}")
            return Answer(response.headers["x-bluegreen-color"], [point["id"] for point in document["result"]["points"]])

    async def close(self) -> None:
        await self.session.close()


def _user_moved_at_the_second_step() -> str:
    """A user the staged rollout moves to green at 50 %, not at 10 %: its key's bucket is between the two."""
    lowest, highest = threshold_for(10), threshold_for(50)
    return next(user for n in itertools.count() if lowest <= bucket(LOGICAL.encode(), (user := f"grpc-{n}").encode()) < highest)


class GrpcClient:
    """One qdrant-client with prefer_grpc=True on the proxy's gRPC port, as one user (its x-user-id sent as
    gRPC metadata), sending the text queries the REST clients send: the `QueryPoints` message its
    `query_points(query=models.Document(...))` sends (cloud_inference), on its own gRPC stub, so that the
    call's initial metadata (`x-bluegreen-color`) is read. (The async client's header interceptor hides
    the call, and its metadata, from the caller: the sync client runs in a thread instead.)"""

    name = "gRPC"
    user = _user_moved_at_the_second_step()
    who = f"gRPC client {user}"

    def __init__(self, ports: Ports) -> None:
        self.client = QdrantClient(host="127.0.0.1", port=ports.data, grpc_port=ports.grpc, prefer_grpc=True,
                                   headers={"x-user-id": self.user}, check_compatibility=False, timeout=10)

    async def query(self, text: str, user: str) -> Answer:
        """`user`, a key of the REST clients' kind, is not sent: this client is one user, its own."""
        return await asyncio.to_thread(self._query, text)

    def _query(self, text: str) -> Answer:
        document = qgrpc.Document(text=text, model=CLIENT_MODEL)
        request = qgrpc.QueryPoints(collection_name=LOGICAL, query=qgrpc.Query(nearest=qgrpc.VectorInput(document=document)),
                                    limit=5)
        response, call = self.client.grpc_points.Query.with_call(request, timeout=10)
        colour = dict(call.initial_metadata())["x-bluegreen-color"]
        return Answer(colour, [point.id.num for point in response.result])

    async def close(self) -> None:
        self.client.close()


@dataclass
class Tally:
    queries: int = 0
    in_flight: int = 0
    failed: int = 0
    empty: int = 0
    by_colour: dict[str, int] = field(default_factory=lambda: {"blue": 0, "green": 0})
    right_first: dict[str, int] = field(default_factory=lambda: {"blue": 0, "green": 0})


class Traffic:
    """Workers that query at a steady rate from start() to stop(); tallies, per client kind, are cut per
    step of the story."""

    def __init__(self, kinds: list[tuple[object, int]], sentences: list[tuple[str, str]], interval: float) -> None:
        """`kinds`: (client kind, its number of workers); each worker starts a query every `interval` seconds."""
        self.kinds, self.sentences, self.interval = kinds, sentences, interval
        self.phase = self._tallies()
        self.total = self._tallies()
        self.errors: list[str] = []
        self._running = False
        self._tasks: list[asyncio.Task] = []

    def _tallies(self) -> dict[str, Tally]:
        return {kind.name: Tally() for kind, _ in self.kinds}

    def start(self) -> None:
        self._running = True
        self._tasks = [asyncio.create_task(self._worker(kind)) for kind, workers in self.kinds for _ in range(workers)]

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)

    def cut(self) -> dict[str, Tally]:
        phase, self.phase = self.phase, self._tallies()
        return phase

    @staticmethod
    async def settled(tallies: dict[str, Tally], timeout: float = 15.0) -> dict[str, Tally]:
        """The cut tallies once the queries they started have answered or failed (for `timeout` seconds
        at most): each figure then covers all of a step's queries, however slow the machine."""
        deadline = time.monotonic() + timeout
        while any(tally.in_flight for tally in tallies.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return tallies

    async def _worker(self, kind) -> None:
        rng = random.Random()
        next_start = time.monotonic() + rng.random() * self.interval
        while self._running:
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))
            next_start = max(next_start + self.interval, time.monotonic() - self.interval)
            wanted = rng.randrange(len(self.sentences))
            phase, total = self.phase[kind.name], self.total[kind.name]
            for tally in (phase, total):
                tally.queries += 1
            phase.in_flight += 1
            try:
                answer = await kind.query(self.sentences[wanted][1], f"user-{rng.randrange(USERS)}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted and the first few shown
                for tally in (phase, total):
                    tally.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(f"{kind.name}: {exc}")
                continue
            finally:
                phase.in_flight -= 1
            for tally in (phase, total):
                tally.by_colour[answer.colour] += 1
                tally.empty += not answer.ids
                tally.right_first[answer.colour] += bool(answer.ids) and answer.ids[0] == wanted


# --- what the proxy says about itself --------------------------------------------------------------

async def _metrics(session: aiohttp.ClientSession, admin: str) -> list:
    async with session.get(f"{admin}/metrics") as response:
        return list(text_string_to_metric_families(await response.text()))


def _shadow_overlap(families: list) -> tuple[float, float]:
    """(sum, count) of the route's shadow overlap@k histogram."""
    totals = {"bluegreen_shadow_overlap_sum": 0.0, "bluegreen_shadow_overlap_count": 0.0}
    for family in families:
        for sample in family.samples:
            if sample.name in totals and sample.labels.get("route") == LOGICAL:
                totals[sample.name] += sample.value
    return totals["bluegreen_shadow_overlap_sum"], totals["bluegreen_shadow_overlap_count"]


def _latency_buckets(families: list) -> dict[str, dict[float, float]]:
    """collection -> {le: cumulative count} of the proxy's query latency histogram."""
    buckets: dict[str, dict[float, float]] = {}
    for family in families:
        if family.name != "bluegreen_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.get("route") == LOGICAL and labels.get("operation") == "query":
                buckets.setdefault(labels["collection"], {})[float(labels["le"])] = sample.value
    return buckets


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Prometheus-style histogram_quantile over a step's delta; None when the step had no samples."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / (count - previous_count) if count > previous_count else 1.0
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


async def _admin_route(session: aiohttp.ClientSession, admin_url: str) -> dict:
    async with session.get(f"{admin_url}/admin/routes") as response:
        document = await response.json()
    return {"generation": document["generation"], **document["routes"][LOGICAL]}


def _figures(tally: Tally) -> str:
    """What a kind of client saw during a step: its queries, the colours that answered them, how often
    the meant article came first on each."""
    served = sum(tally.by_colour.values()) or 1
    shares = "  ".join(f"{colour} {count / served * 100:5.1f}%" for colour, count in tally.by_colour.items())
    right = "  ".join(
        f"{colour} {tally.right_first[colour] / count * 100:5.1f}%" if count else f"{colour}     - "
        for colour, count in tally.by_colour.items()
    )
    return f"{tally.queries:5d} queries, {tally.failed} failed, {tally.empty} empty | {shares} | right article first: {right}"


# --- the story -----------------------------------------------------------------------------------

class _Indented:
    """A stream that prints each line of a command's output indented under the command, as it comes."""

    def __init__(self) -> None:
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            sys.__stdout__.write(f"     | {line}\n")
        sys.__stdout__.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.write("\n")

    def isatty(self) -> bool:
        return False


def _cli(argv: list[str]) -> int:
    from proxy.cli import main

    stream = _Indented()
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        code = main(argv)
    stream.flush()
    return code


class Demo:
    def __init__(self, story: Story, data_dir: Path) -> None:
        self.story, self.data_dir = story, data_dir
        self.ports = Ports(*(_free_port() for _ in range(5)))
        self.config_path = data_dir / "bluegreen.yaml"
        self.state_file = data_dir / "bluegreen.state.json"
        # The admin token, as in production, comes from the environment: the proxy's and the CLI's.
        os.environ[TOKEN_VARIABLE] = secrets.token_hex(16)
        self.sentences = corpus(story.sentences)
        self.started = time.monotonic()
        self.step_number = 0
        self.session: aiohttp.ClientSession | None = None
        self.traffic: Traffic | None = None
        self._metrics_before: list = []

    # output ------------------------------------------------------------------------------------
    def step(self, text: str) -> None:
        self.step_number += 1
        print(f"\n[{time.monotonic() - self.started:5.1f}s] {self.step_number}. {text}", flush=True)

    async def run_cli(self, *argv) -> None:
        print("   $ bluegreen-proxy " + " ".join(shlex.quote(str(a)) for a in argv), flush=True)
        code = await asyncio.to_thread(_cli, [str(a) for a in argv])
        if code != 0:
            raise RuntimeError(f"`bluegreen-proxy {' '.join(map(str, argv[:2]))}` exited with {code}")

    async def mark(self) -> None:
        """Start a new tally: the clients' figures from here to the next report()."""
        self.traffic.cut()
        self._metrics_before = await _metrics(self.session, self.ports.admin_url)

    async def report(self, label: str) -> None:
        """The step's line: the REST clients' figures, the proxy's latency and shadow overlap; then the gRPC
        client's figures under it."""
        tallies = await self.traffic.settled(self.traffic.cut())
        after = await _metrics(self.session, self.ports.admin_url)
        before_latency, after_latency = _latency_buckets(self._metrics_before), _latency_buckets(after)
        latency = "  ".join(
            f"{collection} p95 {p95 * 1000:.1f}ms"
            for collection, buckets in sorted(after_latency.items())
            if (p95 := _quantile(before_latency.get(collection, {}), buckets, 0.95)) is not None
        )
        (sum_before, count_before), (sum_after, count_after) = _shadow_overlap(self._metrics_before), _shadow_overlap(after)
        compared = count_after - count_before
        shadow = f" | shadow overlap@10 {(sum_after - sum_before) / compared:.2f} ({compared:.0f} compared)" if compared else ""
        print(f"   {label:>22} | {_figures(tallies[RestClients.name])} | {latency}{shadow}", flush=True)
        print(f"   {GrpcClient.who:>22} : {_figures(tallies[GrpcClient.name])}", flush=True)
        self._metrics_before = after

    async def watch(self, label: str, seconds: float) -> None:
        await self.mark()
        await asyncio.sleep(seconds)
        await self.report(label)

    # the proxy ---------------------------------------------------------------------------------
    async def apply(self, route: str) -> None:
        """Edit the config file and wait until the proxy has loaded it (no restart)."""
        generation = (await _admin_route(self.session, self.ports.admin_url))["generation"]
        _write_atomically(self.config_path, _config(self.ports, self.state_file, route))
        deadline = time.monotonic() + 10
        while (await _admin_route(self.session, self.ports.admin_url))["generation"] == generation:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not load the edited config within 10s")
            await asyncio.sleep(0.05)

    async def route_state(self) -> dict:
        return await _admin_route(self.session, self.ports.admin_url)

    async def _describe(self, name: str) -> str:
        async with self.session.get(f"{self.ports.upstream_url}/collections/{name}") as response:
            result = (await response.json())["result"]
        return f"`{name}` {result['points_count']} points x {result['config']['params']['vectors']['size']} dims"

    # the story ---------------------------------------------------------------------------------
    # Long: the runbook as an operator types it, one step after another; read top to bottom as the story.
    async def run(self, children: list[subprocess.Popen], log) -> int:
        ports, story = self.ports, self.story
        upstream = ("--upstream", ports.upstream_url)
        self.step(f"the embedded qdrant-edge upstream on {ports.upstream_url} (gRPC 127.0.0.1:{ports.upstream_grpc}) and "
                  f"bluegreen-proxy on {ports.proxy_url} (gRPC 127.0.0.1:{ports.grpc}, admin {ports.admin_url}); "
                  f"files in {self.data_dir}")
        children.append(subprocess.Popen(
            [sys.executable, "-m", "bluegreen_dev.embedded", "--data", str(self.data_dir / "upstream"), "--port", str(ports.upstream),
             "--grpc-port", str(ports.upstream_grpc)],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        await asyncio.to_thread(_wait_http, ports.upstream_url + "/", children[-1])
        async with self.session.put(f"{ports.upstream_url}/collections/{BLUE}",
                                    json={"vectors": {"size": EMBEDDERS[OLD][1], "distance": "Cosine"}}) as response:
            response.raise_for_status()
        async with self.session.post(f"{ports.upstream_url}/collections/aliases",
                                     json={"actions": [{"create_alias": {"collection_name": BLUE, "alias_name": ALIAS}}]}) as response:
            response.raise_for_status()
        _write_atomically(self.config_path, _config(ports, self.state_file, ROUTE_BEFORE))
        children.append(subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(self.config_path), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        await asyncio.to_thread(_wait_http, ports.admin_url + "/healthz", children[-1])

        self.step(f"today: route `{LOGICAL}` serves blue `{BLUE}` ({EMBEDDERS[OLD][0]}, {EMBEDDERS[OLD][1]} dims); the application writes "
                  f"{len(self.sentences)} articles through the proxy as text (qdrant-client, models.Document); "
                  f"batch jobs read the alias `{ALIAS}`")
        await self._populate()
        print(f"   stored: blue {await self._describe(BLUE)}", flush=True)

        self.traffic = Traffic([(RestClients(ports.proxy_url), story.workers), (GrpcClient(ports), story.grpc_workers)],
                               self.sentences, interval=story.workers / story.rate)
        self.traffic.start()
        try:
            self.step(f"clients start and never change: {USERS} users send text queries (paraphrases of the articles, "
                      f"each meaning one of them) to `{LOGICAL}` over REST; one more, {GrpcClient.user}, over gRPC "
                      f"(qdrant-client, prefer_grpc=True), whose key the staged rollout moves to green at 50 %")
            await self.watch("blue only", story.phase_seconds)

            self.step("migrate plan: what the new model's collection will cost")
            await self.run_cli("migrate", "plan", *upstream, "--from", BLUE, "--size", EMBEDDERS[NEW][1])

            self.step(f"migrate create-green: the new collection with blue's layout, {EMBEDDERS[NEW][1]} dims; "
                      f"new writes go to both from now on")
            await self.run_cli("migrate", "create-green", *upstream, "--from", BLUE, "--to", GREEN,
                               "--size", EMBEDDERS[NEW][1], "--distance", "Cosine")
            await self.apply(ROUTE_DUAL_WRITES)
            print("   config: writes: both (applied without a restart)", flush=True)

            self.step(f"migrate backfill: re-embed every article's `text` with the new model ({EMBEDDERS[NEW][0]}) into green")
            checkpoint = self.data_dir / "backfill.checkpoint.json"
            await self.run_cli("migrate", "backfill", "--config", self.config_path, "--from", BLUE, "--to", GREEN,
                               "--embedder", NEW, "--text-field", "text", "--rate", story.backfill_rate,
                               "--batch", 50, "--checkpoint", checkpoint)

            self.step("migrate validate: counts, layout, sampled payloads")
            await self.run_cli("migrate", "validate", *upstream, "--from", BLUE, "--to", GREEN, "--sample", 50)

            self.step(f"compare: {story.compare_queries} paraphrased questions on both collections, each embedded by its own model")
            await self._compare()

            self.step("shadow: a dark launch at 0 % green; half the searches also go to green, off the clients' path")
            await self.apply(ROUTE_DARK_LAUNCH)
            await self.watch("dark launch, 0%", story.phase_seconds)

            self.step(f"staged rollout 10 -> 50 -> 100 %, each step taken by the proxy after {story.hold:g}s of "
                      f"healthy evidence from its guard")
            await self.apply(_route_rollout(story.hold))
            await self._follow_rollout()

            self.step(f"a fault: a cleanup job deletes every point of `{GREEN}` (the wrong collection) at the upstream")
            await self._fault()

            self.step("repair: backfill again (a fresh checkpoint; it writes only what is missing), validate")
            await self.run_cli("migrate", "backfill", "--config", self.config_path, "--from", BLUE, "--to", GREEN,
                               "--embedder", NEW, "--text-field", "text", "--batch", 100,
                               "--checkpoint", self.data_dir / "backfill-repair.checkpoint.json")
            await self.run_cli("migrate", "validate", *upstream, "--from", BLUE, "--to", GREEN, "--sample", 50)
            # Let the guard's window fill with healthy green answers before green takes traffic again.
            await self.watch("rolled back, repaired", max(story.phase_seconds, GUARD_WINDOW + 0.5))

            self.step(f"resume: green returns to the step it was on (the admin token comes from ${TOKEN_VARIABLE})")
            await self.run_cli("resume", LOGICAL, "--config", self.config_path)
            await self._wait_for(lambda route: route["effective_green_percent"] == 100, "resume to 100 %")
            await self.watch("resumed, 100%", story.phase_seconds)

            self.step(f"migrate promote: the alias `{ALIAS}` moves to green; the route's blue becomes `{GREEN}`")
            await self.run_cli("migrate", "promote", *upstream, "--alias", ALIAS, "--to", GREEN)
            await self.apply(ROUTE_AFTER)
            print(f"   config: blue {GREEN}, green {BLUE} at 0 %, writes: blue (applied without a restart)", flush=True)
            await self.watch("promoted", story.phase_seconds)

            self.step(f"migrate decommission: snapshot `{BLUE}`, download and check it, then delete the collection")
            await self.run_cli("migrate", "decommission", BLUE, "--config", self.config_path, *upstream,
                               "--archive", self.data_dir / "archive", "--yes")
            await self.watch("after decommission", story.phase_seconds)
        finally:
            await self.traffic.stop()
            for kind, _ in self.traffic.kinds:
                await kind.close()

        totals = self.traffic.total
        failed = sum(tally.failed for tally in totals.values())
        self.step("done: " + ", ".join(
            f"{kind.who} sent {totals[kind.name].queries} queries, {totals[kind.name].failed} failed" for kind, _ in self.traffic.kinds
        ) + f"; total {failed} failed requests; the clients never changed. Stopping.")
        for error in self.traffic.errors:
            print(f"   {error}", flush=True)
        return 0 if failed == 0 else 1

    async def _populate(self) -> None:
        """Text-only upserts through the proxy, as the unchanged application writes: qdrant-client sends
        the Documents as they are (`cloud_inference=True`) and the proxy embeds them with blue's model."""
        client = AsyncQdrantClient(url=self.ports.proxy_url, cloud_inference=True, prefer_grpc=False,
                                   check_compatibility=False, timeout=60)
        try:
            for start in range(0, len(self.sentences), UPSERT_BATCH):
                await client.upsert(LOGICAL, wait=True, points=[
                    models.PointStruct(id=i, vector=models.Document(text=text, model=CLIENT_MODEL), payload={"text": text})
                    for i, (text, _) in enumerate(self.sentences[start:start + UPSERT_BATCH], start)
                ])
        finally:
            await client.close()

    async def _compare(self) -> None:
        """`compare --json` on paraphrases with known answers: the overlap of the two models' top 10, and
        how often each finds the article a question means first (a labelled quality number)."""
        rng = random.Random(21)
        wanted = rng.sample(range(len(self.sentences)), min(self.story.compare_queries, len(self.sentences)))
        queries = self.data_dir / "paraphrases.jsonl"
        queries.write_text("".join(json.dumps({"text": self.sentences[i][1], "limit": 10}) + "\n" for i in wanted))
        output = self.data_dir / "compare.json"
        argv = ["compare", "--config", str(self.config_path), LOGICAL, "--queries", str(queries), "--json"]
        print("   $ bluegreen-proxy " + " ".join(shlex.quote(a) for a in argv) + f" > {output.name}", flush=True)

        def run() -> int:
            from proxy.cli import main

            with open(output, "w") as handle, contextlib.redirect_stdout(handle):
                return main(argv)

        code = await asyncio.to_thread(run)
        if code != 0:
            raise RuntimeError(f"compare exited with {code} (its output: {output})")
        document = json.loads(output.read_text())
        results = document["results"]
        right = {colour: sum(bool(r[f"{colour}_ids"]) and r[f"{colour}_ids"][0] == i for r, i in zip(results, wanted))
                 for colour in ("blue", "green")}
        print(f"   {len(results)} questions like \"{self.sentences[wanted[0]][1]}\"", flush=True)
        print(f"   mean overlap@10 {document['mean_overlap']:.2f}, RBO {document['mean_rbo']:.2f}: "
              f"the two models agree on about {document['mean_overlap'] * 10:.0f} of their top 10", flush=True)
        print(f"   right article first: blue ({EMBEDDERS[OLD][0]}) {right['blue'] / len(results) * 100:.0f}%, "
              f"green ({EMBEDDERS[NEW][0]}) {right['green'] / len(results) * 100:.0f}%", flush=True)

    async def _wait_for(self, condition, what: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            route = await self.route_state()
            if condition(route):
                return route
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{what}: not within {timeout:g}s; the proxy says {await self.route_state()}")

    async def _follow_rollout(self) -> None:
        """Print each step as the proxy takes it, then let 100 % run for a hold."""
        await self.mark()
        percent = 10.0
        for target in (50.0, 100.0):
            route = await self._wait_for(lambda r, t=target: r["effective_green_percent"] == t,
                                         f"the staged step to {target:g} %", timeout=self.story.hold * 10 + 20)
            await self.report(f"green {percent:g}%")
            if route["state"] == "rolled_back":
                raise RuntimeError(f"the guard rolled back during the rollout: {route}")
            percent = target
        await asyncio.sleep(self.story.phase_seconds)
        await self.report(f"green {percent:g}%")

    async def _fault(self) -> None:
        async with self.session.post(f"{self.ports.upstream_url}/collections/{GREEN}/points/delete?wait=true",
                                     json={"points": list(range(len(self.sentences)))}) as response:
            response.raise_for_status()
        fault_at = time.monotonic()
        print(f"   {await self._describe(GREEN)}: green's searches now come back empty", flush=True)
        route = await self._wait_for(lambda r: r["state"] == "rolled_back", "the guard's rollback")
        took = time.monotonic() - fault_at
        await self.report("fault, until rollback")
        rule = route["reason"].split("_")[0]  # the tripped rule's own figures: `empty` for empty_results
        figures = ", ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in (route.get("figures") or {}).items() if rule in key)
        print(f"   GUARD ROLLED BACK `{LOGICAL}` by itself {took:.1f}s after the fault: reason {route['reason']} "
              f"({figures}); effective green {route['effective_green_percent']:g}%", flush=True)
        await self.watch("rolled back", self.story.phase_seconds)


async def _story(story: Story, data_dir: Path) -> int:
    children: list[subprocess.Popen] = []
    demo = Demo(story, data_dir)
    with open(data_dir / "processes.log", "wb") as log:
        try:
            async with aiohttp.ClientSession() as session:
                demo.session = session
                return await demo.run(children, log)
        finally:
            for child in reversed(children):  # the proxy before its upstream
                stop_process(child)


def run(quick: bool = False, data_dir: Path | str = DEFAULT_DATA_DIR) -> int:
    try:
        data_dir = _prepare_data_dir(Path(data_dir))
    except (RuntimeError, OSError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        code = asyncio.run(_story(QUICK if quick else FULL, data_dir))
    except RuntimeError as exc:
        print(f"demo failed: {exc} (the processes' log: {data_dir / 'processes.log'})", file=sys.stderr)
        return 1
    print(f"   {time.monotonic() - started:.0f}s in all; the files of this run (config, state, checkpoints, "
          f"the archived snapshot, the processes' log) are in {data_dir}, removed by the next run", flush=True)
    return code
