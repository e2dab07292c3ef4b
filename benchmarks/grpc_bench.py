"""The gRPC line: `python -m benchmarks.grpc_bench [--quick] [--rounds 6] [--seconds 4] [--variants a,b] [--baseline DIR] [--out DIR]`.

Unary `/qdrant.Points/Query` calls on a fixed-response gRPC upstream (`benchmarks.grpc_upstream`),
direct and through the whole proxy (`bluegreen-proxy serve` with a gRPC listener: the gRPC face on the
proxy's loop beside its REST and admin listeners), at 1 and 16 concurrent streams on one HTTP/2
connection. Through the proxy two ways: `proxy` names the routed logical collection `docs` (a 50 %
split keyed by the `x-user-id` metadata, which every call carries: the face's whole decision, the
name rewritten, initial metadata, metrics, the guard's observation) and `unrouted` names a collection
no route has (the client's bytes go upstream as sent). The load is h2load (nghttp2, C) in its own
process: it costs the shared 2 cores far less per call than a Python gRPC client would, and it writes
every call's latency to a log, from which p50/p99 come. Every round runs every target at every stream
count, in rotating order, so drift on a shared machine hits all alike; each round's figures are
divided by (or, for latency, subtracted from) that round's direct ones and the report gives medians
of those ratios. CPU per call is the serving process's utime+stime (all its threads, from /proc) over
the calls of the run.

`--variants` adds the bare transport (`transport`: `benchmarks.grpc_proxy`, the forwarder without the
face) and the design study's other transports (names in VARIANTS, each compared with `transport`).
`--baseline DIR` adds the same proxy from another checkout (`baseline`, `baseline-unrouted`), each
compared with this tree's, paired by round: the before/after of a change to the face.
Writes `grpc-<UTC time>.json` and `grpc-latest.md` (quick: `grpc-quick-*.json`, `grpc-latest-quick.md`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from benchmarks.children import LOOPBACK, BackgroundLoad, Child, Children, ResourceProbe, free_port
from benchmarks.grpc_upstream import QUERY_METHOD, grpc_frame, query_request, query_response
from benchmarks.run import machine

EXIT_MISSING_PREREQUISITES = 2
STREAMS = (1, 16)
CHOSEN = "proxy"  # the whole proxy on a routed collection: the targets are judged on it
TRANSPORT = "transport"  # the bare forwarder (the design study's chosen transport, no face)
LOGICAL, BLUE, GREEN = "docs", "docs_blue", "docs_green"
KEY = ("x-user-id", "bench-user-7")  # every call's routing key (h2load sends the same metadata on every call)
# name -> (benchmarks.grpc_proxy arguments, environment additions): the bare transport and the study's variants of it.
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    TRANSPORT: ((), {}),
    "asyncio-loop": (("--loop", "asyncio"), {}),
    "1-channel": (("--channels", "1"), {}),
    "4-channels": (("--channels", "4"), {}),
    "opt-latency": (("--channel-options", "latency"), {}),
    "opt-throughput": (("--channel-options", "throughput"), {}),
    "minimal-stack": (("--channel-options", "minimal-stack"), {}),
    "no-bdp": (("--channel-options", "no-bdp"), {}),
    "poll-strategy-poll": ((), {"GRPC_POLL_STRATEGY": "poll"}),
    "grpc-thread": (("--grpc-thread",), {}),
    "no-rest-listener": (("--rest-port", "0"), {}),
    # grpc core's EventEngine I/O threads (grpcio's default; the transport turns them off: INLINE_IO).
    "event-engine-io": ((), {"GRPC_EXPERIMENTS": ""}),
    # A Python relay in front of grpc core, which could answer HTTP/1.1 at the gRPC port (issue 19 item 6).
    "front-relay": (("--front-relay",), {}),
    # No grpcio in the forwarder: HTTP/2 of our own on the loop (benchmarks/grpc_h2_forwarder.py), the study's open question.
    "h2-forwarder": (("--h2-forwarder",), {}),
}


@dataclass(frozen=True)
class Plan:
    mode: str
    seconds: float  # one measured run
    rounds: int
    warmup_seconds: float  # per target, once, at 16 streams


FULL = Plan(mode="full", seconds=4, rounds=6, warmup_seconds=2)
QUICK = Plan(mode="quick", seconds=1, rounds=1, warmup_seconds=0)


@dataclass
class Endpoint:
    child: Child | None  # the serving process whose CPU is measured (None: direct, the upstream's is not)
    port: int
    request_file: Path  # the gRPC frame h2load sends


def find_h2load() -> str | None:
    return shutil.which("h2load")


class GrpcChildren(Children):
    def start_grpc(self, name: str, args: list[str], port: int, env: dict[str, str] | None = None,
                   timeout: float = 30.0, routed: bool = False) -> Child:
        """A child serving gRPC on `port`, ready once a real call to it succeeds."""
        child = Child(name, args, self.log_dir / f"{name}.log")
        self._children.append(child)
        if env:
            # Child.start inherits os.environ; a variant's additions apply to that child only.
            saved = {key: os.environ.get(key) for key in env}
            os.environ.update(env)
            try:
                child.start()
            finally:
                for key, value in saved.items():
                    os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        else:
            child.start()
        deadline = time.monotonic() + timeout
        while True:
            if not child.running():
                raise RuntimeError(f"{name} exited before answering gRPC; log:\n{child.log_tail()}")
            try:
                check_answer(port, LOGICAL if routed else BLUE, routed)
                return child
            except grpc.RpcError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer gRPC on {port} within {timeout:g}s ({error.code()}); "
                                       f"log:\n{child.log_tail()}") from None
                time.sleep(0.1)


def check_answer(port: int, collection: str = BLUE, routed: bool = False) -> None:
    """One real Query with a Python client: status OK and the upstream's exact bytes (h2load sees no
    trailers); through the proxy, a routed call names its physical collection in the initial metadata
    and an unrouted one does not."""
    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        answer, call = channel.unary_unary(QUERY_METHOD).with_call(
            query_request(collection=collection), timeout=5, metadata=(KEY,))
    if answer != query_response():
        raise RuntimeError(f"port {port} answered {len(answer)} bytes that are not the fixed QueryResponse")
    named = dict(call.initial_metadata() or ()).get("x-bluegreen-collection")
    if routed != (named in (BLUE, GREEN)):
        raise RuntimeError(f"port {port}: a call on `{collection}` came back with x-bluegreen-collection {named!r}")


def h2load(port: int, streams: int, seconds: float, request_file: Path, log_file: Path) -> dict:
    """One closed-loop run: `streams` concurrent calls on one HTTP/2 connection for `seconds`."""
    args = [
        find_h2load() or "h2load", "-c", "1", "-t", "1", "-m", str(streams), "-D", f"{round(seconds * 1000)}ms",
        "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f"{KEY[0]}: {KEY[1]}", "-d", str(request_file),
        f"--log-file={log_file}", f"http://{LOOPBACK}:{port}{QUERY_METHOD}",
    ]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if completed.returncode != 0:
        raise RuntimeError(f"h2load failed ({completed.returncode}): {completed.stderr[-2000:]}{completed.stdout[-2000:]}")
    counts = completed.stdout.split("requests: ", 1)[1].split(",")
    failed = sum(int(part.split()[0]) for part in counts[4:7])  # failed, errored, timeout
    durations = sorted(int(line.split("\t")[2]) for line in log_file.read_text().splitlines() if line.endswith(tuple("0123456789")) and "\t200\t" in line)
    log_file.unlink()
    calls = len(durations)

    def quantile(q: float) -> float | None:
        return round(durations[min(calls - 1, int(q * calls))] / 1000, 3) if calls else None

    return {"calls": calls, "failed": failed, "throughput_cps": round(calls / seconds, 1),
            "latency_ms": {"p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99)}}


def measure(name: str, endpoint: Endpoint, streams: int, seconds: float, workdir: Path) -> dict:
    child = endpoint.child
    probe = ResourceProbe(child.pid) if child is not None else None
    background = BackgroundLoad()
    result = h2load(endpoint.port, streams, seconds, endpoint.request_file, workdir / f"h2load-{name}-{streams}.log")
    result["others_cpu_share"] = background.finish()["other_processes_share"]
    result["loadavg"] = loadavg()
    if probe is not None:
        resources = probe.finish(result["calls"] + result["failed"])
        result["cpu_us_per_call"] = resources["cpu_us_per_request"]
        result["peak_rss_mb"] = resources["peak_rss_mb"]
    return {"target": name, "streams": streams, **result}


def summarize(runs: list[dict], targets: list[str]) -> dict:
    """Per target and stream count: medians over rounds of (added p50/p99, throughput ratio), CPU per call."""
    summary = {}
    for streams in STREAMS:
        direct = {r["round"]: r for r in runs if r["target"] == "direct" and r["streams"] == streams}
        for name in targets:
            if name == "direct":
                continue
            mine = [r for r in runs if r["target"] == name and r["streams"] == streams and r["calls"]]
            paired = [(r, direct[r["round"]]) for r in mine if direct.get(r["round"], {}).get("calls")]
            if not paired:
                continue

            def median(values):
                return round(statistics.median(values), 3)

            summary[f"{name} {streams}"] = {
                "target": name, "streams": streams, "rounds": len(paired),
                "added_p50_ms": median([r["latency_ms"]["p50"] - d["latency_ms"]["p50"] for r, d in paired]),
                "added_p99_ms": median([r["latency_ms"]["p99"] - d["latency_ms"]["p99"] for r, d in paired]),
                "throughput_ratio": median([r["throughput_cps"] / d["throughput_cps"] for r, d in paired]),
                "p50_ratio": median([r["latency_ms"]["p50"] / d["latency_ms"]["p50"] for r, d in paired]),
                "direct_p50_ms": median([d["latency_ms"]["p50"] for _, d in paired]),
                "direct_throughput_cps": median([d["throughput_cps"] for _, d in paired]),
                "cpu_us_per_call": median([r["cpu_us_per_call"] for r, _ in paired]),
                "failed": sum(r["failed"] for r, _ in paired),
            }
    return summary


def comparisons(targets: list[str]) -> list[tuple[str, str]]:
    """(target, reference) pairs compared run by run: the face against the bare transport, this tree
    against the baseline checkout, each study variant against the transport it varies."""
    pairs = []
    if TRANSPORT in targets:
        pairs.append((CHOSEN, TRANSPORT))
        pairs += [(name, TRANSPORT) for name in targets if name in VARIANTS and name != TRANSPORT]
    if "baseline" in targets:
        pairs += [(CHOSEN, "baseline"), ("unrouted", "baseline-unrouted")]
    return pairs


def compared(runs: list[dict], targets: list[str]) -> dict:
    """Each (target, reference) of `comparisons`, paired by round: medians of the per-round ratios."""
    out = {}
    for streams in STREAMS:
        for name, reference in comparisons(targets):
            base = {r["round"]: r for r in runs if r["target"] == reference and r["streams"] == streams and r["calls"]}
            pairs = [(r, base[r["round"]]) for r in runs
                     if r["target"] == name and r["streams"] == streams and r["calls"] and r["round"] in base]
            if not pairs:
                continue
            out[f"{name}/{reference} {streams}"] = {
                "target": name, "reference": reference, "streams": streams, "rounds": len(pairs),
                "cpu_ratio": round(statistics.median(r["cpu_us_per_call"] / c["cpu_us_per_call"] for r, c in pairs), 3),
                "cpu_lower_in_rounds": sum(r["cpu_us_per_call"] < c["cpu_us_per_call"] for r, c in pairs),
                "cpu_difference_us": round(statistics.median(r["cpu_us_per_call"] - c["cpu_us_per_call"] for r, c in pairs), 1),
                "throughput_ratio": round(statistics.median(r["throughput_cps"] / c["throughput_cps"] for r, c in pairs), 3),
                "p50_difference_ms": round(statistics.median(r["latency_ms"]["p50"] - c["latency_ms"]["p50"] for r, c in pairs), 3),
            }
    return out


def verdicts(summary: dict) -> list[dict]:
    """The issue's targets, on the whole proxy's routed calls."""
    out = []
    one, sixteen = summary.get(f"{CHOSEN} 1"), summary.get(f"{CHOSEN} 16")
    if one:
        out.append({"target": "added p50 at 1 stream <= 0.5 ms", "value": one["added_p50_ms"], "met": one["added_p50_ms"] <= 0.5})
    if sixteen:
        out.append({"target": "throughput at 16 streams >= 0.5 x direct", "value": sixteen["throughput_ratio"],
                    "met": sixteen["throughput_ratio"] >= 0.5})
    return out


def markdown(results: dict) -> str:
    lines = [f"# gRPC forwarding: {results['mode']} run, {results['date']}", "",
             f"{results['machine']['nproc']} cores ({results['machine']['cpu']}), {results['plan']['rounds']} rounds of "
             f"{results['plan']['seconds']:g} s per target and stream count; other processes used "
             f"{results['background_load']['other_processes_share']:.0%} of the machine's CPU "
             f"(load average {results['loadavg']['start']} at the start, {results['loadavg']['end']} at the end).", "",
             "Targets: `proxy` = `bluegreen-proxy serve` on the routed collection (50 % split by `x-user-id`), "
             "`unrouted` = the same proxy on a collection no route names, `transport` = the bare forwarder "
             "(no face), `baseline*` = the proxy from another checkout.", "", "## Targets", ""]
    for verdict in results["verdicts"]:
        lines.append(f"- {verdict['target']}: {verdict['value']} ({'met' if verdict['met'] else 'NOT met'})")
    lines += ["", "## Medians over rounds (each round's target against the same round's direct)", "",
              "| target | streams | added p50 ms | added p99 ms | throughput / direct | CPU us/call | direct p50 ms | direct calls/s | failed |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in results["summary"].values():
        lines.append(f"| {row['target']} | {row['streams']} | {row['added_p50_ms']:.3f} | {row['added_p99_ms']:.3f} | "
                     f"{row['throughput_ratio']:.2f} | {row['cpu_us_per_call']:.0f} | {row['direct_p50_ms']:.3f} | "
                     f"{row['direct_throughput_cps']:,.0f} | {row['failed']} |")
    if results["compared"]:
        lines += ["", "## Target against reference, paired by round, medians of the per-round ratios", "",
                  "| target | reference | streams | CPU/call ratio | CPU/call difference us | CPU lower in rounds | throughput ratio | p50 difference ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in results["compared"].values():
            lines.append(f"| {row['target']} | {row['reference']} | {row['streams']} | {row['cpu_ratio']:.2f} | "
                         f"{row['cpu_difference_us']:+.0f} | {row['cpu_lower_in_rounds']}/{row['rounds']} | "
                         f"{row['throughput_ratio']:.2f} | {row['p50_difference_ms']:+.3f} |")
    return "\n".join(lines) + "\n"


def proxy_config(directory: Path, grpc_port: int, upstream_port: int) -> Path:
    """`bluegreen-proxy serve`'s config: the gRPC listener, the fixed upstream's gRPC address and one
    route at 50 % keyed by `x-user-id` (REST's upstream URL is never called: only gRPC is measured)."""
    directory.mkdir()
    path = directory / "bluegreen.yaml"
    path.write_text("\n".join([
        f"listen: {{host: {LOOPBACK}, port: {free_port()}}}",
        f"admin: {{host: {LOOPBACK}, port: {free_port()}}}",
        f"grpc: {{host: {LOOPBACK}, port: {grpc_port}}}",
        f"upstream: {{url: 'http://{LOOPBACK}:{free_port()}', grpc_url: '{LOOPBACK}:{upstream_port}', timeout: 10s}}",
        "routes:",
        f"  {LOGICAL}: {{blue: {BLUE}, green: {GREEN}, green_percent: 50, key: [header:{KEY[0]}]}}",
    ]) + "\n")
    return path


def serve_args(config: Path, source: Path | None) -> list[str]:
    """`bluegreen-proxy serve` from this tree, or from the checkout `source` (ahead of this tree on sys.path)."""
    if source is None:
        return [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)]
    bootstrap = f"import sys, runpy; sys.path.insert(0, {str(source)!r}); runpy.run_module('proxy.cli', run_name='__main__')"
    return [sys.executable, "-c", bootstrap, "serve", "--config", str(config)]


def loadavg() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every target briefly (a few seconds): a smoke test")
    parser.add_argument("--rounds", type=int, help="rounds (default: 6, quick 1)")
    parser.add_argument("--seconds", type=float, help="length of one run (default: 4, quick 1; h2load counts milliseconds)")
    parser.add_argument("--variants", default="", help=f"comma-separated transports to add: {', '.join(VARIANTS)}")
    parser.add_argument("--baseline", type=Path, help="also run the proxy from this checkout (before/after of a change)")
    parser.add_argument("--out", default="benchmarks/results", help="directory for the JSON and Markdown results")
    args = parser.parse_args(argv)
    if find_h2load() is None:
        print("benchmarks.grpc_bench: cannot run, missing:\n  - h2load (the gRPC load generator): apt-get install nghttp2-client",
              file=sys.stderr)
        return EXIT_MISSING_PREREQUISITES
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if variants and TRANSPORT not in variants:
        variants.insert(0, TRANSPORT)  # the study's variants are judged against the bare transport
    base = QUICK if args.quick else FULL
    plan = Plan(base.mode, args.seconds or base.seconds, args.rounds or base.rounds, base.warmup_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    background = BackgroundLoad()
    load_at_start = loadavg()
    runs: list[dict] = []
    ports: list[int] = []
    proxies = {CHOSEN: None, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    targets = ["direct", CHOSEN, "unrouted", *(["baseline", "baseline-unrouted"] if args.baseline else []), *variants]
    with tempfile.TemporaryDirectory(prefix="bluegreen-grpc-bench-") as scratch:
        workdir = Path(scratch)
        routed_request, unrouted_request = workdir / "routed.bin", workdir / "unrouted.bin"
        routed_request.write_bytes(grpc_frame(query_request(collection=LOGICAL)))
        unrouted_request.write_bytes(grpc_frame(query_request(collection=BLUE)))
        children = GrpcChildren(workdir)
        try:
            upstream_port = free_port()
            ports.append(upstream_port)
            children.start_grpc("grpc-upstream", [sys.executable, "-m", "benchmarks.grpc_upstream", "--port", str(upstream_port)], upstream_port)
            endpoints: dict[str, Endpoint] = {"direct": Endpoint(None, upstream_port, unrouted_request)}
            for name, source in proxies.items():
                port = free_port()
                ports.append(port)
                config = proxy_config(workdir / name, port, upstream_port)
                child = children.start_grpc(name, serve_args(config, source), port, routed=True)
                endpoints[name] = Endpoint(child, port, routed_request)
                endpoints["unrouted" if name == CHOSEN else f"{name}-unrouted"] = Endpoint(child, port, unrouted_request)
            for name in variants:
                extra, env = VARIANTS[name]
                port, rest_port = free_port(), free_port()
                ports += [port, rest_port]
                args_ = [sys.executable, "-m", "benchmarks.grpc_proxy", "--upstream-port", str(upstream_port),
                         "--port", str(port), "--rest-port", str(rest_port), *extra]  # a later --rest-port wins
                endpoints[name] = Endpoint(children.start_grpc(f"grpc-{name}", args_, port, env), port, unrouted_request)
            if plan.warmup_seconds:
                for name in targets:
                    endpoint = endpoints[name]
                    h2load(endpoint.port, 16, plan.warmup_seconds, endpoint.request_file, workdir / "warmup.log")
            for index in range(plan.rounds):
                shift = index % len(targets)
                for streams in STREAMS:
                    for name in targets[shift:] + targets[:shift]:
                        print(f"[grpc bench {time.strftime('%H:%M:%S')}] round {index + 1}: {name}, {streams} streams",
                              file=sys.stderr, flush=True)
                        runs.append({"round": index, **measure(name, endpoints[name], streams, plan.seconds, workdir)})
            for name in targets:  # every target still answers right after the load
                routed = name in proxies
                check_answer(endpoints[name].port, LOGICAL if routed else BLUE, routed)
        finally:
            children.stop_all()

    summary = summarize(runs, targets)
    results = {
        "date": started.isoformat(timespec="seconds"), "mode": plan.mode,
        "elapsed_seconds": round(time.monotonic() - clock, 1),
        "machine": {**machine(), "h2load": subprocess.run([find_h2load(), "--version"], capture_output=True, text=True).stdout.strip(),
                    "grpcio": grpc.__version__},
        "background_load": background.finish(), "loadavg": {"start": load_at_start, "end": loadavg()},
        "plan": asdict(plan), "targets": targets, "baseline": args.baseline.name if args.baseline else None,  # the checkout directory's name only
        "summary": summary, "compared": compared(runs, targets), "verdicts": verdicts(summary), "runs": runs, "ports": sorted(ports),
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    prefix = "grpc-quick" if plan.mode == "quick" else "grpc"
    (out / f"{prefix}-{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
    report = markdown(results)
    (out / ("grpc-latest-quick.md" if plan.mode == "quick" else "grpc-latest.md")).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
