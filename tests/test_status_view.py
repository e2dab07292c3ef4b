"""`bluegreen-proxy status --once` / `--watch` against a live proxy under traffic; green slowed and
failing through the fault proxy, so the per-colour figures have something to show."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest
from qdrant_client import models

from proxy.cli.status_view import ColourCounts, RecentFigures, Sample, histogram_quantile
from tests.faults import set_fault, start_fault_proxy
from tests.support import REPO_ROOT, RunningProxy, qdrant_client, wait_until

TOKEN = "status-test-token"
DIM = 4


# ------------------------------------------------------------------ the arithmetic, on its own

def test_histogram_quantile_interpolates_like_prometheus():
    # 100 observations: 50 in (0, 1 ms], 40 in (1, 2 ms], 10 in (2, 5 ms]
    buckets = {0.001: 50, 0.002: 90, 0.005: 100, float("inf"): 100}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.002 + 0.003 * 0.5)
    assert histogram_quantile(0.95, {0.001: 0, float("inf"): 10}) == 0.001  # beyond the last finite bound
    assert histogram_quantile(0.95, {0.001: 0, float("inf"): 0}) is None


def sample(at: float, reads: float, failed: float = 0.0, rollbacks: dict | None = None) -> Sample:
    return Sample(at, {("r", "green"): ColourCounts(reads, failed, {0.001: reads, float("inf"): reads})}, rollbacks or {})


def test_recent_figures_span_at_most_a_minute_and_survive_a_restart():
    recent = RecentFigures(window=60)
    assert recent.figures("r", "green") is None
    for second in range(0, 91):
        recent.add(sample(second, reads=10 * second, failed=second))
    figures = recent.figures("r", "green")
    assert recent.span == 60
    assert figures.rate == pytest.approx(10) and figures.error_rate == pytest.approx(0.1)
    assert recent.figures("r", "blue").reads == 0
    recent.add(sample(91, reads=5))  # counters went down: the proxy restarted
    assert recent.span == 0 and recent.figures("r", "green") is None
    recent.add(sample(92, reads=25, rollbacks={("r", "latency"): 1}))
    assert recent.figures("r", "green").rate == pytest.approx(20)
    assert recent.last_rollback["r"] == ("latency", 92)


# ------------------------------------------------------------------ against a live proxy

@pytest.fixture(scope="module")
def live(tmp_path_factory, embedded_upstream):
    """A proxy (through the fault proxy) with two routes, one under traffic whose green is slow and
    fails a third of its queries; yields (proxy, route, quiet route). Shared by this module's tests:
    each leaves the routes as it found them."""
    tmp_path = tmp_path_factory.mktemp("status")
    tag = uuid.uuid4().hex[:8]
    route, quiet = f"st_{tag}", f"quiet_{tag}"
    blue, green = f"{route}_blue", f"{route}_green"
    direct = qdrant_client(embedded_upstream, timeout=30)
    for name in (blue, green):
        direct.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        direct.upsert(name, [models.PointStruct(id=i, vector=[1.0, i, 0.5, 0.1]) for i in range(1, 11)], wait=True)
    direct.close()
    faults, faults_url = start_fault_proxy(embedded_upstream, tmp_path)
    set_fault(faults_url, green, delay_ms=30, status=503, ratio=0.33, operations=["query"])
    routes = (f"  {route}:\n    blue: {blue}\n    green: {green}\n    green_percent: 50\n"
              f"  {quiet}:\n    blue: {quiet}_a\n    green: {quiet}_b\n    green_percent: 12.5\n"
              f"    rollout: {{steps: [50, 100], hold: 30m}}\n")
    proxy = RunningProxy(tmp_path / "proxy", faults_url, routes, admin_options=f"token: {TOKEN}").start()
    stop = threading.Event()
    answered, errors = [0], []

    def traffic() -> None:
        clients = [qdrant_client(proxy.url, timeout=10, headers={"x-user-id": f"user-{i}"}) for i in range(16)]
        try:
            while not stop.is_set():
                for client in clients:
                    try:
                        client.query_points(route, query=[1.0, 0.2, 0.3, 0.4], limit=3)  # failed green reads fail over
                        answered[0] += 1
                    except Exception as exc:  # noqa: BLE001 - reported by the fixture
                        errors.append(exc)
                time.sleep(0.02)
        finally:
            for client in clients:
                client.close()

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        wait_until(lambda: answered[0] >= 50, timeout=20)
        yield proxy, route, quiet
    finally:
        stop.set()
        worker.join(timeout=15)
        proxy.stop()
        faults.stop()
    assert errors == [], "every read is answered (green's failures by blue)"


def status(proxy: RunningProxy, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "status", "--admin", proxy.admin_url, *flags],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=30,
    )


def row(output: str, route: str) -> list[str]:
    """The table row of a route, as its cells."""
    line = next(line for line in output.splitlines() if f"│ {route} " in line)
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def milliseconds(cell: str) -> float:
    return float(cell.split(" ms")[0])


def percent(cell: str) -> float:
    return float(cell.split("%")[0].split()[-1])


def test_status_once_shows_each_route_with_figures_per_colour(live):
    proxy, route, quiet = live
    result = status(proxy, "--once")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "config generation 1, last reload success" in out
    assert re.search(r"over the last [1-9]s", out)  # two samples about a second apart (more on a loaded machine)
    header = row(out, "route")
    assert header == ["route", "configured", "effective", "state", "step", "blue", "green", "last rollback"]

    cells = dict(zip(header, row(out, route)))
    assert (cells["configured"], cells["effective"], cells["state"], cells["step"]) == ("50%", "50%", "active", "-")
    # green: 30 ms slower and a third of its reads failing (each answered from blue by failover)
    blue_p95, green_p95 = milliseconds(cells["blue"]), milliseconds(cells["green"])
    assert green_p95 >= 25 and blue_p95 < green_p95, out
    assert percent(cells["blue"].split("  ")[1]) == 0.0
    assert 0 < percent(cells["green"].split("  ")[1]) < 100, out  # a third of a second's green reads
    assert cells["last rollback"] == "-"

    quiet_cells = dict(zip(header, row(out, quiet)))
    assert (quiet_cells["configured"], quiet_cells["effective"], quiet_cells["state"]) == ("12.5%", "12.5%", "stepping")
    assert quiet_cells["step"].startswith("1/3 (12.5%) next in 29m")  # hold 30m
    assert quiet_cells["blue"] == quiet_cells["green"] == "-"  # no traffic

    # An operator's rollback: shown with its reason until resumed, then as the last one.
    request = urllib.request.Request(
        f"{proxy.admin_url}/admin/routes/{route}/rollback", data=json.dumps({"reason": "green looks slow"}).encode(),
        method="POST", headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()
    out = status(proxy, "--once").stdout
    cells = dict(zip(header, row(out, route)))
    assert (cells["configured"], cells["effective"], cells["state"]) == ("50%", "0%", "rolled_back")
    assert re.fullmatch(r"manual \ds ago", cells["last rollback"])
    assert re.search(rf"^{route}: rolled back \ds ago \(manual\): green looks slow$", out, re.M), out
    assert cells["green"] == "-"  # rolled back: no green reads in the sampled second
    # Resumed: --once cannot know which rollback was the last, only how many there were.
    request = urllib.request.Request(f"{proxy.admin_url}/admin/routes/{route}/resume", data=b"", method="POST",
                                     headers={"authorization": f"Bearer {TOKEN}"})
    urllib.request.urlopen(request, timeout=5).close()
    cells = dict(zip(header, row(status(proxy, "--once").stdout, route)))
    assert (cells["effective"], cells["state"], cells["last rollback"]) == ("50%", "active", "earlier: manual x1")


def test_status_once_without_a_proxy_says_so(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "status", "--once", "--admin", "http://127.0.0.1:9"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=30,
    )
    assert result.returncode == 1
    assert "cannot reach the admin listener at http://127.0.0.1:9" in result.stderr


def test_status_watch_redraws_every_second_in_a_terminal_and_ctrl_c_ends_it(live):
    proxy, route, _ = live
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "status", "--watch", "--admin", proxy.admin_url],
        stdin=terminal, stdout=terminal, stderr=terminal, cwd=REPO_ROOT, env={**os.environ, "COLUMNS": "220", "TERM": "xterm"},
    )
    os.close(terminal)
    screen = b""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and screen.count(b"bluegreen-proxy status") < 4:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                screen += os.read(controller, 65536)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    text = screen.decode(errors="replace")
    assert text.count("bluegreen-proxy status") >= 4, text[-2000:]
    assert route in text
    assert re.search(r"over the last ([2-9]|\d\d)s", text), "the window grows as the view samples"
