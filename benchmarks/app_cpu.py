"""The data path's own CPU per request, this tree against another revision: an A/B without sockets.

    python -m benchmarks.app_cpu --against f77c3c5 [--rounds 3] [--requests 20000]

Runs `proxy.dataplane.app.ProxyApp` in process, on a stub upstream that answers at once, for a routed search
(the benchmark's search body, a distinct `x-user-id` each), and reports CPU microseconds per request
(process time, so a loaded machine's waiting does not count) for each tree, alternating trees each
round, with the ratio of the best rounds. The other revision comes from `git archive` into a temp dir.
Wall-clock figures through sockets on a shared machine move by ±40 % run to run; this moves by a few %.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_MEASURE = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from proxy.dataplane.app import ProxyApp
from proxy.metrics import Metrics
try:
    from proxy.dataplane.live import LiveConfig as ProxyState  # one live snapshot (trees after control's issue 10)
except ImportError:
    from proxy.state import ProxyState
from proxy.dataplane.upstream import UpstreamClient, UpstreamResponse
from routing.config import parse_config

body, requests = json.loads(sys.argv[2]).encode(), int(sys.argv[3])
config = parse_config("upstream: {url: 'http://127.0.0.1:1'}\nroutes:\n  docs: {blue: docs_blue, green: docs_green, green_percent: 10}\n")
answer = b'{"result":[],"status":"ok","time":0.001}'

class Stub(UpstreamClient):
    async def request(self, method, target, headers, body, *rest):  # rest: deadline, repeatable (later trees)
        return UpstreamResponse(200, [(b"content-type", b"application/json")], answer)

class NoObserver:
    def observe(self, *args): pass

app = ProxyApp(ProxyState.initial(config, "h", "/x"), Stub("http://127.0.0.1:1", config.upstream), Metrics(), NoObserver())
path = b"/collections/docs/points/search"
headers = [(b"host", b"proxy"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

async def main():
    async def send(message): pass
    async def receive(): return {"type": "http.request", "body": body, "more_body": False}
    async def run(count):
        for i in range(count):
            scope = {"type": "http", "method": "POST", "path": path.decode(), "raw_path": path, "query_string": b"",
                     "headers": headers + [(b"x-user-id", str(i).encode())]}
            await app(scope, receive, send)
    await run(requests // 10)  # warm
    started = time.process_time()
    await run(requests)
    print((time.process_time() - started) / requests * 1e6)

asyncio.run(main())
"""


def measure(tree: Path, body: bytes, requests: int) -> float:
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tree), json.dumps(body.decode()), str(requests)],
        capture_output=True, text=True, check=True, cwd=tree,
    )
    return float(completed.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare this tree with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    from benchmarks import workload

    body = workload.search_bodies(1)[0]
    with tempfile.TemporaryDirectory(prefix="app-cpu-") as other:
        archive = subprocess.run(["git", "archive", args.against], cwd=REPO, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(other, filter="data")
        trees = {args.against: Path(other), "this tree": REPO}
        figures: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                figures[name].append(measure(tree, body, args.requests))
    best = {name: min(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name:>12}: {' '.join(f'{v:.2f}' for v in values)} us CPU per routed search (best {best[name]:.2f})")
    print(f"this tree / {args.against}: {best['this tree'] / best[args.against]:.3f}")


if __name__ == "__main__":
    main()
