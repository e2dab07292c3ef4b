"""The benchmark: `python -m benchmarks.run [--quick] [--out benchmarks/results]`.

Measures the proxy side by side with direct access and with nginx doing the same split, on a
fixed-response upstream (forwarding cost alone) and on the embedded Qdrant-compatible upstream
(real searches), then reload churn and route-count scaling. Writes a timestamped JSON file and a
Markdown report into --out and prints the report. Installs nothing: a missing tool is named with
its install command and the run exits 2.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import nginx, report, wrk, workload
from benchmarks.children import BackgroundLoad, Children, ResourceProbe
from benchmarks.targets import (
    Endpoint, ProxyUnderTest, route_names, search_path, start_embedded_upstream, start_fixed_upstream,
    start_nginx_split,
)

EXIT_MISSING_PREREQUISITES = 2
TARGETS = ("direct", "proxy", "nginx")


@dataclass(frozen=True)
class Plan:
    mode: str
    closed_loop_seconds: int
    warmup_seconds: int  # per target, before its first measured run
    connections: tuple[int, ...]
    open_loop_seconds: float
    open_loop_rates: tuple[int, ...]
    open_loop_connections: int
    churn_seconds: float
    churn_interval: float
    churn_rate: int  # open-loop request rate while the config churns (and in the baseline beside it)
    scaling_seconds: int
    scaling_connections: int
    route_counts: tuple[int, ...]
    scaling_passes: int  # 2: up then down (ABBA), so slow drift on a shared machine does not pose as a trend
    embedded_points: int
    query_pool: int


FULL = Plan(
    mode="full", closed_loop_seconds=10, warmup_seconds=2, connections=(1, 16, 64),
    open_loop_seconds=10, open_loop_rates=(500, 2000), open_loop_connections=64,
    churn_seconds=30, churn_interval=0.1, churn_rate=500,
    scaling_seconds=10, scaling_connections=16, route_counts=(1, 10, 50, 100), scaling_passes=2,
    embedded_points=10_000, query_pool=256,
)
# Every scenario, briefly: a smoke test that all of them run and report (under 60 s).
QUICK = Plan(
    mode="quick", closed_loop_seconds=1, warmup_seconds=0, connections=(1, 16, 64),
    open_loop_seconds=1, open_loop_rates=(500, 2000), open_loop_connections=64,
    churn_seconds=2, churn_interval=0.1, churn_rate=500,
    scaling_seconds=1, scaling_connections=16, route_counts=(1, 100), scaling_passes=1,
    embedded_points=500, query_pool=32,
)


def missing_prerequisites() -> list[str]:
    missing = []
    if wrk.find_wrk() is None:
        missing.append("wrk (closed-loop load generator): apt-get install wrk")
    if nginx.find_nginx() is None:
        missing.append("nginx (fixed-response upstream and the split it is compared with): apt-get install nginx")
    if not _runnable_module("bluegreen_dev.embedded"):
        missing.append("bluegreen_dev.embedded (the embedded upstream, `python -m bluegreen_dev.embedded`): part of this repository; update your checkout")
    return missing


def _runnable_module(name: str) -> bool:
    """Whether `python -m name` can run: a module, or a package with a __main__."""
    try:
        spec = importlib.util.find_spec(name)
        return spec is not None and (spec.submodule_search_locations is None or importlib.util.find_spec(f"{name}.__main__") is not None)
    except ImportError:
        return False


class Run:
    """One benchmark run: its plan, scratch directory, children and results."""

    def __init__(self, plan: Plan, workdir: Path, children: Children):
        self.plan = plan
        self.workdir = workdir
        self.children = children
        self.bodies = workload.search_bodies(plan.query_pool)
        self.closed_loop: list[dict] = []
        self.open_loop: list[dict] = []
        self.ports: set[int] = set()
        self._load_files: dict[tuple[str, ...], Path] = {}  # wrk scripts and open-loop request files, by paths

    def note(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def remember(self, *endpoints: Endpoint) -> None:
        self.ports.update(e.port for e in endpoints)

    # ------------------------------------------------------------ load

    def _wrk_script(self, paths: list[str]) -> Path:
        key = ("wrk", *paths)
        if key not in self._load_files:
            self._load_files[key] = wrk.write_script(self.workdir / f"wrk-{len(self._load_files)}.lua", paths, self.bodies)
        return self._load_files[key]

    def closed(self, endpoint: Endpoint, connections: int, seconds: int, paths: list[str] | None = None) -> dict:
        probe = ResourceProbe(endpoint.child.pid) if endpoint.name != "direct" else None
        background = BackgroundLoad()
        result = wrk.run(endpoint.url, self._wrk_script(paths or [endpoint.path]), connections, seconds)
        result["others_cpu_share"] = background.finish()["other_processes_share"]
        if probe is not None:
            result["resources"] = probe.finish(result["requests"] + result["failed_total"])
        return result

    def _requests_file(self, path: str) -> Path:
        key = ("open loop", path)
        if key not in self._load_files:
            file = self.workdir / f"open-loop-{len(self._load_files)}.json"
            file.write_text(json.dumps({"paths": [path], "bodies": [b.decode() for b in self.bodies]}))
            self._load_files[key] = file
        return self._load_files[key]

    def open(self, endpoint: Endpoint, rate: int, seconds: float) -> dict:
        probe = ResourceProbe(endpoint.child.pid) if endpoint.name != "direct" else None
        args = [
            sys.executable, "-m", "benchmarks.open_loop", "--port", str(endpoint.port), "--rate", str(rate),
            "--seconds", str(seconds), "--connections", str(self.plan.open_loop_connections),
            "--requests", str(self._requests_file(endpoint.path)),
        ]
        background = BackgroundLoad()
        completed = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        if completed.returncode != 0:
            raise RuntimeError(f"open-loop generator failed ({completed.returncode}): {completed.stderr[-2000:]}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        result["others_cpu_share"] = background.finish()["other_processes_share"]
        if probe is not None:
            result["resources"] = probe.finish(result["requests"] + result["failed_total"])
        return result

    # ------------------------------------------------------------ scenarios

    def upstream_suite(self, upstream_name: str, upstream: Endpoint) -> None:
        """Closed and open loop against direct, proxy and nginx, all on this one upstream."""
        proxy = ProxyUnderTest(self.children, self.workdir, upstream.port, route_names(1)).start()
        split = start_nginx_split(self.children, self.workdir, upstream.port)
        self.remember(upstream, proxy, split)
        endpoints = {"direct": upstream, "proxy": proxy, "nginx": split}
        try:
            if self.plan.warmup_seconds:
                for endpoint in endpoints.values():
                    self.closed(endpoint, 16, self.plan.warmup_seconds)
            for connections in self.plan.connections:
                for target in TARGETS:  # side by side, so slow drift on a noisy machine hits all three alike
                    self.note(f"{upstream_name}: closed loop, {connections} connections, {target}")
                    result = self.closed(endpoints[target], connections, self.plan.closed_loop_seconds)
                    self.closed_loop.append({"upstream": upstream_name, "target": target, **result})
            for rate in self.plan.open_loop_rates:
                for target in TARGETS:
                    self.note(f"{upstream_name}: open loop, {rate} requests/s, {target}")
                    result = self.open(endpoints[target], rate, self.plan.open_loop_seconds)
                    self.open_loop.append({"upstream": upstream_name, "target": target, **result})
        finally:
            self.children.stop(split.child)
            self.children.stop(proxy.child)

    def reload_churn(self, upstream: Endpoint) -> dict:
        """Open-loop load with and without the config file rewritten every churn_interval."""
        proxy = ProxyUnderTest(self.children, self.workdir, upstream.port, route_names(1))
        endpoint = proxy.start()
        self.remember(endpoint)
        try:
            self.note(f"reload churn: baseline, {self.plan.churn_rate} requests/s")
            baseline = self.open(endpoint, self.plan.churn_rate, self.plan.churn_seconds)
            reloads_before = report.reload_counts(proxy.metrics_text())
            self.note(f"reload churn: config rewritten every {self.plan.churn_interval * 1000:g} ms")
            stop = threading.Event()
            writes: list[str] = []
            writer = threading.Thread(target=_churn_config, args=(proxy, self.plan.churn_interval, stop, writes))
            writer.start()
            try:
                churn = self.open(endpoint, self.plan.churn_rate, self.plan.churn_seconds)
            finally:
                stop.set()
                writer.join()
            reloads_after = report.reload_counts(proxy.metrics_text())
        finally:
            self.children.stop(proxy.child)
        # What the proxy said beyond routine reloads: the evidence when requests failed.
        remarks = [line for line in proxy.child.log_lines() if "WARNING" in line or "ERROR" in line or "no routes" in line]
        return {
            "rate_rps": self.plan.churn_rate,
            "interval_ms": self.plan.churn_interval * 1000,
            "baseline": baseline,
            "churn": churn,
            "config_writes": {"total": len(writes), "atomic": writes.count("atomic"), "in_place": writes.count("in place")},
            "reloads": {k: reloads_after[k] - reloads_before[k] for k in reloads_after},
            "proxy_remarks": remarks[:40],
        }

    def route_scaling(self, upstream: Endpoint) -> list[dict]:
        """The same closed-loop load spread evenly over 1..100 routes: CPU and memory per request."""
        rows = []
        counts = list(self.plan.route_counts)
        for count in [c for p in range(self.plan.scaling_passes) for c in (counts if p % 2 == 0 else counts[::-1])]:
            names = route_names(count)
            proxy = ProxyUnderTest(self.children, self.workdir, upstream.port, names)
            endpoint = proxy.start()
            self.remember(endpoint)
            paths = [search_path(name) for name in names]
            try:
                if self.plan.warmup_seconds:
                    self.closed(endpoint, self.plan.scaling_connections, self.plan.warmup_seconds, paths)
                self.note(f"route scaling: {count} routes")
                result = self.closed(endpoint, self.plan.scaling_connections, self.plan.scaling_seconds, paths)
            finally:
                self.children.stop(proxy.child)
            rows.append({"routes": count, **result})
        return rows


def _churn_config(proxy: ProxyUnderTest, interval: float, stop: threading.Event, writes: list[str]) -> None:
    """Alternate green_percent 10/20 every interval; every third write in place, the rest by rename."""
    started = time.monotonic()
    index = 0
    while not stop.wait(max(0.0, started + (index + 1) * interval - time.monotonic())):
        atomically = index % 3 != 2
        proxy.write_config(green_percent=20 if index % 2 == 0 else 10, atomically=atomically)
        writes.append("atomic" if atomically else "in place")
        index += 1
    proxy.write_config()  # leave it as it started


def machine() -> dict:
    def first_line(args: list[str]) -> str:
        try:
            completed = subprocess.run(args, capture_output=True, text=True, timeout=10)
        except OSError:
            return "unknown"
        return (completed.stdout + completed.stderr).strip().splitlines()[0]

    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": first_line([nginx.find_nginx() or "nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": first_line([wrk.find_wrk() or "wrk", "-v"]).split(" [")[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every scenario, briefly (< 60 s): a smoke test")
    parser.add_argument("--out", default="benchmarks/results", help="directory for the JSON and Markdown results")
    args = parser.parse_args(argv)

    missing = missing_prerequisites()
    if missing:
        print("benchmarks: cannot run, missing:\n" + "\n".join(f"  - {m}" for m in missing), file=sys.stderr)
        return EXIT_MISSING_PREREQUISITES

    plan = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # A SIGTERM must unwind through the `finally` below, which stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    background = BackgroundLoad()
    with tempfile.TemporaryDirectory(prefix="bluegreen-bench-") as scratch:
        workdir = Path(scratch)
        children = Children(workdir)
        run = Run(plan, workdir, children)
        try:
            fixed = start_fixed_upstream(children, workdir)
            run.remember(fixed)
            run.upstream_suite("fixed", fixed)
            churn = run.reload_churn(fixed)
            scaling = run.route_scaling(fixed)
            run.note(f"embedded upstream: loading {plan.embedded_points} points into blue and green")
            embedded = start_embedded_upstream(children, workdir, plan.embedded_points)
            run.remember(embedded)
            run.upstream_suite("embedded", embedded)
        finally:
            children.stop_all()

    results = {
        "date": started.isoformat(timespec="seconds"),
        "mode": plan.mode,
        "elapsed_seconds": round(time.monotonic() - clock, 1),
        "machine": machine(),
        "background_load": background.finish(),
        "plan": asdict(plan),
        "closed_loop": run.closed_loop,
        "open_loop": run.open_loop,
        "reload_churn": churn,
        "route_scaling": scaling,
        "ports": sorted(run.ports),
    }
    results["summary"] = report.summarize(results)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    prefix = "quick-" if args.quick else "run-"
    (out / f"{prefix}{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown = report.markdown(results)
    # A smoke run does not overwrite the full run's report.
    (out / ("latest-quick.md" if args.quick else "latest.md")).write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
