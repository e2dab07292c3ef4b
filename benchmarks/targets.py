"""The servers a run measures: two upstreams, and the three ways a client reaches them.

- direct: client -> upstream, addressing the physical collection itself;
- proxy:  client -> `bluegreen-proxy serve` -> upstream, one route at 10 % green, metrics and
          config watcher on (as in production: both are always on);
- nginx:  client -> nginx -> upstream, split_clients on the same header and the same rewrite.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks import nginx, workload
from benchmarks.children import LOOPBACK, Child, Children, free_port

LOGICAL = "docs"
BLUE = "docs_blue"
GREEN = "docs_green"
GREEN_PERCENT = 10
KEY_HEADER = "x-user-id"


def search_path(collection: str) -> str:
    return f"/collections/{collection}/points/search"


@dataclass
class Endpoint:
    name: str
    child: Child
    port: int
    path: str  # the search path a client of this endpoint uses

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


# ---------------------------------------------------------------- upstreams


def start_fixed_upstream(children: Children, workdir: Path) -> Endpoint:
    """nginx answering every search on a physical collection with the same 10-point result."""
    port = free_port()
    server = nginx.fixed_response_server(port, workload.search_result_body())
    child = nginx.start_nginx(children, "upstream-fixed", workdir / "upstream-fixed", server, port)
    return Endpoint("direct", child, port, search_path(BLUE))


def start_embedded_upstream(children: Children, workdir: Path, points: int) -> Endpoint:
    """`python -m bluegreen_dev.embedded` with `points` 384-dim points in both the blue and green collection."""
    port = free_port()
    data = workdir / "embedded-data"
    data.mkdir()
    args = [sys.executable, "-m", "bluegreen_dev.embedded", "--data", str(data), "--host", LOOPBACK, "--port", str(port)]
    child = children.start("upstream-embedded", args, ready_url=f"http://{LOOPBACK}:{port}/")
    endpoint = Endpoint("direct", child, port, search_path(BLUE))
    for collection in (BLUE, GREEN):
        load_collection(endpoint.url, collection, points)
    return endpoint


def _call(method: str, url: str, body: bytes, timeout: float = 120.0) -> dict:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def load_collection(base_url: str, collection: str, points: int, batch_size: int = 500) -> None:
    schema = {"vectors": {"size": workload.DIMENSIONS, "distance": "Cosine"}}
    _call("PUT", f"{base_url}/collections/{collection}", json.dumps(schema).encode())
    for batch in workload.point_batches(points, batch_size):
        _call("PUT", f"{base_url}/collections/{collection}/points?wait=true", batch)
    count = _call("POST", f"{base_url}/collections/{collection}/points/count", b'{"exact":true}')["result"]["count"]
    if count != points:
        raise RuntimeError(f"{collection}: loaded {points} points but the upstream counts {count}")
    found = _call("POST", f"{base_url}{search_path(collection)}", workload.search_bodies(1)[0])["result"]
    if len(found) != workload.SEARCH_LIMIT or "payload" not in found[0]:
        raise RuntimeError(f"{collection}: a search found {len(found)} points, not {workload.SEARCH_LIMIT} with payloads")


# ---------------------------------------------------------------- the proxy


def route_names(count: int) -> list[str]:
    """One route is the benchmark's `docs`; the routes-scaling runs use c000, c001, ..."""
    return [LOGICAL] if count == 1 else [f"c{i:03d}" for i in range(count)]


class ProxyUnderTest:
    """`bluegreen-proxy serve` on a config file of its own, which the churn scenario rewrites."""

    def __init__(self, children: Children, workdir: Path, upstream_port: int, routes: list[str], route_options: str = ""):
        """route_options: more keys for every route, as YAML flow-mapping entries (`shadow: {sample: 1}`)."""
        self.children = children
        self.route_options = f", {route_options}" if route_options else ""
        self.directory = workdir / f"proxy-{free_port()}"
        self.directory.mkdir()
        self.config_path = self.directory / "bluegreen.yaml"
        self.port, self.admin_port = free_port(), free_port()
        self.upstream_port = upstream_port
        self.routes = routes
        self.child: Child | None = None

    def config_text(self, green_percent: float = GREEN_PERCENT) -> str:
        lines = [
            f"listen: {{host: {LOOPBACK}, port: {self.port}}}",
            f"admin: {{host: {LOOPBACK}, port: {self.admin_port}}}",
            f"upstream: {{url: 'http://{LOOPBACK}:{self.upstream_port}', timeout: 10s}}",
            "routes:",
        ]
        for name in self.routes:
            blue, green = (BLUE, GREEN) if name == LOGICAL else (f"{name}_blue", f"{name}_green")
            lines.append(
                f"  {name}: {{blue: {blue}, green: {green}, green_percent: {green_percent:g}, key: [header:{KEY_HEADER}]"
                f"{self.route_options}}}"
            )
        return "\n".join(lines) + "\n"

    def write_config(self, green_percent: float = GREEN_PERCENT, atomically: bool = True) -> None:
        text = self.config_text(green_percent)
        if atomically:  # as editors and config management do: a temp file renamed over the original
            temp = self.config_path.with_name(f".{self.config_path.name}.tmp")
            temp.write_text(text)
            os.replace(temp, self.config_path)
        else:  # truncate and write, as `cat > file` does
            with open(self.config_path, "w") as handle:
                handle.write(text)

    def start(self) -> Endpoint:
        self.write_config()
        args = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(self.config_path)]
        name = f"proxy-{len(self.routes)}-routes-{self.port}"
        self.child = self.children.start(name, args, ready_url=f"http://{LOOPBACK}:{self.admin_port}/healthz")
        return Endpoint("proxy", self.child, self.port, search_path(self.routes[0]))

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.admin_port}/metrics", timeout=5) as response:
            return response.read().decode()


def start_nginx_split(children: Children, workdir: Path, upstream_port: int) -> Endpoint:
    port = free_port()
    server = nginx.split_server(port, upstream_port, LOGICAL, BLUE, GREEN, GREEN_PERCENT)
    child = nginx.start_nginx(children, f"nginx-split-{port}", workdir / f"nginx-split-{port}", server, port)
    return Endpoint("nginx", child, port, search_path(LOGICAL))
