"""This code against another source tree, on the fixed upstream:
`python -m benchmarks.ab --baseline DIR [--seconds 4] [--rounds 8] [--connections 1,16] [--out FILE]`.

DIR is a checkout of the code to compare with (`git worktree add /tmp/main main`, or
`git archive main | tar -x -C DIR`), run with this environment's packages. Both proxies serve at once
on the route `docs` (10 % green); each round runs wrk against each at each connection count, in
alternating order, so drift on a shared machine hits both alike. Reports medians over the rounds of
throughput, p50 and the proxy's CPU per request (its process, from /proc), and each as a ratio
this / baseline.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import workload, wrk
from benchmarks.children import LOOPBACK, BackgroundLoad, Children, ResourceProbe
from benchmarks.targets import Endpoint, ProxyUnderTest, route_names, search_path, start_fixed_upstream

REPO_ROOT = Path(__file__).resolve().parent.parent


class ProxyFromSource(ProxyUnderTest):
    """The proxy under test, imported from `source` (a checkout) rather than this tree."""

    def __init__(self, source: Path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.source = source

    def start(self) -> Endpoint:
        self.write_config()
        bootstrap = f"import sys, runpy; sys.path.insert(0, {str(self.source)!r}); runpy.run_module('proxy.cli', run_name='__main__')"
        args = [sys.executable, "-c", bootstrap, "serve", "--config", str(self.config_path)]
        self.child = self.children.start(f"proxy-{self.source.name}-{self.port}", args, ready_url=f"http://{LOOPBACK}:{self.admin_port}/healthz")
        return Endpoint("proxy", self.child, self.port, search_path(self.routes[0]))


def measure(endpoint: Endpoint, script: Path, seconds: int, connections: int) -> dict:
    probe = ResourceProbe(endpoint.child.pid)
    background = BackgroundLoad()
    result = wrk.run(endpoint.url, script, connections, seconds)
    resources = probe.finish(result["requests"] + result["failed_total"])
    return {
        "throughput_rps": result["throughput_rps"], "failed": result["failed_total"],
        "p50_ms": result["latency_ms"]["p50"], "cpu_us_per_request": resources["cpu_us_per_request"],
        "others_cpu_share": background.finish()["other_processes_share"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--seconds", type=int, default=4, help="length of one run")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--connections", default="1,16", help="comma-separated connection counts")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args(argv)
    if wrk.find_wrk() is None:
        print("benchmarks.ab: needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    counts = [int(c) for c in args.connections.split(",")]
    sources = {"this": REPO_ROOT, "baseline": args.baseline.resolve()}
    runs = {(name, c): [] for name in sources for c in counts}
    with tempfile.TemporaryDirectory(prefix="bluegreen-ab-bench-") as scratch:
        workdir = Path(scratch)
        children = Children(workdir)
        try:
            upstream = start_fixed_upstream(children, workdir)
            script = wrk.write_script(workdir / "wrk.lua", ["/collections/docs/points/search"], workload.search_bodies(256))
            endpoints = {}
            for name, source in sources.items():
                endpoints[name] = ProxyFromSource(source, children, workdir, upstream.port, route_names(1)).start()
                wrk.run(endpoints[name].url, script, 16, 2)  # warm-up
            for index in range(args.rounds):
                order = list(sources) if index % 2 == 0 else list(reversed(sources))
                for connections in counts:
                    for name in order:
                        print(f"[ab] round {index + 1}: {name}, {connections} connections", file=sys.stderr, flush=True)
                        runs[name, connections].append(measure(endpoints[name], script, args.seconds, connections))
        finally:
            children.stop_all()

    print(f"\nfixed upstream, {args.rounds} rounds of {args.seconds} s, medians; ratio = this / baseline ({args.baseline})\n")
    print("| connections | req/s this | req/s baseline | ratio | p50 ratio | CPU us/request this | baseline | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for connections in counts:
        figures = {name: {key: statistics.median(r[key] for r in runs[name, connections])
                          for key in ("throughput_rps", "p50_ms", "cpu_us_per_request")} for name in sources}
        this, base = figures["this"], figures["baseline"]
        ratios = {key: round(this[key] / base[key], 3) for key in this}
        summary[connections] = {"this": this, "baseline": base, "ratio": ratios}
        print(f"| {connections} | {this['throughput_rps']:,.0f} | {base['throughput_rps']:,.0f} | {ratios['throughput_rps']:.3f} "
              f"| {ratios['p50_ms']:.3f} | {this['cpu_us_per_request']:.0f} | {base['cpu_us_per_request']:.0f} | {ratios['cpu_us_per_request']:.3f} |")
    others = max(r["others_cpu_share"] for rs in runs.values() for r in rs)
    failed = sum(r["failed"] for rs in runs.values() for r in rs)
    print(f"\nfailed requests: {failed}; other processes used up to {others:.0%} of the machine's CPU during a run")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"args": {**vars(args), "baseline": str(args.baseline)}, "summary": summary,
             "runs": {f"{name} {c}": rs for (name, c), rs in runs.items()}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
