"""A fault-injecting reverse proxy for integration tests, put between bluegreen-proxy and a real upstream.

Every request is forwarded to `--target` unchanged (method, path, query, headers, body bytes; hop-by-hop
headers dropped), except requests under `/collections/{name}` for a physical collection with an active
fault. Those can be delayed (`delay_ms`), answered with an error status in Qdrant's envelope (`status`,
a 5xx), dropped with no response at all (`drop`), or forwarded and have a successful search-type
result rewritten to an empty one (`empty`); each for a share of the requests (`ratio`, default 1; spread
evenly rather than drawn at random, so that every run sees the same: at 0.33, about one request in three) and
optionally only for some operations (`operations`, names as `routing.operations.classify` gives them).
`hold` keeps a request waiting, then forwarded, until its collection's fault is cleared: a test that
must know a request is still upstream reads `GET /__held` rather than trusting a delay.

Controlled at runtime:
    PUT    /__faults/{collection}   {"delay_ms": 200, "status": 503, "ratio": 0.5, "operations": ["query"]}
    DELETE /__faults/{collection}
    DELETE /__faults
    GET    /__faults                the active faults (also the readiness URL)
    GET    /__held                  {collection: requests held now}

Run: python -m tests.faults --target URL --port N
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import web
from yarl import URL

from bluegreen_dev.embedded.app import accepts_gzip
from routing.operations import OPERATIONS, SEARCH_OPERATIONS, classify
from routing.table import split_collection_path
from tests.support import ServerProcess, free_port

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "host", "content-length"}
)
INJECTED_ERROR = b'{"status":{"error":"injected fault"},"time":0}'


@dataclass(frozen=True)
class Fault:
    delay_ms: float = 0
    status: int | None = None
    drop: bool = False
    empty: bool = False
    hold: bool = False
    ratio: float = 1.0
    operations: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, fields: object) -> "Fault":
        """The JSON body of a PUT; ValueError naming what is wrong."""
        if not isinstance(fields, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        operations = fields.get("operations")
        if operations is not None and not (isinstance(operations, list) and all(isinstance(op, str) for op in operations)):
            raise ValueError("operations: must be a list of operation names")
        fault = cls(**{**fields, "operations": tuple(operations) if operations else None})
        if not all(isinstance(flag, bool) for flag in (fault.drop, fault.empty, fault.hold)):
            raise ValueError("drop, empty, hold: must be true or false")
        if not isinstance(fault.delay_ms, (int, float)) or fault.delay_ms < 0:
            raise ValueError("delay_ms: must be a number >= 0")
        if fault.status is not None and not (isinstance(fault.status, int) and 500 <= fault.status <= 599):
            raise ValueError("status: must be a 5xx status")
        if not isinstance(fault.ratio, (int, float)) or not 0 <= fault.ratio <= 1:
            raise ValueError("ratio: must be from 0 to 1")
        if sum((fault.status is not None, fault.drop, fault.empty)) > 1:
            raise ValueError("status, drop and empty: choose one")
        if fault.operations and not set(fault.operations) <= OPERATIONS:
            raise ValueError(f"operations: unknown {sorted(set(fault.operations) - OPERATIONS)}")
        return fault


class FaultProxy:
    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.faults: dict[str, Fault] = {}
        self.releases: dict[str, asyncio.Event] = {}  # collection -> set when its held requests may go
        self.held: dict[str, int] = {}
        self.shares: dict[str, float] = {}  # collection -> the fault's share owed so far (even spreading)
        self.session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/__faults", self.list_faults)
        app.router.add_get("/__held", self.list_held)
        app.router.add_put("/__faults/{collection}", self.set_fault)
        app.router.add_delete("/__faults/{collection}", self.clear_fault)
        app.router.add_delete("/__faults", self.clear_faults)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, app: web.Application) -> None:
        # No decompression and no invented headers: the answer goes back as the upstream sent it.
        self.session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))

    async def _close(self, app: web.Application) -> None:
        await self.session.close()

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({name: asdict(fault) for name, fault in self.faults.items()})

    async def list_held(self, request: web.Request) -> web.Response:
        return web.json_response({name: count for name, count in self.held.items() if count})

    def _release(self, collection: str) -> None:
        release = self.releases.pop(collection, None)
        if release is not None:
            release.set()

    async def set_fault(self, request: web.Request) -> web.Response:
        try:
            fault = Fault.parse(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.faults[request.match_info["collection"]] = fault
        self.shares.pop(request.match_info["collection"], None)
        return web.json_response(asdict(fault))

    async def clear_fault(self, request: web.Request) -> web.Response:
        self.faults.pop(request.match_info["collection"], None)
        self._release(request.match_info["collection"])
        return web.json_response({})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        for collection in list(self.releases):
            self._release(collection)
        return web.json_response({})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        located = split_collection_path(request.rel_url.raw_path.encode())
        name = unquote(located[0].decode()) if located else None
        fault = self.faults.get(name)
        operation = classify(request.method, located[1])[0] if located else None
        if fault is None or (fault.operations and operation not in fault.operations) or not self._due(name, fault.ratio):
            return await self.forward(request, body)
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.hold:
            self.held[name] = self.held.get(name, 0) + 1
            try:
                await self.releases.setdefault(name, asyncio.Event()).wait()
            finally:
                self.held[name] -= 1
        if fault.drop:
            request.transport.close()  # no status line: the client sees the connection end
            return web.Response()
        if fault.status is not None:
            return web.Response(status=fault.status, body=INJECTED_ERROR, content_type="application/json")
        if fault.empty and operation in SEARCH_OPERATIONS:
            response = emptied(await self.forward(request, body, identity=True), operation)
            if accepts_gzip(request.headers.get("Accept-Encoding", "").encode("latin-1")):  # as Qdrant would
                response.body = gzip.compress(response.body)
                response.headers["Content-Encoding"] = "gzip"
            return response
        return await self.forward(request, body)

    def _due(self, collection: str, ratio: float) -> bool:
        """Whether this request gets the fault: `ratio` of them, evenly spread."""
        owed = self.shares.get(collection, 0.0) + ratio
        due = owed >= 1.0 - 1e-9
        self.shares[collection] = owed - 1.0 if due else owed
        return due

    async def forward(self, request: web.Request, body: bytes, identity: bool = False) -> web.Response:
        headers = [(name, value) for name, value in request.headers.items() if name.lower() not in _HOP_BY_HOP]
        if identity:  # a result to rewrite must come back uncompressed
            headers = [(name, value) for name, value in headers if name.lower() != "accept-encoding"]
        try:
            async with self.session.request(
                request.method, URL(self.target + request.raw_path, encoded=True), headers=headers, data=body,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            ) as upstream:
                content = await upstream.read()
        except aiohttp.ClientError as exc:
            error = json.dumps({"status": {"error": f"fault proxy: upstream unreachable: {exc}"}, "time": 0})
            return web.Response(status=502, text=error, content_type="application/json")
        response = web.Response(status=upstream.status, body=content)
        response.headers.clear()
        response.headers.extend(
            (name, value) for name, value in upstream.headers.items() if name.lower() not in _HOP_BY_HOP
        )
        return response


def emptied(response: web.Response, operation: str) -> web.Response:
    """The same answer with no points (batch: no points in any result); errors and non-JSON as they are."""
    if not 200 <= response.status < 300:
        return response
    try:
        document = json.loads(response.body)
    except ValueError:
        return response
    if not isinstance(document, dict):
        return response
    result = document.get("result")
    if operation.endswith("_batch") and isinstance(result, list):
        document["result"] = [_no_points(item) for item in result]
    else:
        document["result"] = _no_points(result)
    response.body = json.dumps(document, separators=(",", ":")).encode()
    return response


def _no_points(result):
    if isinstance(result, list):
        return []
    if isinstance(result, dict):
        return {key: ([] if key in ("points", "groups") else value) for key, value in result.items()}
    return result


# ---------------------------------------------------------------- helpers for tests


def start_fault_proxy(target_url: str, log_dir: Path, port: int | None = None) -> tuple[ServerProcess, str]:
    """The fault proxy as a child process in front of `target_url`: (process, its base URL)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        [sys.executable, "-m", "tests.faults", "--target", target_url, "--port", str(port)],
        ready_url=url + "/__faults",
        log_path=Path(log_dir) / f"faults-{port}.log",
    )
    return server.start(), url


def set_fault(fault_url: str, collection: str, **fields) -> dict:
    request = urllib.request.Request(
        f"{fault_url}/__faults/{quote(collection, safe='')}", data=json.dumps(fields).encode(), method="PUT",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def held_requests(fault_url: str) -> dict[str, int]:
    """{collection: requests the fault proxy holds now}."""
    with urllib.request.urlopen(fault_url + "/__held", timeout=5) as response:
        return json.loads(response.read())


def clear_faults(fault_url: str, collection: str | None = None) -> None:
    path = f"/__faults/{quote(collection, safe='')}" if collection else "/__faults"
    with urllib.request.urlopen(urllib.request.Request(fault_url + path, method="DELETE"), timeout=5):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description="fault-injecting reverse proxy for tests")
    parser.add_argument("--target", required=True, help="base URL to forward to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(FaultProxy(args.target).app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
