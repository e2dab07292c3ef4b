"""Does a gRPC face slow the REST path? `python -m benchmarks.grpc_rest_ab [--seconds 4] [--rounds 6] [--out FILE]`.

Two real proxies (`bluegreen-proxy serve`, route `docs` at 10 % green) on the fixed REST upstream:
one as it is, one with `proxy.dataplane.grpc_transport.GrpcForwarder` started on the same uvloop loop before
the REST listeners (grpc.aio's poller thread and grpc core's threads then live in the process,
idle). wrk at 1 and 16 connections, alternating order each round; medians of throughput, p50 and
CPU per request (from /proc) as ratios grpc / plain, and the same for a third run per round in
which the gRPC face is kept busy (h2load, 1 stream) while REST is measured: the worst case of
sharing one loop.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import workload, wrk
from benchmarks.ab import measure
from benchmarks.children import LOOPBACK, free_port
from benchmarks.grpc_bench import GrpcChildren, find_h2load
from benchmarks.grpc_upstream import QUERY_METHOD, grpc_frame, query_request
from benchmarks.targets import Endpoint, ProxyUnderTest, route_names, search_path, start_fixed_upstream

_BOOTSTRAP = """
import runpy, proxy.server
from proxy.dataplane.grpc_transport import GrpcForwarder
plain_serve = proxy.server.serve
async def serve(*args, **kwargs):
    face = GrpcForwarder({upstream!r}, [{method!r}], port={port})
    await face.start()
    try:
        return await plain_serve(*args, **kwargs)
    finally:
        await face.stop(1)
proxy.server.serve = serve
runpy.run_module("proxy.cli", run_name="__main__")
"""


class ProxyWithGrpcFace(ProxyUnderTest):
    """The proxy with a gRPC face on its loop, forwarding `/qdrant.Points/Query` to `grpc_upstream`."""

    def __init__(self, grpc_upstream: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grpc_upstream = grpc_upstream
        self.grpc_port = free_port()

    def start(self) -> Endpoint:
        self.write_config()
        code = _BOOTSTRAP.format(upstream=self.grpc_upstream, method=QUERY_METHOD, port=self.grpc_port)
        args = [sys.executable, "-c", code, "serve", "--config", str(self.config_path)]
        self.child = self.children.start(f"proxy-grpc-face-{self.port}", args, ready_url=f"http://{LOOPBACK}:{self.admin_port}/healthz")
        return Endpoint("proxy", self.child, self.port, search_path(self.routes[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_rest_ab", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args(argv)
    if wrk.find_wrk() is None or find_h2load() is None:
        print("benchmarks.grpc_rest_ab: needs wrk and h2load: apt-get install wrk nghttp2-client", file=sys.stderr)
        return 2
    configs = ("plain", "grpc face idle", "grpc face busy")
    counts = (1, 16)
    runs = {(name, c): [] for name in configs for c in counts}
    with tempfile.TemporaryDirectory(prefix="bluegreen-grpc-rest-ab-") as scratch:
        workdir = Path(scratch)
        children = GrpcChildren(workdir)
        request_file = workdir / "request.bin"
        request_file.write_bytes(grpc_frame(query_request()))
        try:
            upstream = start_fixed_upstream(children, workdir)
            grpc_port = free_port()
            children.start_grpc("grpc-upstream", [sys.executable, "-m", "benchmarks.grpc_upstream", "--port", str(grpc_port)], grpc_port)
            script = wrk.write_script(workdir / "wrk.lua", ["/collections/docs/points/search"], workload.search_bodies(256))
            plain = ProxyUnderTest(children, workdir, upstream.port, route_names(1)).start()
            face = ProxyWithGrpcFace(f"{LOOPBACK}:{grpc_port}", children, workdir, upstream.port, route_names(1))
            with_face = face.start()
            endpoints = {"plain": plain, "grpc face idle": with_face, "grpc face busy": with_face}
            for endpoint in (plain, with_face):
                wrk.run(endpoint.url, script, 16, 2)  # warm-up
            for index in range(args.rounds):
                order = list(configs) if index % 2 == 0 else list(reversed(configs))
                for connections in counts:
                    for name in order:
                        print(f"[grpc rest ab] round {index + 1}: {name}, {connections} connections", file=sys.stderr, flush=True)
                        busy = None
                        if name == "grpc face busy":
                            busy = subprocess.Popen(
                                [find_h2load(), "-c", "1", "-m", "1", "-D", str(args.seconds + 2), "-H", "content-type: application/grpc",
                                 "-H", "te: trailers", "-d", str(request_file), f"http://{LOOPBACK}:{face.grpc_port}{QUERY_METHOD}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        try:
                            runs[name, connections].append(measure(endpoints[name], script, args.seconds, connections))
                        finally:
                            if busy is not None:
                                busy.kill()
                                busy.wait()
        finally:
            children.stop_all()

    print(f"\nREST on the fixed upstream, {args.rounds} rounds of {args.seconds} s, medians; ratio = with gRPC face / plain\n")
    print("| connections | proxy | req/s | ratio | p50 ratio | CPU us/request | ratio |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for connections in counts:
        base = {key: statistics.median(r[key] for r in runs["plain", connections]) for key in ("throughput_rps", "p50_ms", "cpu_us_per_request")}
        for name in configs:
            mine = {key: statistics.median(r[key] for r in runs[name, connections]) for key in base}
            ratio = {key: round(mine[key] / base[key], 3) for key in base}
            summary[f"{name} {connections}"] = {"figures": mine, "ratio": ratio}
            print(f"| {connections} | {name} | {mine['throughput_rps']:,.0f} | {ratio['throughput_rps']:.3f} | {ratio['p50_ms']:.3f} "
                  f"| {mine['cpu_us_per_request']:.0f} | {ratio['cpu_us_per_request']:.3f} |")
    others = max(r["others_cpu_share"] for rs in runs.values() for r in rs)
    print(f"\nother processes used up to {others:.0%} of the machine's CPU during a run")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary,
                                              "runs": {f"{n} {c}": rs for (n, c), rs in runs.items()}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
