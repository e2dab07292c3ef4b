"""What shadow reads cost the proxy: `python -m benchmarks.shadow [--seconds 4] [--rounds 8] [--upstream fixed|embedded]`.

The proxy's route `docs` (10 % green) with no `shadow` block, then `shadow: {sample: S}` for S in
0, 0.05 and 1.0, under wrk at 16 connections (closed loop), medians over
`--rounds` (one proxy per configuration, all serving; each round runs each once, in rotating
order), so that drift on a shared machine does not pose as a cost. Reports throughput and
the proxy's CPU per request (its process tree, from /proc), each as a ratio to the run without a
shadow block, and what the shadows came to (`bluegreen_shadow_requests_total`). On the fixed
upstream (nginx answering every search with the same 10 points) the cost is the proxy's own: a
second upstream exchange, reading both answers' ids and scoring them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import wrk, workload
from benchmarks.children import BackgroundLoad, Children, ResourceProbe
from benchmarks.targets import ProxyUnderTest, route_names, start_embedded_upstream, start_fixed_upstream

CONFIGS = {"no shadow block": "", "sample 0": "shadow: {sample: 0}", "sample 0.05": "shadow: {sample: 0.05}",
           "sample 1.0": "shadow: {sample: 1.0}"}
RESULTS = ("compared", "skipped", "dropped", "error")


def shadow_counts(metrics_text: str) -> dict[str, float]:
    counts = dict.fromkeys(RESULTS, 0.0)
    for line in metrics_text.splitlines():
        if line.startswith("bluegreen_shadow_requests_total{"):
            for result in RESULTS:
                if f'result="{result}"' in line:
                    counts[result] += float(line.rsplit(" ", 1)[1])
    return counts


def measure(proxy: ProxyUnderTest, endpoint, script: Path, seconds: int, connections: int) -> dict:
    """One closed-loop run against a proxy already serving."""
    before = shadow_counts(proxy.metrics_text())
    probe = ResourceProbe(endpoint.child.pid)
    background = BackgroundLoad()
    result = wrk.run(endpoint.url, script, connections, seconds)
    resources = probe.finish(result["requests"] + result["failed_total"])
    time.sleep(0.3)  # shadows still in flight finish
    after = shadow_counts(proxy.metrics_text())
    return {
        "throughput_rps": result["throughput_rps"],
        "failed": result["failed_total"],
        "cpu_us_per_request": resources["cpu_us_per_request"],
        "others_cpu_share": background.finish()["other_processes_share"],
        "shadows": {name: after[name] - before[name] for name in RESULTS},
        "requests": result["requests"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shadow", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="length of one run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8, help="rounds; each runs every configuration once, in rotating order")
    parser.add_argument("--upstream", choices=("fixed", "embedded"), default="fixed")
    parser.add_argument("--points", type=int, default=10_000, help="embedded upstream: points per collection")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args(argv)

    if wrk.find_wrk() is None:
        print("benchmarks.shadow: needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="bluegreen-shadow-bench-") as scratch:
        workdir = Path(scratch)
        children = Children(workdir)
        try:
            if args.upstream == "fixed":
                upstream = start_fixed_upstream(children, workdir)
            else:
                upstream = start_embedded_upstream(children, workdir, args.points)
            script = wrk.write_script(workdir / "wrk.lua", ["/collections/docs/points/search"], workload.search_bodies(256))
            # One proxy per configuration, all serving at once; the rounds alternate between them,
            # so drift in the machine's load hits every configuration alike (medians over rounds).
            proxies = {}
            for name, options in CONFIGS.items():
                proxy = ProxyUnderTest(children, workdir, upstream.port, route_names(1), route_options=options)
                proxies[name] = (proxy, proxy.start())
                wrk.run(proxies[name][1].url, script, args.connections, 2)  # warm-up
            order = list(CONFIGS)
            for index in range(args.rounds):
                shift = index % len(order)
                for name in order[shift:] + order[:shift]:
                    print(f"[shadow bench] round {index + 1}: {name}", file=sys.stderr, flush=True)
                    proxy, endpoint = proxies[name]
                    runs[name].append(measure(proxy, endpoint, script, args.seconds, args.connections))
        finally:
            children.stop_all()

    base_rps = statistics.median(r["throughput_rps"] for r in runs["no shadow block"])
    base_cpu = statistics.median(r["cpu_us_per_request"] for r in runs["no shadow block"])
    print(f"\n{args.upstream} upstream, {args.connections} connections, {args.rounds} rounds of {args.seconds} s (medians)\n")
    print("| route | req/s | ratio | CPU us/request | ratio | shadows compared / dropped per request |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name, results in runs.items():
        rps = statistics.median(r["throughput_rps"] for r in results)
        cpu = statistics.median(r["cpu_us_per_request"] for r in results)
        requests = sum(r["requests"] for r in results)
        compared = sum(r["shadows"]["compared"] for r in results) / requests
        dropped = sum(r["shadows"]["dropped"] for r in results) / requests
        summary[name] = {"throughput_rps": rps, "throughput_ratio": round(rps / base_rps, 3),
                         "cpu_us_per_request": cpu, "cpu_ratio": round(cpu / base_cpu, 3),
                         "compared_per_request": round(compared, 4), "dropped_per_request": round(dropped, 4)}
        print(f"| {name} | {rps:,.0f} | {rps / base_rps:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f} | {compared:.3f} / {dropped:.3f} |")
    others = max(r["others_cpu_share"] for rs in runs.values() for r in rs)
    print(f"\nother processes used up to {others:.0%} of the machine's CPU during a run")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
